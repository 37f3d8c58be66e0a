"""The EmoBox probe end to end through the `emorl` command: a tiny WavLM, a tone corpus, the feature cache."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emorl import tiny_models, zoo
from emorl.cli import main
from emorl.models.probe import LinearProbe
from emorl.upstreams import hf
from tests.corpus_factory import make_tiny_corpus


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("wavlm-large", tmp_path_factory.mktemp("probe_models") / "wavlm-large")


@pytest.fixture()
def count_loads(monkeypatch):
    """Counts upstream loads and clips run through an upstream."""
    counts = {"loads": 0, "clips": 0}
    init, forward = hf.HFUpstream.__init__, hf.HFUpstream.forward

    def counting_init(self, *args, **kwargs):
        counts["loads"] += 1
        init(self, *args, **kwargs)

    def counting_forward(self, wave, wave_lengths):
        counts["clips"] += len(wave)
        return forward(self, wave, wave_lengths)

    monkeypatch.setattr(hf.HFUpstream, "__init__", counting_init)
    monkeypatch.setattr(hf.HFUpstream, "forward", counting_forward)
    return counts


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


def test_fit_and_test_from_the_cache_through_the_cli(tmp_path, tiny_wavlm, count_loads, capsys):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=3)
    config = _config(tmp_path, corpus.root, tiny_wavlm)
    main(["fit", "--config", str(config)])
    # one load, every clip once (train, validation and, at fit start, the test set): 5 x 4 x 3
    assert count_loads == {"loads": 1, "clips": 60}
    version = tmp_path / "runs" / "probe" / "version_0"
    ckpt = next((version / "checkpoints").glob("*.ckpt"))

    # the checkpoint holds the probe only
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert sorted(checkpoint["state_dict"]) == ["classifier.bias", "classifier.weight", "proj.bias", "proj.weight"]
    assert checkpoint["emorl_upstream"]["identity"].startswith("hf-wavlm-")
    assert ckpt.stat().st_size < 200_000

    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    assert count_loads == {"loads": 1, "clips": 60}, "testing from the cache never runs the upstream"
    out = capsys.readouterr().out
    assert "tiny" in out and "UA" in out
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "probe" / "version_1" / "predictions" / "tiny.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    # tones of distinct pitch per label: the held-out speaker is right
    assert np.mean([r["label"] == r["prediction"] for r in rows]) >= 0.9

    # a second run (another seed, same cache): the upstream is never even loaded
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2", "--seed_everything", "1"])
    assert count_loads == {"loads": 1, "clips": 60}


def test_without_a_cache_the_upstream_runs_on_each_batch(tmp_path, tiny_wavlm, count_loads):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(tmp_path, corpus.root, tiny_wavlm, cache_dir=None)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    assert count_loads["loads"] == 1
    assert count_loads["clips"] >= 2 * 16  # every epoch runs the encoder over train + validation
    assert not (tmp_path / "cache").exists()
    ckpt = next((tmp_path / "runs" / "probe" / "version_0" / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not [k for k in state if "upstream" in k or "model." in k]


def test_weighted_layers_learn_a_softmax_over_hidden_states(tmp_path, tiny_wavlm):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(tmp_path, corpus.root, tiny_wavlm, layer="weighted")
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    ckpt = next((tmp_path / "runs" / "probe" / "version_0" / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state["layer_weights"].shape == (3,)  # 2 layers + the transformer input
    stored = next((tmp_path / "cache").rglob("*.pt"))
    assert torch.load(stored, weights_only=True).shape[0] == 3  # all hidden states cached


def test_probe_head_is_emobox_s(tiny_wavlm, tmp_path):
    probe = LinearProbe(["a", "b", "c"], str(tiny_wavlm), cache_dir=None)
    assert probe.proj.in_features == 32 and probe.proj.out_features == 256
    assert probe.classifier.out_features == 3
    optimizer = probe.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-4
    # the mean runs over valid frames only: padding does not change a clip's logits
    features = torch.randn(1, 5, 32)
    padded = torch.cat([features, torch.randn(1, 3, 32)], dim=1)
    torch.testing.assert_close(probe(features, torch.tensor([5])), probe(padded, torch.tensor([5])))
    assert "loader" not in dict(probe.named_children()) and not any("upstream" in k for k in probe.state_dict())
    with pytest.raises(ValueError, match="out of range"):
        LinearProbe(["a"], str(tiny_wavlm), layer=7, cache_dir=None)


def test_a_fit_from_a_filled_cache_decodes_no_audio(tmp_path, tiny_wavlm, count_loads, monkeypatch):
    import emorl.data.dataset as datamodule

    decodes = []
    real = datamodule.load_audio
    monkeypatch.setattr(datamodule, "load_audio", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=2)
    config = _config(tmp_path, corpus.root, tiny_wavlm)
    fit = ["fit", "--config", str(config), "--trainer.max_epochs", "3"]
    main(fit)  # fills the cache: every clip decoded and run through the encoder once, training decodes none
    assert len(decodes) == 40 and count_loads["clips"] == 40

    decodes.clear()
    main(fit)  # a filled cache: no decode, no encoder
    assert decodes == [] and count_loads == {"loads": 1, "clips": 40}
    main(fit + ["--data.decode_audio", "always"])  # as before: decode every clip every epoch
    assert len(decodes) >= 3 * 32 and count_loads["clips"] == 40

    # the same training either way
    states = []
    for version in (1, 2):
        ckpt = next((tmp_path / "runs" / "probe" / f"version_{version}" / "checkpoints").glob("*.ckpt"))
        states.append(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0)


def test_a_clip_that_fails_to_decode_is_dropped_not_fatal(tmp_path, tiny_wavlm, count_loads):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    bad = corpus.resolve_wav(corpus.split(1, "train")[0]["wav"])
    bad.write_bytes(b"RIFF....not audio at all")
    config = _config(tmp_path, corpus.root, tiny_wavlm)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    assert count_loads["clips"] == 19  # 20 clips, one undecodable
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])  # tries it once more in the fill, no crash
    assert count_loads["clips"] == 19


def test_a_checkpoint_tested_with_other_classes_is_a_clear_error(tmp_path, tiny_wavlm):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(tmp_path, corpus.root, tiny_wavlm)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "1"])
    ckpt = next((tmp_path / "runs" / "probe" / "version_0" / "checkpoints").glob("*.ckpt"))
    with pytest.raises(ValueError, match="label ids would not match"):
        main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--data.classes", "[sad, happy]"])


@pytest.mark.parametrize("card", [c.name for c in zoo.list_cards(kind="upstream")])
def test_every_zoo_architecture_fits_and_tests_through_the_cli(card, tmp_path):
    """Each zoo model's tiny stand-in goes through `emorl fit` and `emorl test --ckpt_path`."""
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    model = tiny_models.build_tiny(card, tmp_path / card)
    config = _config(tmp_path, corpus.root, model, name=card)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "1"])
    ckpt = next((tmp_path / "runs" / card / "version_0" / "checkpoints").glob("*.ckpt"))
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    rows = (tmp_path / "runs" / card / "version_1" / "predictions" / "tiny.jsonl").read_text().splitlines()
    assert len(rows) == 4
