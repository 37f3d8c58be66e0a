"""The native emotion2vec / data2vec 2.0 port (emorl.upstreams.data2vec2): loading, masking, errors, the probe,
and equality with the reference implementation (FunASR's Emotion2vec, marker ``reference``)."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emorl import zoo
from emorl.tiny_models import build_tiny
from emorl.upstreams import load_upstream, masked_mean, upstream_dims, upstream_identity
from emorl.upstreams import data2vec2
from emorl.upstreams.data2vec2 import Data2Vec2LoadError, Data2Vec2Upstream
from emorl.upstreams.data2vec2_model import Data2Vec2Config, alibi_slopes, parse_conv_spec

NAMES = ["emotion2vec-plus-large", "data2vec2-large"]
LENGTHS = [16_000, 9_137, 4_321, 2_000]  # samples at 16 kHz
TINY_LAYERS = 3  # 1 prenet block + 2 blocks


@pytest.fixture(autouse=True)
def _no_real_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("EMORL_MODELS", raising=False)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_d2v2")
    return {name: build_tiny(name, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def upstreams(tiny_models) -> dict[str, Data2Vec2Upstream]:
    return {name: Data2Vec2Upstream(path) for name, path in tiny_models.items()}


def _clips(lengths=LENGTHS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def _batch(clips):
    wave = torch.zeros(len(clips), max(len(c) for c in clips))
    for i, clip in enumerate(clips):
        wave[i, : len(clip)] = clip
    return wave, torch.tensor([len(c) for c in clips])


def _frames(n: int) -> int:
    for kernel, stride in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        n = (n - kernel) // stride + 1
    return n


# -- the folders and the zoo ------------------------------------------------------------------------
def test_cards():
    for name in NAMES:
        card = zoo.load_card(name)
        assert card.backend == "data2vec2" and card.feature_dim == 1024 and card.num_layers == 24
        assert card.frame_rate == 50 and card.sample_rate == 16000
        audio = card.architecture_config["modalities"]["audio"]
        assert audio["prenet_depth"] + card.architecture_config["depth"] == card.num_layers
        assert card.architecture_config["embed_dim"] == card.feature_dim
    assert zoo.load_card("emotion2vec/emotion2vec_plus_large").name == "emotion2vec-plus-large"
    reference = zoo.load_card("data2vec2-large").reference
    assert reference["in_corpus"]["meld"] == {"ua": 26.33, "wa": 47.72, "f1": 27.35}
    assert reference["in_corpus"]["iemocap"] == {"ua": 57.30, "wa": 56.23, "f1": 56.70}
    assert reference["cross_corpus_wa_trained_on_meld"] == {"ravdess": 34.21, "savee": 37.79, "iemocap": 47.43}
    assert "in_corpus" not in zoo.load_card("emotion2vec-plus-large").reference


def test_tiny_folders_are_in_the_official_layouts(tiny_models):
    funasr = tiny_models["emotion2vec-plus-large"]
    assert sorted(p.name for p in funasr.iterdir()) == ["config.yaml", "model.pt"]
    state = torch.load(funasr / "model.pt", weights_only=True)["model"]
    assert "modality_encoders.AUDIO.local_encoder.conv_layers.0.0.weight" in state
    assert "modality_encoders.AUDIO.context_encoder.blocks.0.attn.qkv.weight" in state
    assert "blocks.1.mlp.fc2.bias" in state and state["modality_encoders.AUDIO.extra_tokens"].shape == (1, 2, 32)
    fairseq = tiny_models["data2vec2-large"]
    assert sorted(p.name for p in fairseq.iterdir()) == ["model.pt"]
    checkpoint = torch.load(fairseq / "model.pt", weights_only=True)
    assert checkpoint["cfg"]["model"]["_name"] == "data2vec_multi" and checkpoint["cfg"]["task"]["normalize"]


@pytest.mark.parametrize("name", NAMES)
def test_loads_through_the_normal_path(name, tiny_models, monkeypatch):
    path = tiny_models[name]
    upstream = load_upstream(path)
    assert isinstance(upstream, Data2Vec2Upstream) and upstream.batching == "padded"
    assert (upstream.num_layers, upstream.hidden_dim, upstream.frame_rate) == (TINY_LAYERS, 32, 50)
    assert upstream.identity == upstream_identity(path) and upstream.identity.startswith("data2vec2-")
    assert not any(p.requires_grad for p in upstream.parameters())
    upstream.train()
    assert not upstream.model.training
    # dims and identity come from the files, without loading the weights
    monkeypatch.setattr(data2vec2, "load_encoder", lambda *a: pytest.fail("weights loaded"))
    assert upstream_dims(path) == (TINY_LAYERS, 32)
    assert upstream_identity(path, "float16") != upstream.identity


@pytest.mark.parametrize("name", NAMES)
def test_a_zoo_name_resolves_from_emorl_models(name, tiny_models, tmp_path, monkeypatch):
    base = tmp_path / "models"
    shutil.copytree(tiny_models[name], base / name)
    monkeypatch.setenv("EMORL_MODELS", str(base))
    assert zoo.resolve(name) == base / name
    upstream = load_upstream(name)
    assert upstream.name == name and isinstance(upstream, Data2Vec2Upstream)


def test_an_unavailable_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "models"))
    with pytest.raises(zoo.ModelNotAvailableError, match="hf download emotion2vec/emotion2vec_plus_large"):
        load_upstream("emotion2vec-plus-large")
    with pytest.raises(zoo.ModelNotAvailableError) as err:
        load_upstream("data2vec2-large")
    assert "dl.fbaipublicfiles.com/fairseq/data2vec2/large_vox.pt" in str(err.value)
    assert "hf download" not in str(err.value)


def test_identity_changes_with_the_weights(tmp_path):
    a = build_tiny("emotion2vec-plus-large", tmp_path / "a", seed=0)
    b = build_tiny("emotion2vec-plus-large", tmp_path / "b", seed=1)
    assert upstream_identity(a) == upstream_identity(a) != upstream_identity(b)
    before = upstream_identity(a)
    shutil.copy(b / "model.pt", a / "model.pt")
    assert upstream_identity(a) != before


def test_detect(tiny_models, tmp_path):
    assert data2vec2.detect(tiny_models["emotion2vec-plus-large"])
    assert data2vec2.detect(tiny_models["data2vec2-large"])
    hf = build_tiny("wavlm-large", tmp_path / "hf")
    assert not data2vec2.detect(hf) and not data2vec2.detect(tmp_path / "nowhere")


# -- features ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_50_hz_frames(name, upstreams):
    upstream = upstreams[name]
    wave, lengths = _batch(_clips())
    out = upstream(wave, lengths)
    expected = [_frames(n) for n in LENGTHS]
    assert out.lengths.tolist() == expected == [49, 28, 13, 6]
    assert len(out.hidden_states) == TINY_LAYERS + 1
    for states in out.hidden_states:
        assert states.shape == (4, 49, 32) and states.dtype == torch.float32 and not states.requires_grad
    # a clip shorter than one conv window still gives one frame
    assert upstream(torch.zeros(1, 100), torch.tensor([100])).lengths.tolist() == [1]


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_a_clip_s_features(name, upstreams):
    """The padded batch (what batching=auto picks) vs each clip alone: every layer, every valid frame."""
    upstream = upstreams[name]
    clips = _clips()
    out = upstream(*_batch(clips))
    for i, clip in enumerate(clips):
        alone = upstream(clip[None], torch.tensor([len(clip)]))
        n = int(alone.lengths)
        assert n == int(out.lengths[i])
        torch.testing.assert_close(masked_mean(out.hidden_states[-1], out.lengths)[i],
                                   masked_mean(alone.hidden_states[-1], alone.lengths)[0], atol=1e-5, rtol=1e-4)
        for layer in range(TINY_LAYERS + 1):
            torch.testing.assert_close(out.hidden_states[layer][i, :n], alone.hidden_states[layer][0, :n],
                                       atol=1e-5, rtol=1e-4)
    per_clip = Data2Vec2Upstream(upstream.path, batching="per_clip")(*_batch(clips))
    for a, b in zip(per_clip.hidden_states, out.hidden_states):
        torch.testing.assert_close(masked_mean(a, out.lengths), masked_mean(b, out.lengths), atol=1e-5, rtol=1e-4)


def test_the_waveform_is_normalised_per_clip(upstreams):
    upstream = upstreams["emotion2vec-plus-large"]
    clip = _clips([8000])[0]
    a = upstream(clip[None], torch.tensor([8000])).hidden_states[-1]
    b = upstream(5.0 * clip[None] + 0.3, torch.tensor([8000])).hidden_states[-1]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_half_precision_runs(tiny_models):
    upstream = Data2Vec2Upstream(tiny_models["data2vec2-large"], dtype="bfloat16")
    out = upstream(*_batch(_clips([4000, 3000])))
    assert out.hidden_states[-1].dtype == torch.float32 and torch.isfinite(out.hidden_states[-1]).all()


# -- errors -----------------------------------------------------------------------------------------
def test_a_corrupt_or_missing_checkpoint_is_a_clear_error(tiny_models, tmp_path):
    folder = tmp_path / "e2v"
    shutil.copytree(tiny_models["emotion2vec-plus-large"], folder)
    (folder / "model.pt").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(Data2Vec2LoadError, match="cannot read the checkpoint .*model.pt.*download it again"):
        load_upstream(folder)
    (folder / "model.pt").unlink()
    with pytest.raises(Data2Vec2LoadError, match="no model.pt"):
        load_upstream(folder)
    # a fairseq folder whose only file is broken
    fairseq = tmp_path / "d2v2"
    fairseq.mkdir()
    (fairseq / "model.pt").write_bytes(b"\0" * 100)
    with pytest.raises(Data2Vec2LoadError, match="cannot read the checkpoint"):
        Data2Vec2Upstream(fairseq)


def test_keys_are_checked(tiny_models, tmp_path):
    folder = tmp_path / "e2v"
    shutil.copytree(tiny_models["emotion2vec-plus-large"], folder)
    state = torch.load(folder / "model.pt", weights_only=True)["model"]
    # pre-training leftovers and emotion2vec+'s classifier are ignored
    extra = dict(state, **{"proj.weight": torch.zeros(9, 32), "_ema": torch.zeros(1),
                           "modality_encoders.AUDIO.decoder.proj.weight": torch.zeros(32, 32)})
    torch.save({"model": extra}, folder / "model.pt")
    assert Data2Vec2Upstream(folder).num_layers == TINY_LAYERS
    # a missing block or an unknown key is an error
    broken = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    torch.save({"model": dict(broken, **{"something.else": torch.zeros(1)})}, folder / "model.pt")
    with pytest.raises(Data2Vec2LoadError, match=r"missing \['layers.2.*unexpected \['something.else'\]"):
        Data2Vec2Upstream(folder)


def test_config_parsing():
    assert parse_conv_spec("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2)
    with pytest.raises(ValueError, match="cannot parse"):
        parse_conv_spec("__import__('os')")
    cfg = Data2Vec2Config.from_model_conf(zoo.load_card("data2vec2-large").architecture_config)
    assert (cfg.num_layers, cfg.embed_dim, cfg.conv_pos_kernel, cfg.samples_per_frame) == (24, 1024, 19, 320)
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625] and len(alibi_slopes(12)) == 12
    with pytest.raises(ValueError, match="learned_alibi"):
        Data2Vec2Config.from_model_conf({"modalities": {"audio": {"learned_alibi": True}}})


# -- the probe --------------------------------------------------------------------------------------
def test_linear_probe_fits_through_the_cli(tmp_path, tiny_models):
    from emorl.cli import main
    from tests.corpus_factory import make_tiny_corpus
    from tests.test_probe import _config

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(tmp_path, corpus.root, tiny_models["emotion2vec-plus-large"], name="e2v")
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    ckpt = next((tmp_path / "runs" / "e2v" / "version_0" / "checkpoints").glob("*.ckpt"))
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert checkpoint["emorl_upstream"]["identity"].startswith("data2vec2-")
    assert sorted(checkpoint["state_dict"]) == ["classifier.bias", "classifier.weight", "proj.bias", "proj.weight"]
    assert any((tmp_path / "cache").rglob("*.pt"))


# -- the reference implementation -------------------------------------------------------------------
#: Training-only fields FunASR's Emotion2vec reads that a tiny config leaves out (no effect in eval).
FUNASR_MODEL_DEFAULTS = {
    "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0, "encoder_dropout": 0.0, "post_mlp_drop": 0.0,
    "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0, "layerdrop": 0.0,
    "end_of_block_targets": False, "clone_batch": 1, "average_top_k_layers": 1, "loss_beta": 0.0,
    "loss_scale": None, "normalize": True,
}
FUNASR_AUDIO_DEFAULTS = {
    "type": "AUDIO", "prenet_layerdrop": 0.0, "prenet_dropout": 0.0, "start_drop_path_rate": 0.0,
    "end_drop_path_rate": 0.0, "num_extra_tokens": 0, "init_extra_token_zero": True, "local_grad_mult": 1.0,
    "use_alibi_encoder": False, "alibi_scale": 1.0, "learned_alibi": False, "alibi_max_pos": None,
    "learned_alibi_scale": False, "learned_alibi_scale_per_head": False, "learned_alibi_scale_per_layer": False,
    "decoder": None, "extractor_mode": "layer_norm", "conv_pos_pre_ln": False, "mask_prob": 0.0,
}
#: Architecture variants beyond the two cards: pre-LN blocks, per-layer ALiBi scales, a LayerNorm
#: before the positional encoder, an even positional kernel, the group-norm conv encoder, no ALiBi.
VARIANTS = {
    "pre_ln_variant": ("emotion2vec-plus-large", {
        "layer_norm_first": True,
        "modalities": {"audio": {"learned_alibi_scale_per_layer": True, "conv_pos_pre_ln": True,
                                 "conv_pos_width": 12, "extractor_mode": "default"}}}),
    "no_alibi_variant": ("data2vec2-large", {"modalities": {"audio": {"use_alibi_encoder": False}}}),
}


def _reference_model(path: Path):
    """FunASR's Emotion2vec built from a folder's config, with the folder's weights (strict)."""
    import yaml
    from funasr.models.emotion2vec.model import Emotion2vec

    if (path / "config.yaml").is_file():
        conf = yaml.safe_load((path / "config.yaml").read_text())["model_conf"]
        state = torch.load(path / "model.pt", weights_only=True)["model"]
    else:  # fairseq: cfg.model + cfg.task.normalize
        checkpoint = torch.load(path / "model.pt", weights_only=True)
        conf = dict(checkpoint["cfg"]["model"], normalize=checkpoint["cfg"]["task"]["normalize"])
        state = checkpoint["model"]
    conf = data2vec2._merge(FUNASR_MODEL_DEFAULTS, conf)
    conf["modalities"]["audio"] = data2vec2._merge(FUNASR_AUDIO_DEFAULTS, conf["modalities"]["audio"])
    conf["modalities"]["audio"].setdefault("num_alibi_heads", conf["num_heads"])
    conf["modalities"]["audio"].setdefault("model_depth", conf["depth"])
    model = Emotion2vec(model_conf=conf, vocab_size=-1)
    model.load_state_dict(state, strict=True)
    return model.eval(), conf


