"""The s3prl backend on tiny random HuBERT / WavLM checkpoints, offline.

s3prl 0.4.18 only imports with torch / torchaudio <= 2.8: these tests run in the second
environment (`make test-extras`, .venv-extras) and skip in the main one. `make test-extras` sets
EMORL_EXTRAS=1, which turns that skip into a failure (the extras env must really test them).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.s3prl

if os.environ.get("EMORL_EXTRAS") != "1":
    pytest.importorskip("s3prl", reason="the s3prl extra is not installed (make test-extras runs these tests)")

import numpy as np
import torch
import yaml

from emorl.cli import main
from emorl.upstreams import (
    UpstreamLoader,
    load_upstream,
    masked_mean,
    resolve_upstream,
    upstream_dims,
    upstream_identity,
)
from emorl.upstreams import s3prl_backend
from emorl.upstreams.s3prl_backend import S3PRLError, build_tiny_s3prl, parse_spec
from tests.corpus_factory import make_tiny_corpus

try:
    s3prl_backend.import_s3prl()
except S3PRLError as err:  # s3prl present but not importable with this torch / torchaudio
    if os.environ.get("EMORL_EXTRAS") == "1":
        raise
    pytest.skip(f"s3prl does not import here: {err}", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints: {"hubert": path, "wavlm": path}."""
    root = tmp_path_factory.mktemp("s3prl_ckpts")
    return {kind: build_tiny_s3prl(kind, root / f"{kind}.pt") for kind in ("hubert", "wavlm")}


def spec(tiny, kind: str) -> str:
    return f"s3prl:{kind}_local:{tiny[kind]}"


