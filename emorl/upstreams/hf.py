"""The transformers backend: HuBERT, WavLM, data2vec-audio and Whisper's encoder, frozen.

A model folder is what ``save_pretrained`` writes (or a Hugging Face snapshot): ``config.json``,
the weights, and the feature extractor's ``preprocessor_config.json``. It is read with
``from_pretrained(path, local_files_only=True)``, so nothing is ever downloaded.

How each family is fed (this is where padding would otherwise leak into the features):

- **HuBERT / WavLM / data2vec-audio**: the checkpoint's own ``Wav2Vec2FeatureExtractor``
  normalises each clip over its own samples (``do_normalize``); the model gets an
  ``attention_mask`` when the extractor says ``return_attention_mask=True`` (the large
  checkpoints: layer-normed conv feature encoder, ``do_stable_layer_norm``), and valid output
  frames are ``model._get_feat_extract_output_lengths(wave_lengths)``.
- **Whisper** (encoder only, loaded from a ``WhisperForConditionalGeneration`` or ``WhisperModel``
  checkpoint, the decoder's weights are never loaded): the ``WhisperFeatureExtractor`` pads every
  clip to 30 s of log-mel, as Whisper was trained; the 1500 output frames are cut back to the
  clip's own ``len // 320`` (EmoBox's rule), at most 1500 (clips over 30 s are truncated by the
  extractor).

``batching`` decides how a batch runs. ``padded``: one forward over the zero-padded batch with
masks. ``per_clip``: each clip alone, no padding at all (what EmoBox's extraction does). ``auto``
(default) pads only when padding provably cannot change a clip's valid frames:

- Whisper: always (each clip is padded to 30 s on its own anyway);
- HuBERT / WavLM with an attention mask and a ``"layer"``-normed conv encoder (the large models):
  yes: the conv encoder is per-frame, padded frames are zeroed before the one-layer positional
  convolution and masked in attention;
- ``feat_extract_norm="group"`` (HuBERT-base style: group norm over the whole padded sequence)
  or no attention mask: no;
- data2vec-audio: no: its positional embedding is a stack of 5 convolutions, and the frames the
  first one writes into the padding reach the valid frames through the next ones.

``tests/test_upstreams.py`` checks the claim: a clip's masked-mean features are the same alone and
in a padded batch.

The last hidden state is always the model's final output (``last_hidden_state``): transformers 5
records the stable-layer-norm models' last layer *before* their final LayerNorm, transformers 4
(and s3prl, and EmoBox) after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from emorl.upstreams.base import DTYPES, Batching, Upstream, UpstreamOutput, check_options, digest_file

log = logging.getLogger(__name__)

#: Bump when the meaning of extracted features changes (cache folders are keyed on it).
FEATURE_VERSION = 1

#: ``config.json`` ``model_type`` -> the transformers class that is loaded.
MODEL_CLASSES = {
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
    "whisper": "WhisperEncoder",
}

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
JSON_FILES = ("config.json", "preprocessor_config.json")
#: Whisper: 16 kHz samples per encoder frame (hop 160, then a stride-2 convolution).
WHISPER_SAMPLES_PER_FRAME = 320



class UpstreamLoadError(RuntimeError):
    """A model folder that cannot be loaded, with the reason and the fix."""


def read_config(path: str | Path) -> dict:
    config = Path(path) / "config.json"
    if not config.is_file():
        raise UpstreamLoadError(
            f"{path} is not a transformers model folder: {config.name} is missing "
            "(expected what save_pretrained / `hf download` writes: config.json, preprocessor_config.json, weights)"
        )
    return json.loads(config.read_text(encoding="utf-8"))


def model_type_of(path: str | Path) -> str:
    model_type = read_config(path).get("model_type")
    if model_type not in MODEL_CLASSES:
        raise UpstreamLoadError(
            f"{path}: model_type {model_type!r} is not supported by the hf backend "
            f"(supported: {', '.join(MODEL_CLASSES)})"
        )
    return model_type


def config_dims(path: str | Path) -> tuple[int, int]:
    """``(num_layers, hidden_dim)`` of a model folder, from its config.json (weights not loaded)."""
    config, model_type = read_config(path), model_type_of(path)
    if model_type == "whisper":
        return int(config.get("encoder_layers", 32)), int(config.get("d_model", 1280))
    return int(config.get("num_hidden_layers", 12)), int(config.get("hidden_size", 768))


def weight_files(path: str | Path) -> list[Path]:
    path = Path(path)
    return sorted({f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()})


def hf_identity(path: str | Path, dtype: str = "float32") -> str:
    """The cache identity of a model folder, computed without loading the weights.

    A hash of ``config.json`` and ``preprocessor_config.json`` (content), each weight file's
    name, size, modification time and first and last 64 KiB, the compute dtype and
    :data:`FEATURE_VERSION`. Re-saving or replacing the weights changes it; copying a folder
    elsewhere (new mtimes) changes it too, which only costs a re-extraction.
    """
    path = Path(path)
    model_type = model_type_of(path)
    files = weight_files(path)
    if not files:
        raise UpstreamLoadError(f"{path}: no weight file ({', '.join(WEIGHT_PATTERNS)})")
    digest = hashlib.sha1()
    digest.update(f"v{FEATURE_VERSION}|{dtype}|".encode())
    for name in JSON_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(json.dumps(json.loads(file.read_text(encoding="utf-8")), sort_keys=True).encode())
    for file in files:
        digest_file(digest, file)
    return f"hf-{model_type}-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars while loading a frozen model."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_feature_extractor(path: Path, model_type: str, config: dict):
    from transformers import (
        AutoFeatureExtractor,
        Wav2Vec2FeatureExtractor,
        WhisperFeatureExtractor,
    )

    if (path / "preprocessor_config.json").is_file():
        with quiet_transformers():
            return AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
    log.warning(
        "%s has no preprocessor_config.json: using the default feature extractor of %s "
        "(save the checkpoint's own with save_pretrained to be exact)", path, model_type,
    )
    if model_type == "whisper":
        return WhisperFeatureExtractor(feature_size=config.get("num_mel_bins", 80))
    return Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)


def _load_model(path: Path, model_type: str, dtype: torch.dtype):
    import transformers

    cls = getattr(transformers, MODEL_CLASSES[model_type], None)
    kwargs: dict = {"local_files_only": True, "dtype": dtype, "output_loading_info": True}
    if model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls

        # WhisperForConditionalGeneration keys are model.encoder.*, WhisperModel's encoder.*:
        # build the encoder alone and map its weights; the decoder is never built (its keys are ignored).
        kwargs["key_mapping"] = {r"^model\.encoder\.": "", r"^encoder\.": ""}
    with quiet_transformers():
        try:
            model, info = cls.from_pretrained(str(path), **kwargs)
        except OSError as err:
            raise UpstreamLoadError(f"cannot load {MODEL_CLASSES[model_type]} from {path}: {err}") from err
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("masked_spec_embed")]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise UpstreamLoadError(
            f"{path}: the checkpoint lacks weights of {MODEL_CLASSES[model_type]} "
            f"(missing: {sorted(missing)[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"mismatched: {list(mismatched)[:4]}): is it really a {model_type} checkpoint?"
        )
    return model


class HFUpstream(Upstream):
    """A frozen transformers speech encoder from a local folder.

    Args:
        path: the model folder (``emorl.zoo.resolve(name)`` finds one for a zoo name).
        name: display name (default: the folder's name).
        dtype: compute dtype of the encoder (``float32``, ``float16``, ``bfloat16``); features are
            returned as float32. Part of :attr:`identity`.
        batching: ``auto``, ``padded`` or ``per_clip`` (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        dtype: str = "float32",
        batching: Batching = "auto",
    ) -> None:
        super().__init__()
        check_options(dtype, batching)
        self.path = Path(path)
        self.config_dict = read_config(self.path)
        self.model_type = model_type_of(self.path)
        self.name = name or self.path.name
        self.dtype_name = dtype
        self.identity = hf_identity(self.path, dtype)
        self.feature_extractor = _load_feature_extractor(self.path, self.model_type, self.config_dict)
        self.model = _load_model(self.path, self.model_type, DTYPES[dtype])
        config = self.model.config
        self.is_whisper = self.model_type == "whisper"
        self.num_layers = int(config.encoder_layers if self.is_whisper else config.num_hidden_layers)
        self.hidden_dim = int(config.d_model if self.is_whisper else config.hidden_size)
        self.sample_rate = int(getattr(self.feature_extractor, "sampling_rate", 16_000))
        if self.is_whisper:
            self.use_attention_mask = False
            self.min_samples = 1
            self.frame_rate = self.sample_rate / WHISPER_SAMPLES_PER_FRAME
            self.max_frames = int(config.max_source_positions)
        else:
            self.use_attention_mask = bool(getattr(self.feature_extractor, "return_attention_mask", False))
            # the shortest input the conv encoder accepts (one output frame): 400 samples
            self.min_samples = 1
            while int(self.model._get_feat_extract_output_lengths(self.min_samples)) < 1:
                self.min_samples += 1
            self.frame_rate = self.sample_rate / float(np.prod(config.conv_stride))
        self.padding_invariant = self._padding_invariant()
        self.batching = batching if batching != "auto" else ("padded" if self.padding_invariant else "per_clip")
        self.freeze()

    def _padding_invariant(self) -> bool:
        if self.is_whisper:
            return True
        norm = getattr(self.model.config, "feat_extract_norm", "layer")
        return self.use_attention_mask and norm == "layer" and self.model_type in ("hubert", "wavlm")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, identity={self.identity!r}, batching={self.batching!r}"

    # -- lengths ----------------------------------------------------------------------------------
    def output_lengths(self, wave_lengths: Tensor) -> Tensor:
        """Valid output frames of clips of these lengths (samples)."""
        wave_lengths = wave_lengths.long()
        if self.is_whisper:
            return (wave_lengths // WHISPER_SAMPLES_PER_FRAME).clamp(max=self.max_frames)
        padded = wave_lengths.clamp(min=self.min_samples)
        return self.model._get_feat_extract_output_lengths(padded).long()

    # -- forward ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _clips(self, wave: Tensor, wave_lengths: Tensor) -> list[np.ndarray]:
        clips = []
        for row, length in zip(wave.detach().float().cpu(), wave_lengths.tolist()):
            clip = row[: int(length)].numpy()
            if len(clip) < self.min_samples:
                clip = np.pad(clip, (0, self.min_samples - len(clip)))
            clips.append(clip)
        return clips

    @torch.no_grad()
    def _run(self, clips: Sequence[np.ndarray]) -> tuple[list[Tensor], int]:
        """One forward over ``clips`` (padded together): hidden states (B, T', D) and T'."""
        device, dtype = self.device, next(self.model.parameters()).dtype
        if self.is_whisper:
            inputs = self.feature_extractor(list(clips), sampling_rate=self.sample_rate, return_tensors="pt")
            outputs = self.model(inputs["input_features"].to(device, dtype), output_hidden_states=True)
        else:
            inputs = self.feature_extractor(
                list(clips), sampling_rate=self.sample_rate, padding=True,
                return_attention_mask=True, return_tensors="pt",
            )
            kwargs = {}
            if self.use_attention_mask:
                kwargs["attention_mask"] = inputs["attention_mask"].to(device)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask and attn_mask.*")
                outputs = self.model(inputs["input_values"].to(device, dtype), output_hidden_states=True, **kwargs)
        hidden = list(outputs.hidden_states)
        hidden[-1] = outputs.last_hidden_state
        if len(hidden) != self.num_layers + 1:
            raise RuntimeError(f"{self.name}: {len(hidden)} hidden states, expected {self.num_layers + 1}")
        return hidden, hidden[-1].shape[1]

    def forward(self, wave: Tensor, wave_lengths: Tensor) -> UpstreamOutput:
        """``wave`` (B, T) zero-padded 16 kHz, ``wave_lengths`` (B,) -> all hidden states, valid frames."""
        wave_lengths = wave_lengths.to(torch.long).cpu()
        clips = self._clips(wave, wave_lengths)
        lengths = self.output_lengths(torch.tensor([len(c) for c in clips], dtype=torch.long))
        return self.run_clips(clips, lengths)


# -- the backend protocol (see emorl.upstreams.BACKENDS) ------------------------------------------
def detect(path: str | Path) -> bool:
    """A transformers folder of a supported speech encoder."""
    try:
        model_type_of(path)
    except Exception:
        return False
    return True


def load(source: Path, name: str | None = None, dtype: str = "float32", batching: Batching = "auto") -> HFUpstream:
    return HFUpstream(source, name=name, dtype=dtype, batching=batching)


def identity(source: Path, dtype: str = "float32") -> str:
    return hf_identity(source, dtype)


def dims(source: Path) -> tuple[int, int]:
    return config_dims(source)


def build_tiny(card, out: Path, seed: int = 0) -> Path:
    """A tiny random model of a card's architecture, saved as the hub checkpoint is (see emorl.zoo)."""
    import transformers

    config = getattr(transformers, card.config_class)(**card.architecture_config, **card.tiny)
    options = dict(card.feature_extractor)
    extractor_cls = getattr(transformers, options.pop("class"))
    options.setdefault("sampling_rate", card.sample_rate)
    model_cls = getattr(transformers, card.checkpoint_class)
    with torch.random.fork_rng(devices=[]), quiet_transformers():
        torch.manual_seed(seed)
        model = model_cls(config)
        model.save_pretrained(str(out))
        extractor_cls(**options).save_pretrained(str(out))
    return out