def _reference_features(model, conf, clip: torch.Tensor) -> list[torch.Tensor]:
    """Every hidden state as emorl defines them, from the reference: the input of the first block, each
    block's output (extra tokens removed), the last replaced by ``extract_features(...)["x"]``."""
    encoder = model.modality_encoders["AUDIO"]
    blocks = list(encoder.context_encoder.blocks) + list(model.blocks)
    n_extra = conf["modalities"]["audio"]["num_extra_tokens"]
    captured = []
    hooks = [blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[0][:, n_extra:].clone()))]
    hooks += [b.register_forward_hook(lambda m, args, out: captured.append(out[0][:, n_extra:].clone())) for b in blocks]
    try:
        source = F.layer_norm(clip, clip.shape) if conf["normalize"] else clip  # the official extraction
        with torch.no_grad():
            x = model.extract_features(source.view(1, -1), padding_mask=None)["x"]
    finally:
        for hook in hooks:
            hook.remove()
    captured[-1] = x
    return [c[0] for c in captured]


@pytest.mark.reference
@pytest.mark.parametrize("variant", NAMES + list(VARIANTS))
def test_features_equal_the_reference_implementation(variant, tiny_models, tmp_path):
    pytest.importorskip("funasr", reason="the reference extra (FunASR) is not installed: pip install -e .[reference]")
    if variant in tiny_models:
        path = tiny_models[variant]
    else:
        base, override = VARIANTS[variant]
        card = zoo.load_card(base)
        card = dataclasses.replace(card, architecture_config=data2vec2._merge(card.architecture_config, override))
        path = data2vec2.build_tiny(card, tmp_path / variant, seed=7)
    model, conf = _reference_model(path)
    upstream = Data2Vec2Upstream(path)
    clips = _clips([16_000, 9_137, 3_201], seed=1)
    ours = upstream(*_batch(clips))  # one padded batch (batching=auto where padding-invariant)
    worst = 0.0
    for i, clip in enumerate(clips):
        reference = _reference_features(model, conf, clip)
        assert len(reference) == upstream.num_layers + 1
        n = int(ours.lengths[i])
        for layer, expected in enumerate(reference):
            assert expected.shape == (n, upstream.hidden_dim), (layer, expected.shape)
            got = ours.hidden_states[layer][i, :n]
            worst = max(worst, float((got - expected).abs().max()))
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=f"{variant} clip {i} layer {layer}")
    print(f"{variant}: max |emorl - FunASR| = {worst:.3g}")