def clips(*seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded random clips of these durations (16 kHz) and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16_000) for s in seconds])
    wave = torch.zeros(len(seconds), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        wave[i, :n] = 0.1 * torch.randn(n, generator=generator)
    return wave, lengths


def test_spec_syntax():
    assert parse_spec("s3prl:wavlm_large") == s3prl_backend.S3PRLSpec("wavlm_large", None)
    assert parse_spec("s3prl:hubert_local:/m/h.pt") == s3prl_backend.S3PRLSpec("hubert_local", "/m/h.pt")
    assert parse_spec("s3prl:hubert_url:https://x.org/h.pt").is_url
    assert resolve_upstream("s3prl:hubert_local:/m/h.pt") == ("s3prl", "s3prl:hubert_local:/m/h.pt")
    assert not s3prl_backend.detect("/anything")
    with pytest.raises(S3PRLError, match="expected s3prl:NAME"):
        parse_spec("s3prl:")


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_tiny_checkpoints_load_through_load_upstream(tiny, kind):
    upstream = load_upstream(spec(tiny, kind))
    assert isinstance(upstream, s3prl_backend.S3PRLBackendUpstream)
    assert (upstream.num_layers, upstream.hidden_dim, upstream.num_hidden_states) == (2, 32, 3)
    assert upstream_dims(spec(tiny, kind)) == (2, 32)
    assert upstream.frame_rate == 50.0 and upstream.sample_rate == 16_000
    assert upstream.identity.startswith(f"s3prl-{kind}_local-")
    # frozen: eval mode and no gradients, whatever .train() says
    upstream.train()
    assert not upstream.training and not upstream.model.training
    assert not any(p.requires_grad for p in upstream.parameters())

    wave, lengths = clips(1.0, 0.6)
    out = upstream(wave, lengths)
    assert len(out.hidden_states) == 3
    assert all(h.shape == (2, 50, 32) and h.dtype == torch.float32 for h in out.hidden_states)
    assert torch.isfinite(torch.stack(out.hidden_states)).all()
    # the layers differ (the last one is the encoder's output, not a copy of its input)
    assert not torch.allclose(out.hidden_states[0], out.hidden_states[-1])
    features, valid = upstream.extract(wave, lengths, "all")
    assert features.shape == (2, 3, 50, 32) and valid.tolist() == [50, 30]


def test_frames_at_50_hz(tiny):
    upstream = load_upstream(spec(tiny, "hubert"))
    wave, lengths = clips(2.0, 1.0, 0.5, 0.02)
    out = upstream(wave, lengths)
    # s3prl's rule: (samples - 1) // 320 + 1; clips under 0.05 s are padded to 800 samples
    assert out.lengths.tolist() == [100, 50, 25, 3]
    assert out.hidden_states[-1].shape[1] == 100


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_a_clip_is_the_same_alone_and_in_a_padded_batch(tiny, kind):
    upstream = load_upstream(spec(tiny, kind))  # batching="auto"
    wave, lengths = clips(1.3, 0.4, 0.9, seed=1)
    batch = upstream(wave, lengths)
    pooled = masked_mean(batch.hidden_states[-1], batch.lengths)
    for i in range(3):
        alone = upstream(wave[i: i + 1, : lengths[i]], lengths[i: i + 1])
        assert alone.lengths.tolist() == [int(batch.lengths[i])]
        torch.testing.assert_close(masked_mean(alone.hidden_states[-1], alone.lengths)[0], pooled[i],
                                   rtol=1e-5, atol=1e-5)
        for layer in range(3):  # every hidden state, frame by frame
            n = int(alone.lengths[0])
            torch.testing.assert_close(alone.hidden_states[layer][0, :n], batch.hidden_states[layer][i, :n],
                                       rtol=1e-5, atol=1e-5)
    # padded batching: one forward, same lengths (values may differ: see the module docstring)
    padded = load_upstream(spec(tiny, kind), batching="padded")
    assert padded.batching == "padded"
    assert padded(wave, lengths).lengths.tolist() == batch.lengths.tolist()


def test_identity_follows_the_checkpoint_file(tiny, tmp_path, monkeypatch):
    path = shutil.copy(tiny["hubert"], tmp_path / "h.pt")
    text = f"s3prl:hubert_local:{path}"
    first = upstream_identity(text)
    assert first == upstream_identity(text) == UpstreamLoader(text).identity
    assert upstream_identity(text, "bfloat16") != first
    assert upstream_identity(spec(tiny, "wavlm")) != upstream_identity(spec(tiny, "hubert"))

    # computed from the file alone: the model is never built for it
    def no_load(*args, **kwargs):
        raise AssertionError("identity must not load the model")

    monkeypatch.setattr(s3prl_backend, "build_s3prl_model", no_load)
    build_tiny_s3prl("hubert", path, seed=1)  # new weights in the same file
    second = upstream_identity(text)
    assert second != first
    monkeypatch.undo()
    assert load_upstream(text).identity == second


def test_a_hub_name_without_checkpoint_loads_by_name():
    """``s3prl:NAME`` alone: fbank has no weights to fetch, so it runs offline (one hidden state, 100 Hz)."""
    upstream = load_upstream("s3prl:fbank")
    assert (upstream.num_layers, upstream.frame_rate) == (0, 100.0)
    assert upstream_dims("s3prl:fbank") == (0, upstream.hidden_dim)
    out = upstream(*clips(1.0, 0.5))
    assert len(out.hidden_states) == 1 and out.lengths.tolist() == [100, 50]
    assert upstream.identity == upstream_identity("s3prl:fbank") != upstream_identity("s3prl:mfcc")


def test_missing_checkpoint_and_unknown_names_say_what_to_do(tiny, tmp_path):
    with pytest.raises(S3PRLError, match=r"checkpoint .*nope\.pt not found"):
        load_upstream(f"s3prl:hubert_local:{tmp_path / 'nope.pt'}")
    with pytest.raises(S3PRLError, match=r"unknown s3prl upstream 'hubret_local' \(did you mean hubert_local"):
        load_upstream(f"s3prl:hubret_local:{tiny['hubert']}")
    with pytest.raises(S3PRLError, match=r"takes a checkpoint: write s3prl:wavlm_local:/path"):
        load_upstream("s3prl:wavlm_local")
    with pytest.raises(S3PRLError, match=r"would ignore .*s3prl:wavlm_local:"):
        load_upstream(f"s3prl:wavlm_base_plus:{tiny['wavlm']}")
    with pytest.raises(S3PRLError, match="no zoo card"):
        s3prl_backend.build_tiny(None, tmp_path)


def test_a_hub_name_offline_says_how_to_pass_the_checkpoint(tmp_path, monkeypatch):
    """s3prl's own download fails without a network: one message, with the local spec to use."""
    import socket

    from s3prl.util import download

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known (network blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(download, "_download_dir", tmp_path / "s3prl_download")
    with pytest.raises(S3PRLError, match=r"could not download .*s3prl:hubert_large_ll60k.*s3prl:hubert_local:/path"):
        load_upstream("s3prl:hubert_large_ll60k")
    assert not list((tmp_path / "s3prl_download").glob("*.pt"))


def test_importing_s3prl_touches_no_network():
    code = (
        "import socket\n"
        "calls = []\n"
        "def blocked(*args, **kwargs):\n"
        "    calls.append(args)\n"
        "    raise OSError('network blocked')\n"
        "socket.getaddrinfo = blocked\n"
        "socket.socket.connect = blocked\n"
        "from emorl.upstreams.s3prl_backend import available_names\n"
        "names = available_names()\n"
        "assert 'hubert_local' in names and 'wavlm_local' in names, names\n"
        "print(len(names), len(calls))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    count, calls = map(int, result.stdout.split()[-2:])
    assert count > 100 and calls == 0


def test_zoo_tiny_writes_a_loadable_s3prl_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["zoo", "tiny", "s3prl:wavlm_local", "--out", str(tmp_path)])
    assert exit_.value.code == 0
    path = tmp_path / "tiny_wavlm.pt"
    assert f"s3prl:wavlm_local:{path}" in capsys.readouterr().out
    checkpoint = torch.load(path, weights_only=True)
    assert sorted(checkpoint) == ["cfg", "model"]
    # deterministic for a seed
    again = build_tiny_s3prl("wavlm", tmp_path / "again.pt")
    other = torch.load(again, weights_only=True)["model"]
    assert all(torch.equal(v, other[k]) for k, v in checkpoint["model"].items())
    assert load_upstream(f"s3prl:wavlm_local:{path}").num_layers == 2


def _config(tmp_path, data_dir, upstream, name="probe", **model):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 15, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/ua", "mode": "max"}}],
        },
        "model": {"class_path": "emorl.models.probe.LinearProbe",
                  "init_args": {"upstream": str(upstream), "cache_dir": str(tmp_path / "cache"),
                                "hidden_dim": 32, "lr": 0.01, **model}},
        "data": {"data_dir": str(data_dir), "batch_size": 8, "val_fraction": 0.25},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_probe_fit_and_test_through_the_cli(tmp_path, tiny, capsys):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=3)
    upstream = spec(tiny, "hubert")
    config = _config(tmp_path, corpus.root, upstream)
    main(["fit", "--config", str(config)])
    ckpt = next((tmp_path / "runs" / "probe" / "version_0" / "checkpoints").glob("*.ckpt"))
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert sorted(checkpoint["state_dict"]) == ["classifier.bias", "classifier.weight", "proj.bias", "proj.weight"]
    assert checkpoint["emorl_upstream"] == {"upstream": upstream, "identity": upstream_identity(upstream)}
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 60  # every clip extracted once

    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert "tiny" in out and "UA" in out
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "probe" / "version_1" / "predictions" / "tiny.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    # tones of distinct pitch per label: even a random tiny encoder separates them (chance: 0.25)
    assert np.mean([r["label"] == r["prediction"] for r in rows]) >= 0.9

    # the learned weighted sum over every hidden state (s3prl's Featurizer, done by the probe)
    weighted = _config(tmp_path, corpus.root, upstream, name="weighted", layer="weighted")
    main(["fit", "--config", str(weighted), "--trainer.max_epochs", "2"])
    ckpt = next((tmp_path / "runs" / "weighted" / "version_0" / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state["layer_weights"].shape == (3,)
