"""The s3prl backend: any ``S3PRLUpstream`` of s3prl's hub, frozen, behind emorl's :class:`Upstream`.

Specifications (what a config writes as ``upstream:``)::

    s3prl:NAME                      # a name of s3prl's hub (S3PRLUpstream.available_names());
                                    # s3prl fetches the checkpoint itself (needs a network, or
                                    # the file already in s3prl's download cache)
    s3prl:NAME:/path/to/ckpt.pt     # a local checkpoint (or URL) handed to s3prl as path_or_url;
                                    # NAME is then an entry that takes one: hubert_local,
                                    # wavlm_local, data2vec_local, wav2vec2_local, ... (or _url / _custom)

s3prl 0.4.18 only imports with torch / torchaudio <= 2.8, so it lives in an environment of its
own: ``pip install "emorl[s3prl]"`` there (``make install-extras`` builds ``.venv-extras``). This
module imports s3prl only when a model is loaded; importing s3prl downloads nothing.

What the upstream returns: s3prl's ``hidden_states`` (for HuBERT / WavLM: the input of every
transformer layer, then the encoder's output, the last one) as emorl's ``hidden_states``, and
s3prl's own valid lengths (``hs_len = (samples - 1) // stride + 1``: a 1 s clip has 50 frames,
one more than the transformers backend gives, s3prl repeating the last convolution frame).
``normalize`` is off (SUPERB's setting). Every hidden state must have the same width and stride.

``batching``: ``per_clip`` runs each clip alone (EmoBox's extraction), ``padded`` one forward
over the batch (s3prl's wavs + wavs_len: faster, but a clip's frames may then depend on the
padding: group-normed convolution encoders (HuBERT / WavLM base) normalise over the padded
sequence, and the frame that s3prl counts past the last full convolution window sees padding
instead of a repeated frame). ``auto`` (default) is ``per_clip``: s3prl's upstreams are too many
to prove each padding-safe. Clips shorter than 0.05 s (s3prl's minimum) are zero-padded to it.

``identity``: for a local checkpoint, a hash of the name, the file's (or folder's files') name,
size, modification time and first and last 64 KiB, the dtype, the s3prl version and
:data:`FEATURE_VERSION`, read without loading the model; for ``s3prl:NAME`` the model is loaded
(once per process) and its weights hashed. ``dims`` loads the model too (once per process).

Tiny checkpoints for tests and smoke runs: :func:`build_tiny_s3prl` (``emorl zoo tiny
s3prl:hubert_local --out DIR``) writes a randomly initialised HuBERT or WavLM checkpoint in the
format s3prl's ``hubert_local`` / ``wavlm_local`` read (what s3prl's converter writes for HuBERT,
the official checkpoint layout for WavLM).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from emorl.upstreams.base import (
    DTYPES,
    Batching,
    Upstream,
    UpstreamOutput,
    check_options,
    digest_file,
    state_dict_digest,
)
from emorl.upstreams.hf import UpstreamLoadError

log = logging.getLogger(__name__)

#: Bump when the meaning of extracted features changes (cache folders are keyed on it).
FEATURE_VERSION = 1
PREFIX = "s3prl:"
#: hub entries that take a checkpoint (``path_or_url``); the others bring their own.
CKPT_SUFFIXES = ("_local", "_url", "_custom", "_gdriveid")
#: s3prl's shortest input (``MIN_SECOND`` x 16 kHz); shorter clips are zero-padded to it.
MIN_SAMPLES = 800
SAMPLE_RATE = 16_000
INSTALL_HINT = (
    "install the s3prl extra into an environment with torch / torchaudio <= 2.8 "
    "(`make install-extras` builds .venv-extras; or pip install torch==2.8.0 torchaudio==2.8.0 "
    "'emorl[s3prl]')"
)



class S3PRLError(UpstreamLoadError):
    """An s3prl specification that cannot be loaded, with the reason and the fix."""


# -- the specification ----------------------------------------------------------------------------
@dataclass(frozen=True)
class S3PRLSpec:
    """``s3prl:NAME[:PATH_OR_URL]`` parsed."""

    name: str
    path: str | None = None

    @property
    def text(self) -> str:
        return f"{PREFIX}{self.name}" + (f":{self.path}" if self.path else "")

    @property
    def is_url(self) -> bool:
        return bool(self.path) and re.match(r"^[a-z]+://", self.path) is not None


def parse_spec(source: str | os.PathLike | S3PRLSpec) -> S3PRLSpec:
    """``"s3prl:hubert_local:/x/ckpt.pt"`` -> ``S3PRLSpec("hubert_local", "/x/ckpt.pt")``.

    The ``s3prl:`` prefix is optional here. ``~`` in the path is expanded.
    """
    if isinstance(source, S3PRLSpec):
        return source
    text = os.fspath(source)
    body = text.removeprefix(PREFIX)
    name, _, path = body.partition(":")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise S3PRLError(
            f"bad s3prl upstream {text!r}: expected s3prl:NAME or s3prl:NAME:/path/to/checkpoint "
            "(NAME from s3prl's hub, e.g. s3prl:wavlm_large or s3prl:hubert_local:/models/hubert.pt)"
        )
    path = path.strip() or None
    if path is not None and not re.match(r"^[a-z]+://", path):
        path = os.path.expanduser(path)
    return S3PRLSpec(name, path)


def needs_checkpoint(name: str) -> bool:
    """Hub entries ending in ``_local`` / ``_url`` / ``_custom`` / ``_gdriveid`` take a checkpoint."""
    return name.endswith(CKPT_SUFFIXES)


# -- s3prl itself ---------------------------------------------------------------------------------
def import_s3prl():
    """``s3prl.nn.S3PRLUpstream``, or a clear error when s3prl is missing or cannot import here."""
    s3prl_log = logging.getLogger("s3prl")
    level = s3prl_log.level
    s3prl_log.setLevel(logging.ERROR)  # "ESPnet is not installed, cannot use espnet_hubert upstream"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchaudio's backend deprecation notes, pkg_resources...
            from s3prl.nn import S3PRLUpstream
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "s3prl":
            raise S3PRLError(f"the s3prl backend needs the s3prl package: {INSTALL_HINT}") from err
        raise S3PRLError(f"s3prl cannot import here ({err}): {INSTALL_HINT}") from err
    except (ImportError, AttributeError, OSError) as err:
        raise S3PRLError(
            f"s3prl cannot import with this torch / torchaudio ({type(err).__name__}: {err}): "
            f"s3prl 0.4.18 needs torch / torchaudio <= 2.8; {INSTALL_HINT}"
        ) from err
    finally:
        s3prl_log.setLevel(level)
    return S3PRLUpstream


def s3prl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s3prl")
    except PackageNotFoundError:
        return "none"


def available_names() -> list[str]:
    """Every hub name s3prl knows (``S3PRLUpstream.available_names()``)."""
    return sorted(import_s3prl().available_names())


def local_entry(name: str, names: list[str] | None = None) -> str:
    """The hub entry of ``name``'s family that takes a local checkpoint (``hubert_large_ll60k`` -> ``hubert_local``)."""
    names = available_names() if names is None else names
    parts = name.split("_")
    for end in range(len(parts), 0, -1):
        candidate = "_".join(parts[:end]) + "_local"
        if candidate in names:
            return candidate
    return "<family>_local"


