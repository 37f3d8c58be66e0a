"""Frozen upstreams: shapes, valid lengths, masking (padding never changes a clip's features), Whisper's cut."""

from pathlib import Path

import pytest
import torch

from emorl.tiny_models import build_tiny
from emorl.upstreams import Upstream, masked_mean, select_layer, state_dict_digest
from emorl.upstreams.hf import HFUpstream

NAMES = ["data2vec-audio-large", "hubert-large", "wavlm-large", "whisper-large-v3"]
LENGTHS = [16_000, 9_137, 4_321, 2_000]  # samples at 16 kHz


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_upstreams")
    return {name: build_tiny(name, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def upstreams(tiny_models) -> dict[str, HFUpstream]:
    return {name: HFUpstream(path) for name, path in tiny_models.items()}


def _batch(lengths=LENGTHS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    clips = [0.1 * torch.randn(n, generator=generator) for n in lengths]
    wave = torch.zeros(len(clips), max(lengths))
    for i, clip in enumerate(clips):
        wave[i, : len(clip)] = clip
    return clips, wave, torch.tensor(lengths)


def _expected_frames(name: str, n: int) -> int:
    if name == "whisper-large-v3":
        return n // 320
    # conv encoder: kernels (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2)
    for kernel, stride in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        n = (n - kernel) // stride + 1
    return n


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_valid_lengths(name, upstreams):
    upstream = upstreams[name]
    _, wave, lengths = _batch()
    out = upstream(wave, lengths)
    expected = [_expected_frames(name, n) for n in LENGTHS]
    assert out.lengths.tolist() == expected
    assert len(out.hidden_states) == upstream.num_layers + 1 == 3
    for states in out.hidden_states:
        assert states.shape == (len(LENGTHS), max(expected), upstream.hidden_dim)
        assert states.dtype == torch.float32 and not states.requires_grad
    assert upstream.frame_rate == 50
    assert select_layer(out.hidden_states, "all").shape == (4, 3, max(expected), 32)
    assert torch.equal(out.select(1), out.hidden_states[1])


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_a_clip_s_features(name, upstreams):
    """A batch of clips of different lengths vs each clip alone: same masked-mean pooled features."""
    upstream = upstreams[name]
    clips, wave, lengths = _batch()
    out = upstream(wave, lengths)
    pooled = masked_mean(out.hidden_states[-1], out.lengths)
    for i, clip in enumerate(clips):
        alone = upstream(clip[None], torch.tensor([len(clip)]))
        assert alone.lengths.item() == out.lengths[i].item()
        alone_pooled = masked_mean(alone.hidden_states[-1], alone.lengths)[0]
        torch.testing.assert_close(pooled[i], alone_pooled, atol=1e-5, rtol=1e-4)
        # every valid frame of every layer, not just the mean
        n = int(alone.lengths)
        for layer in range(3):
            torch.testing.assert_close(
                out.hidden_states[layer][i, :n], alone.hidden_states[layer][0, :n], atol=1e-5, rtol=1e-4
            )


def test_auto_batching_pads_only_where_padding_cannot_leak(upstreams):
    assert upstreams["hubert-large"].batching == "padded"
    assert upstreams["wavlm-large"].batching == "padded"
    assert upstreams["whisper-large-v3"].batching == "padded"
    # data2vec-audio's 5 stacked positional convolutions carry padding into valid frames
    assert upstreams["data2vec-audio-large"].batching == "per_clip"


def test_data2vec_audio_padded_would_differ(tiny_models):
    """Why data2vec-audio runs clip by clip: one padded forward changes the shorter clips."""
    upstream = HFUpstream(tiny_models["data2vec-audio-large"], batching="padded")
    clips, wave, lengths = _batch()
    out = upstream(wave, lengths)
    alone = upstream(clips[-1][None], torch.tensor([len(clips[-1])]))
    n = int(alone.lengths)
    assert not torch.allclose(out.hidden_states[-1][-1, :n], alone.hidden_states[-1][0, :n], atol=1e-3)


def test_group_norm_models_are_run_clip_by_clip(tmp_path):
    """HuBERT-base style (group norm over the padded sequence, no attention mask): never padded."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                          feat_extract_norm="group", do_stable_layer_norm=False)
    HubertModel(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(tmp_path)
    upstream = HFUpstream(tmp_path)
    assert not upstream.padding_invariant and upstream.batching == "per_clip"
    clips, wave, lengths = _batch()
    out = upstream(wave, lengths)
    alone = upstream(clips[1][None], torch.tensor([len(clips[1])]))
    n = int(alone.lengths)
    torch.testing.assert_close(out.hidden_states[-1][1, :n], alone.hidden_states[-1][0, :n], atol=1e-5, rtol=1e-4)
    padded = HFUpstream(tmp_path, batching="padded")(wave, lengths)
    assert not torch.allclose(padded.hidden_states[-1][1, :n], alone.hidden_states[-1][0, :n], atol=1e-3)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
def test_the_last_hidden_state_is_the_model_output(upstreams):
    """transformers 5 records stable-layer-norm models' last layer before the final LayerNorm; we don't."""
    upstream = upstreams["wavlm-large"]
    clips, _, _ = _batch()
    out = upstream(clips[0][None], torch.tensor([len(clips[0])]))
    inputs = upstream.feature_extractor([clips[0].numpy()], sampling_rate=16000, return_tensors="pt",
                                        return_attention_mask=True)
    with torch.no_grad():
        reference = upstream.model(inputs["input_values"], attention_mask=inputs["attention_mask"]).last_hidden_state
    torch.testing.assert_close(out.hidden_states[-1], reference)


def test_whisper_sees_30_seconds_and_is_cut_to_its_own_frames(upstreams):
    upstream = upstreams["whisper-large-v3"]
    _, wave, lengths = _batch([16_000, 6_400, 9_000])
    out = upstream(wave, lengths)
    assert out.lengths.tolist() == [50, 20, 28]  # len // 320
    assert out.hidden_states[-1].shape[1] == 50  # not 1500
    # the encoder itself ran on 30 s of log-mel (3000 frames -> 1500)
    features = upstream.feature_extractor([wave[1, :6400].numpy()], sampling_rate=16000, return_tensors="pt")
    assert features["input_features"].shape[-1] == 3000
    with torch.no_grad():
        full = upstream.model(features["input_features"]).last_hidden_state
    assert full.shape[1] == 1500
    torch.testing.assert_close(out.hidden_states[-1][1, :20], full[0, :20], atol=1e-5, rtol=1e-4)


def test_very_short_clips_get_one_frame(upstreams):
    upstream = upstreams["hubert-large"]
    wave = torch.zeros(2, 16_000)
    wave[0, :100] = 0.1
    wave[1] = 0.1
    out = upstream(wave, torch.tensor([100, 16_000]))
    assert out.lengths.tolist() == [1, 49]
    assert torch.isfinite(out.hidden_states[-1]).all()


def test_layer_range_is_checked(upstreams):
    upstream = upstreams["wavlm-large"]
    assert upstream.layer_index("last") == 2 and upstream.layer_index(-1) == 2 and upstream.layer_index(0) == 0
    assert upstream.layer_index("all") is None
    with pytest.raises(ValueError, match="out of range"):
        upstream.layer_index(3)


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [2.0], [2.0]]])
    assert masked_mean(x, torch.tensor([2, 3])).flatten().tolist() == [2.0, 2.0]
    stacked = x[:, None].expand(2, 4, 3, 1)  # (B, L, T, D): time is dim 2
    assert masked_mean(stacked, torch.tensor([2, 3]), time_dim=2).shape == (2, 4, 1)
    assert masked_mean(x, torch.tensor([0, 3]))[0].item() == 0.0


def test_identity_follows_the_weights(tmp_path):
    """Re-saving other weights changes the identity; a base Upstream can hash its state dict."""
    path = build_tiny("wavlm-large", tmp_path / "m", seed=0)
    first = HFUpstream(path)
    build_tiny("wavlm-large", tmp_path / "m", seed=1)
    second = HFUpstream(path)
    assert first.identity != second.identity
    assert first.identity.startswith("hf-wavlm-")
    assert state_dict_digest(first.model) != state_dict_digest(second.model)
    assert isinstance(first, Upstream)
