"""The ``data2vec2`` backend: emotion2vec / emotion2vec+ and data2vec 2.0 audio, native (no fairseq, no FunASR).

The network is :mod:`emorl.upstreams.data2vec2_model` (a port of fairseq's ``Data2VecMultiModel``
audio path, which FunASR's ``Emotion2vec`` copies); this module reads the official checkpoints.
Two folder layouts are understood:

- **FunASR / ModelScope / Hugging Face** (``emotion2vec/emotion2vec_plus_large``,
  ``iic/emotion2vec_plus_large``): ``config.yaml`` (``model: Emotion2vec`` and ``model_conf``,
  which holds ``modalities.audio`` and ``normalize``) and ``model.pt``;
- **fairseq** (data2vec 2.0 releases, e.g. ``large_vox.pt``): one checkpoint file, renamed to
  ``model.pt``, holding ``cfg`` (``cfg.model``, and ``cfg.task.normalize``) and ``model``.

Keys the encoder does not use (the pre-training decoder, the EMA teacher, emotion2vec+'s
9-class head ``proj``) are ignored; any other unknown or missing key is an error.

Feature extraction follows the official scripts (emotion2vec's ``extract_features.py``, FunASR's
``Emotion2vec.inference``): each clip is layer-normed over its own samples when the config says
``normalize``, the encoder runs with ``mask=False`` and extra tokens are removed. Hidden states:
index 0 is the input of the first transformer block, then one per block, the modality prenet's
blocks included (data2vec 2.0 / emotion2vec+ large: 8 + 16 = 24), the last being the final output
(``extract_features(...)["x"]``, FunASR's ``granularity="frame"`` features).

``batching``: ``padded`` runs a zero-padded batch with masks, ``per_clip`` each clip alone (what
the official extraction does). ``auto`` pads when the conv feature encoder is per frame
(``extractor_mode: layer_norm``, every large model): the port zeroes padded frames before each
positional convolution and masks them in attention, so a clip's valid frames are the same alone
and in a batch (``tests/test_data2vec2.py`` checks it). With ``extractor_mode: default`` (a
GroupNorm over the whole padded sequence) ``auto`` runs each clip alone.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from emorl.safe_load import fairseq_safe_globals, refused_globals, safe_torch_load
from emorl.upstreams.base import DTYPES, Batching, Upstream, UpstreamOutput, check_options, digest_file
from emorl.upstreams.data2vec2_model import (
    Data2Vec2Config,
    Data2Vec2Encoder,
    convert_state_dict,
    export_state_dict,
)
from emorl.upstreams.hf import UpstreamLoadError

log = logging.getLogger(__name__)

#: Bump when the meaning of extracted features changes (cache folders are keyed on it).
FEATURE_VERSION = 1
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "model.pt"
#: FunASR ``model:`` names of this architecture.
FUNASR_MODELS = ("Emotion2vec",)
#: fairseq ``cfg.model._name`` of data2vec 2.0.
FAIRSEQ_MODELS = ("data2vec_multi",)



class Data2Vec2LoadError(UpstreamLoadError):
    """A data2vec 2.0 / emotion2vec folder that cannot be loaded (the message says why)."""


class UnsafeCheckpointError(Data2Vec2LoadError):
    """A checkpoint that pickles objects a ``weights_only`` load refuses (nothing of it was run)."""


# -- files ------------------------------------------------------------------------------------------
def checkpoint_file(path: str | Path) -> Path:
    """``model.pt``, else the folder's only ``*.pt`` / ``*.pth``."""
    path = Path(path)
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    candidates = sorted(p for pattern in ("*.pt", "*.pth") for p in path.glob(pattern) if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise Data2Vec2LoadError(
        f"{path}: no {CHECKPOINT_FILE} (found: {found}). An emotion2vec / data2vec 2.0 folder holds "
        f"{CONFIG_FILE} and {CHECKPOINT_FILE} as `hf download emotion2vec/emotion2vec_plus_large` writes "
        f"them, or one fairseq checkpoint renamed to {CHECKPOINT_FILE}"
    )


def _to_plain(value: Any) -> Any:
    """OmegaConf containers (old fairseq checkpoints pickle them) -> plain dicts and lists."""
    if isinstance(value, dict) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_to_plain(v) for v in value]
    return value