def check_spec(spec: S3PRLSpec) -> None:
    """Errors for unknown names, missing checkpoints and checkpoints a name would ignore."""
    names = available_names()
    if spec.name not in names:
        import difflib

        close = difflib.get_close_matches(spec.name, names, n=5, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise S3PRLError(
            f"unknown s3prl upstream {spec.name!r}{hint}: see s3prl.nn.S3PRLUpstream.available_names() "
            f"({len(names)} names; `python -c \"from emorl.upstreams.s3prl_backend import available_names; "
            "print(available_names())\"`)"
        )
    if needs_checkpoint(spec.name):
        if spec.path is None:
            raise S3PRLError(
                f"s3prl upstream {spec.name!r} takes a checkpoint: write s3prl:{spec.name}:/path/to/checkpoint.pt"
            )
        if not spec.is_url and not os.path.exists(spec.path):
            raise S3PRLError(
                f"s3prl checkpoint {spec.path} not found (upstream {spec.text!r}); download the checkpoint "
                "on a machine with a network and pass its local path"
            )
    elif spec.path is not None:
        raise S3PRLError(
            f"s3prl upstream {spec.name!r} fetches its own checkpoint and would ignore {spec.path!r}: "
            f"for a local checkpoint use its family's entry that takes one: "
            f"s3prl:{local_entry(spec.name, names)}:{spec.path}"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_s3prl_model(spec: S3PRLSpec | str):
    """The ``S3PRLUpstream`` of a specification, on the CPU in float32 (checked, clear errors)."""
    spec = parse_spec(spec)
    S3PRLUpstream = import_s3prl()
    check_spec(spec)
    try:
        with _quiet():
            return S3PRLUpstream(spec.name, path_or_url=spec.path)
    except S3PRLError:
        raise
    except Exception as err:  # s3prl raises anything; say what to do
        if _is_download_failure(err) and (spec.path is None or spec.is_url):
            raise S3PRLError(
                f"s3prl could not download the checkpoint of {spec.text!r} (no network?): "
                f"{type(err).__name__}: {err}. Download that checkpoint on a machine with a network "
                "(its URL is in s3prl's hub entry, s3prl/upstream/<family>/hubconf.py; s3prl caches "
                "downloads under ~/.cache/s3prl/download), copy it here and pass the file: "
                f"upstream: s3prl:{local_entry(spec.name)}:/path/to/checkpoint.pt"
            ) from err
        raise S3PRLError(f"s3prl cannot load {spec.text!r}: {type(err).__name__}: {err}") from err


def _is_download_failure(err: BaseException) -> bool:
    """A network error anywhere in the exception chain (urllib, requests, huggingface_hub, sockets)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        module = type(err).__module__.split(".")[0]
        if module in ("urllib", "urllib3", "requests", "huggingface_hub", "http", "socket", "gdown"):
            return True
        if isinstance(err, (ConnectionError, TimeoutError)) or type(err).__name__ in ("URLError", "gaierror"):
            return True
        err = err.__cause__ or err.__context__
    return False


# -- identity and dims ----------------------------------------------------------------------------
#: what loading a model taught, per process: key (see _facts_key) -> {"num_layers", "hidden_dim",
#: "stride"} and, for a checkpoint that s3prl fetches itself, "digest" (a hash of the weights)
_FACTS: dict[str, dict] = {}


def _model_facts(model) -> dict:
    sizes, rates = list(model.hidden_sizes), list(model.downsample_rates)
    if len(set(sizes)) != 1 or len(set(rates)) != 1:
        raise S3PRLError(
            f"s3prl upstream has hidden states of several widths {sorted(set(sizes))} or strides "
            f"{sorted(set(rates))}: emorl needs one width and one frame rate for all of them"
        )
    return {"num_layers": int(model.num_layers) - 1, "hidden_dim": int(sizes[0]), "stride": int(rates[0])}


def _facts_key(spec: S3PRLSpec) -> str:
    """The spec, plus the checkpoint file's identity for a local one (so a replaced file is re-read)."""
    if spec.path is not None and not spec.is_url:
        return f"{spec.text}|{s3prl_identity(spec)}"
    return spec.text


def _facts(spec: S3PRLSpec, digest: bool = False) -> dict:
    key = _facts_key(spec)
    facts = _FACTS.get(key)
    if facts is None or (digest and "digest" not in facts):
        model = build_s3prl_model(spec)
        facts = _model_facts(model)
        if digest or spec.path is None or spec.is_url:
            facts["digest"] = state_dict_digest(model)
        _FACTS[key] = facts
    return facts


def _checkpoint_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file())


def s3prl_identity(source: str | S3PRLSpec, dtype: str = "float32") -> str:
    """The cache identity of an s3prl specification (see the module docstring)."""
    spec = parse_spec(source)
    check_options(dtype, "auto")
    digest = hashlib.sha1()
    digest.update(f"v{FEATURE_VERSION}|s3prl {s3prl_version()}|{dtype}|{spec.name}|".encode())
    if spec.path is not None and not spec.is_url:
        path = Path(spec.path)
        if not path.exists():
            raise S3PRLError(f"s3prl checkpoint {path} not found (upstream {spec.text!r})")
        for file in _checkpoint_files(path):
            digest_file(digest, file, str(file.relative_to(path)) if file != path else None)
    else:  # s3prl fetches the weights: hash them (the model is loaded, once per process)
        digest.update(f"{spec.path or ''}|{_facts(spec, digest=True)['digest']}".encode())
    return f"s3prl-{spec.name}-{digest.hexdigest()[:16]}"


def s3prl_dims(source: str | S3PRLSpec) -> tuple[int, int]:
    """``(num_layers, hidden_dim)``: hidden states - 1 and their width (loads the model, once per process)."""
    facts = _facts(parse_spec(source))
    return facts["num_layers"], facts["hidden_dim"]


# -- the upstream ---------------------------------------------------------------------------------
class S3PRLBackendUpstream(Upstream):
    """A frozen s3prl upstream.

    Args:
        source: ``s3prl:NAME`` or ``s3prl:NAME:/path/to/checkpoint`` (see the module docstring).
        name: display name (default: the specification).
        dtype: compute dtype (``float32``, ``float16``, ``bfloat16``); features are returned as
            float32. Part of :attr:`identity`.
        batching: ``auto`` (= ``per_clip``), ``padded`` or ``per_clip`` (see the module docstring).
    """

    def __init__(self, source: str | S3PRLSpec, name: str | None = None, dtype: str = "float32",
                 batching: Batching = "auto") -> None:
        super().__init__()
        check_options(dtype, batching)
        self.spec = parse_spec(source)
        self.name = name or self.spec.text
        self.dtype_name = dtype
        self.model = build_s3prl_model(self.spec)
        facts = _model_facts(self.model)
        cached = _FACTS.setdefault(_facts_key(self.spec), {})
        cached.update(facts)
        if self.spec.path is None or self.spec.is_url:
            cached.setdefault("digest", state_dict_digest(self.model))
        self.identity = s3prl_identity(self.spec, dtype)
        self.num_layers = facts["num_layers"]
        self.hidden_dim = facts["hidden_dim"]
        self.stride = facts["stride"]
        self.sample_rate = SAMPLE_RATE
        self.frame_rate = SAMPLE_RATE / self.stride
        self.batching = "per_clip" if batching == "auto" else batching
        self.model.to(DTYPES[dtype])
        self.freeze()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, identity={self.identity!r}, batching={self.batching!r}"

    def _first_tensor(self) -> Tensor | None:
        """A parameter (or buffer) of the model: where it lives, in what dtype (None: fbank, mfcc...)."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.is_floating_point():
                return tensor
        return None

    @property
    def device(self) -> torch.device:
        tensor = self._first_tensor()
        return tensor.device if tensor is not None else torch.device("cpu")

    def output_lengths(self, wave_lengths: Tensor) -> Tensor:
        """Valid frames of clips of these lengths (samples), s3prl's rule, after the minimum-length padding."""
        padded = wave_lengths.long().clamp(min=MIN_SAMPLES)
        return torch.div(padded - 1, self.stride, rounding_mode="floor") + 1

    @torch.no_grad()
    def _run(self, wave: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """One s3prl forward: hidden states (B, T', D) and valid frames (B,)."""
        tensor = self._first_tensor()
        dtype = tensor.dtype if tensor is not None else torch.float32
        with _quiet():
            hidden, hidden_lengths = self.model(wave.to(self.device, dtype), lengths.to(self.device))
        if len(hidden) != self.num_layers + 1:
            raise RuntimeError(f"{self.name}: {len(hidden)} hidden states, expected {self.num_layers + 1}")
        return list(hidden), hidden_lengths[-1].long().cpu()

    def forward(self, wave: Tensor, wave_lengths: Tensor) -> UpstreamOutput:
        """``wave`` (B, T) zero-padded 16 kHz, ``wave_lengths`` (B,) -> all hidden states, valid frames."""
        wave_lengths = wave_lengths.to(torch.long).cpu()
        wave = wave.detach().float()
        clip_lengths = wave_lengths.clamp(min=MIN_SAMPLES)
        width = max(int(clip_lengths.max()), wave.shape[1])
        if width > wave.shape[1]:
            wave = torch.nn.functional.pad(wave, (0, width - wave.shape[1]))
        # zero everything past each clip's length (the short clips' padding up to MIN_SAMPLES included)
        mask = torch.arange(width)[None, :] < wave_lengths[:, None]
        wave = wave * mask.to(wave.device, wave.dtype)
        lengths = self.output_lengths(wave_lengths)
        max_frames = max(int(lengths.max()), 1)
        if self.batching == "padded" or len(wave) == 1:
            hidden, got = self._run(wave[:, : int(clip_lengths.max())], clip_lengths)
            hidden = [h[:, :max_frames].float() for h in hidden]
            lengths = got
        else:
            hidden = None
            for i, n in enumerate(clip_lengths.tolist()):
                states, got = self._run(wave[i: i + 1, :n], clip_lengths[i: i + 1])
                if hidden is None:
                    hidden = [s.new_zeros(len(wave), max_frames, self.hidden_dim, dtype=torch.float32) for s in states]
                frames = min(int(got[0]), max_frames)
                lengths[i] = frames
                for layer, state in enumerate(states):
                    hidden[layer][i, :frames] = state[0, :frames].float()
        return UpstreamOutput(hidden_states=hidden, lengths=lengths.to(hidden[0].device))


# -- tiny checkpoints -----------------------------------------------------------------------------
#: a 7-block convolution encoder with the real models' kernels and strides (320 samples / frame), 32 wide
TINY_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
#: tiny sizes shared by both families; the switches are the large checkpoints' (layer-normed conv
#: encoder, pre-LN transformer, waveform normalisation)
TINY_SIZES = {
    "extractor_mode": "layer_norm", "layer_norm_first": True, "conv_feature_layers": TINY_CONV,
    "conv_bias": False, "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2, "conv_pos": 16, "conv_pos_groups": 4,
}
TINY_KINDS = ("hubert", "wavlm")


def tiny_kind(kind: str) -> str:
    """``hubert`` / ``hubert_local`` / ``s3prl:hubert_local`` -> ``hubert`` (same for ``wavlm``)."""
    text = kind.removeprefix(PREFIX).split(":")[0].removesuffix("_local")
    if text not in TINY_KINDS:
        raise S3PRLError(f"no tiny s3prl checkpoint for {kind!r}: choose one of {', '.join(TINY_KINDS)} "
                         f"(loaded as s3prl:{TINY_KINDS[0]}_local:PATH)")
    return text


def build_tiny_s3prl(kind: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny randomly initialised HuBERT or WavLM checkpoint that ``s3prl:<kind>_local:PATH`` loads.

    ``out`` is the file to write, or a folder (then ``<folder>/tiny_<kind>.pt``). HuBERT: the dict
    s3prl's ``load_converted_model`` reads (``task_cfg``, ``model_cfg``, ``model_weight``,
    ``dictionaries_symbols``); WavLM: the official layout (``cfg``, ``model``). Built with s3prl's
    own model classes (the s3prl extra is needed); deterministic for a given ``seed``.
    """
    kind = tiny_kind(kind)
    import_s3prl()
    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".ckpt"):
        out = out / f"tiny_{kind}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        if kind == "hubert":
            from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

            task_cfg = {"label_rate": 50.0, "sample_rate": SAMPLE_RATE, "normalize": True}
            model_cfg = {**TINY_SIZES, "label_rate": 50.0, "final_dim": 16}
            symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(8)]]
            model = HubertModel(HubertConfig(**model_cfg), HubertPretrainingConfig(**task_cfg), symbols)
            checkpoint = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                          "dictionaries_symbols": symbols}
        else:
            from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

            cfg = {**TINY_SIZES, "normalize": True, "relative_position_embedding": True, "num_buckets": 32,
                   "max_distance": 128, "gru_rel_pos": True}
            model = WavLM(WavLMConfig(cfg))
            checkpoint = {"cfg": cfg, "model": model.state_dict()}
        torch.save(checkpoint, out)
    return out


# -- the backend protocol (see emorl.upstreams.BACKENDS) ------------------------------------------
def detect(path: str | Path) -> bool:
    """Never: s3prl upstreams are named explicitly (``s3prl:...``), never guessed from a folder."""
    return False


def load(source: str, name: str | None = None, dtype: str = "float32",
         batching: Batching = "auto") -> S3PRLBackendUpstream:
    return S3PRLBackendUpstream(source, name=name, dtype=dtype, batching=batching)


def identity(source: str, dtype: str = "float32") -> str:
    return s3prl_identity(source, dtype)


def dims(source: str) -> tuple[int, int]:
    return s3prl_dims(source)


def build_tiny(card, out: Path, seed: int = 0) -> Path:
    """s3prl upstreams have no zoo card; see :func:`build_tiny_s3prl`."""
    raise S3PRLError(
        "s3prl upstreams have no zoo card: build a tiny s3prl checkpoint with "
        "`emorl zoo tiny s3prl:hubert_local --out DIR` (or s3prl:wavlm_local), i.e. build_tiny_s3prl()"
    )