def torch_load(file: Path, mmap: bool = False) -> dict:
    """A checkpoint, read with ``weights_only=True``: tensors, plain containers and the few classes
    fairseq's training state holds (:func:`emorl.safe_load.fairseq_safe_globals`), never any other
    pickled object.

    A file that pickles anything else is refused with :class:`UnsafeCheckpointError` naming what it
    holds; nothing of it is run. (emorl used to retry such a file as a full pickle, where a crafted
    checkpoint runs any code it names.)
    """
    kwargs: dict[str, Any] = {"map_location": "cpu", "mmap": mmap}
    try:
        obj = safe_torch_load(file, fairseq_safe_globals(), **kwargs)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a refused class: a corrupt file
            raise Data2Vec2LoadError(
                f"cannot read the checkpoint {file} ({refused_globals(file, err)}); it may be truncated or "
                "corrupt: download it again"
            ) from None
        raise UnsafeCheckpointError(
            f"{file} pickles objects beyond tensors and a fairseq checkpoint's training state "
            f"({refused_globals(file, err)}); it was not loaded, since unpickling them could run code. "
            "Use the checkpoint from its official source; only if you trust where this file came from, "
            "re-save its weights and config as plain data once (docs/reliability.md, 'A checkpoint emorl refuses')"
        ) from None
    except Exception as err:  # truncated download, not a torch file, ...
        if mmap:  # old (non-zip) checkpoints cannot be memory-mapped
            try:
                return torch_load(file, mmap=False)
            except UnsafeCheckpointError:
                raise
            except Data2Vec2LoadError:
                pass
        raise Data2Vec2LoadError(
            f"cannot read the checkpoint {file} ({type(err).__name__}: {err}); it may be truncated or "
            "corrupt: download it again"
        ) from err
    if not isinstance(obj, dict):
        raise Data2Vec2LoadError(f"{file}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def _state_of(checkpoint: dict) -> dict[str, Tensor]:
    """The model's state dict inside a checkpoint (the wrappers FunASR's loader accepts)."""
    state = checkpoint
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def _read_yaml(file: Path) -> dict:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise Data2Vec2LoadError(f"{file}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise Data2Vec2LoadError(f"{file}: expected a mapping")
    return data


def _config_from_dicts(model: dict, task: dict | None, where: str) -> Data2Vec2Config:
    if not isinstance(model, dict) or "embed_dim" not in model and "modalities" not in model:
        raise Data2Vec2LoadError(f"{where}: no data2vec 2.0 model config (embed_dim, modalities.audio)")
    normalize = (task or {}).get("normalize") if task else None
    try:
        return Data2Vec2Config.from_model_conf(model, normalize=normalize)
    except (TypeError, ValueError) as err:
        raise Data2Vec2LoadError(f"{where}: {err}") from err


_CONFIG_CACHE: dict[tuple, Data2Vec2Config] = {}


def read_config(path: str | Path) -> Data2Vec2Config:
    """The architecture of a folder, from ``config.yaml`` or the fairseq checkpoint's ``cfg``.

    The checkpoint is memory-mapped, so its weights are not read (safely: :func:`torch_load`).
    """
    path = Path(path)
    config = path / CONFIG_FILE
    if config.is_file():
        data = _read_yaml(config)
        if isinstance(data.get("model_conf"), dict):  # FunASR
            if data.get("model") not in (None, *FUNASR_MODELS):
                raise Data2Vec2LoadError(f"{config}: model {data.get('model')!r} is not emotion2vec / data2vec 2.0")
            return _config_from_dicts(data["model_conf"], None, str(config))
        if isinstance(data.get("model"), dict):  # a fairseq / hydra config
            return _config_from_dicts(data["model"], data.get("task"), str(config))
        raise Data2Vec2LoadError(f"{config}: neither a FunASR config (model_conf) nor a fairseq one (model:)")
    file = checkpoint_file(path)
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns)
    if key not in _CONFIG_CACHE:
        cfg = _to_plain(torch_load(file, mmap=True).get("cfg"))
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise Data2Vec2LoadError(
                f"{path}: no {CONFIG_FILE} and {file.name} has no fairseq cfg: is it an emotion2vec / "
                "data2vec 2.0 checkpoint? (FunASR folders come with config.yaml)"
            )
        name = cfg["model"].get("_name")
        if name not in (None, *FAIRSEQ_MODELS):
            raise Data2Vec2LoadError(f"{file}: a fairseq {name!r} checkpoint, not data2vec 2.0 (data2vec_multi)")
        _CONFIG_CACHE[key] = _config_from_dicts(cfg["model"], cfg.get("task"), str(file))
    return _CONFIG_CACHE[key]


def config_dims(path: str | Path) -> tuple[int, int]:
    cfg = read_config(path)
    return cfg.num_layers, cfg.embed_dim


def data2vec2_identity(path: str | Path, dtype: str = "float32") -> str:
    """Hash of ``config.yaml``, the checkpoint's name, size, mtime and first / last 64 KiB, the dtype."""
    path = Path(path)
    read_config(path)  # a clear error for a folder that is not one of ours
    file = checkpoint_file(path)
    digest = hashlib.sha1(f"d2v2-v{FEATURE_VERSION}|{dtype}|".encode())
    config = path / CONFIG_FILE
    if config.is_file():
        digest.update(yaml.safe_dump(_read_yaml(config), sort_keys=True).encode())
    digest_file(digest, file)
    return f"data2vec2-{digest.hexdigest()[:16]}"


def load_encoder(path: str | Path) -> tuple[Data2Vec2Encoder, Data2Vec2Config]:
    """Build the encoder from a folder's config and load its checkpoint (strictly, modulo ignored keys;
    safely: :func:`torch_load`)."""
    path = Path(path)
    cfg = read_config(path)
    file = checkpoint_file(path)
    state, unknown = convert_state_dict(_state_of(torch_load(file)), cfg)
    model = Data2Vec2Encoder(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if unknown or missing or mismatched:
        def show(keys):
            return f"{list(keys)[:6]}{' ...' if len(keys) > 6 else ''}"

        raise Data2Vec2LoadError(
            f"{file} does not match its config: missing {show(missing)}, unexpected {show(unknown)}, "
            f"shape mismatch {show(mismatched)}; is it an emotion2vec / data2vec 2.0 audio checkpoint "
            f"of this size (embed_dim {cfg.embed_dim}, {cfg.prenet_depth} + {cfg.depth} blocks)?"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    return model, cfg


# -- the upstream -----------------------------------------------------------------------------------
class Data2Vec2Upstream(Upstream):
    """A frozen emotion2vec / data2vec 2.0 encoder from a local folder.

    Args:
        path: the model folder (``emorl.zoo.resolve(name)`` finds one for a zoo name).
        name: display name (default: the folder's name).
        dtype: compute dtype (``float32``, ``float16``, ``bfloat16``); features are returned as
            float32. Part of :attr:`identity`.
        batching: ``auto``, ``padded`` or ``per_clip`` (see the module docstring).
    """

    def __init__(self, path: str | Path, name: str | None = None, dtype: str = "float32",
                 batching: Batching = "auto") -> None:
        super().__init__()
        check_options(dtype, batching)
        self.path = Path(path)
        self.name = name or self.path.name
        self.dtype_name = dtype
        self.identity = data2vec2_identity(self.path, dtype)
        self.model, self.cfg = load_encoder(self.path)
        self.model.to(DTYPES[dtype])
        self.num_layers = self.cfg.num_layers
        self.hidden_dim = self.cfg.embed_dim
        self.sample_rate = 16_000
        self.frame_rate = self.sample_rate / self.cfg.samples_per_frame
        self.min_samples = self.model.min_samples
        self.padding_invariant = self.cfg.extractor_mode == "layer_norm"
        self.batching = batching if batching != "auto" else ("padded" if self.padding_invariant else "per_clip")
        self.freeze()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, identity={self.identity!r}, batching={self.batching!r}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def output_lengths(self, wave_lengths: Tensor) -> Tensor:
        """Valid output frames of clips of these lengths (samples); short clips count as one frame."""
        return self.model.output_lengths(wave_lengths.long().clamp(min=self.min_samples))

    def prepare(self, clip: Tensor) -> Tensor:
        """One clip as the official extraction feeds it: layer-normed over its samples, float32."""
        clip = clip.float()
        if self.cfg.normalize and clip.numel() > 0:
            clip = F.layer_norm(clip, clip.shape)
        if clip.numel() < self.min_samples:
            clip = F.pad(clip, (0, self.min_samples - clip.numel()))
        return clip

    @torch.no_grad()
    def _run(self, clips: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        device, dtype = self.device, next(self.model.parameters()).dtype
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
        wave = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
        for i, clip in enumerate(clips):
            wave[i, : len(clip)] = clip
        hidden, frames = self.model(wave.to(device, dtype), lengths.to(device) if len(clips) > 1 else None)
        return hidden, frames

    def forward(self, wave: Tensor, wave_lengths: Tensor) -> UpstreamOutput:
        """``wave`` (B, T) zero-padded 16 kHz, ``wave_lengths`` (B,) -> all hidden states, valid frames."""
        wave_lengths = wave_lengths.to(torch.long).cpu()
        rows = wave.detach().cpu()
        clips = [self.prepare(row[: int(n)]) for row, n in zip(rows, wave_lengths.tolist())]
        lengths = self.model.output_lengths(torch.tensor([len(c) for c in clips]))
        return self.run_clips(clips, lengths)


# -- the backend protocol (see emorl.upstreams.BACKENDS) ------------------------------------------
def detect(path: str | Path) -> bool:
    """A folder of an emotion2vec (FunASR ``config.yaml``) or fairseq data2vec 2.0 checkpoint."""
    path = Path(path)
    if not path.is_dir() or ((path / "config.json").is_file() and not (path / CONFIG_FILE).is_file()):
        return False
    try:
        read_config(path)
    except UnsafeCheckpointError:
        return True  # ours to load, and to refuse with that clear message
    except Exception:
        return False
    return True


def load(source: Path, name: str | None = None, dtype: str = "float32", batching: Batching = "auto") -> Data2Vec2Upstream:
    return Data2Vec2Upstream(source, name=name, dtype=dtype, batching=batching)


def identity(source: Path, dtype: str = "float32") -> str:
    return data2vec2_identity(source, dtype)


def dims(source: Path) -> tuple[int, int]:
    return config_dims(source)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _randomise(model: Data2Vec2Encoder, generator: torch.Generator) -> None:
    """Move the norms, biases, ALiBi scales and extra tokens off their trivial initial values."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name == "alibi_scale":
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            elif name == "extra_tokens":
                param.copy_(noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)


def build_tiny(card, out: Path, seed: int = 0) -> Path:
    """A tiny random model of a card's architecture, saved in the card's checkpoint format.

    ``card.architecture_config`` is the real checkpoint's ``model_conf`` (with ``modalities.audio``
    and ``normalize``), ``card.tiny`` overrides sizes (merged key by key). ``checkpoint_class``
    ``Emotion2vec`` writes FunASR's layout (``config.yaml`` + ``model.pt``), ``Data2VecMultiModel``
    fairseq's (``model.pt`` holding ``cfg`` and ``model``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_conf = _merge(card.architecture_config, card.tiny)
    cfg = Data2Vec2Config.from_model_conf(model_conf)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Data2Vec2Encoder(cfg)
    _randomise(model, generator)
    state = {k: v.contiguous() for k, v in export_state_dict(model).items()}
    if card.checkpoint_class == "Data2VecMultiModel":
        conf = _merge(model_conf, {"_name": "data2vec_multi"})
        conf.pop("normalize", None)
        task = {"_name": "audio_pretraining", "normalize": bool(cfg.normalize), "sample_rate": card.sample_rate}
        torch.save({"cfg": {"model": conf, "task": task}, "model": state}, out / CHECKPOINT_FILE)
    else:
        config = {"model": card.checkpoint_class or "Emotion2vec", "model_conf": model_conf}
        (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        torch.save({"model": state}, out / CHECKPOINT_FILE)
    return out


__all__ = [
    "Data2Vec2LoadError",
    "Data2Vec2Upstream",
    "build_tiny",
    "detect",
    "dims",
    "identity",
    "load",
    "read_config",
]
