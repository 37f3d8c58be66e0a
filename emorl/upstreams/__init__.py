"""Frozen speech encoders behind one interface (:class:`Upstream`), their loader and feature cache.

    from emorl.upstreams import load_upstream
    upstream = load_upstream("wavlm-large")          # a zoo name or a local model folder
    out = upstream(wave, wave_lengths)               # out.hidden_states, out.lengths

Backends (:data:`BACKENDS`): ``hf`` (transformers: HuBERT, WavLM, data2vec-audio, Whisper
encoder), ``data2vec2`` (emotion2vec / data2vec 2.0, native port), ``s3prl``. See ``docs/zoo.md``.
"""

from __future__ import annotations

import os

from emorl.upstreams.base import (
    LayerSelection,
    Upstream,
    UpstreamOutput,
    lengths_to_mask,
    masked_mean,
    select_layer,
    state_dict_digest,
)

__all__ = [
    "LayerSelection",
    "Upstream",
    "UpstreamOutput",
    "lengths_to_mask",
    "load_upstream",
    "masked_mean",
    "select_layer",
    "state_dict_digest",
    "upstream_dims",
    "upstream_identity",
    "UpstreamLoader",
    "BACKENDS",
    "backend_module",
    "resolve_upstream",
]


#: backend name -> module implementing it. Each module provides ``detect(path) -> bool`` (does
#: this folder hold one of its models?), ``load(source, name, dtype, batching) -> Upstream``,
#: ``identity(source, dtype) -> str`` and ``dims(source) -> (num_layers, hidden_dim)`` (both
#: without loading the weights) and ``build_tiny(card, out, seed) -> Path``. ``source`` is a
#: local folder for folder backends, the raw specification for ``s3prl`` (``s3prl:NAME`` or
#: ``s3prl:NAME:/path/to/checkpoint``).
BACKENDS = {
    "hf": "emorl.upstreams.hf",
    "data2vec2": "emorl.upstreams.data2vec2",
    "s3prl": "emorl.upstreams.s3prl_backend",
}
#: Backends whose ``detect`` is asked about an unknown folder, in this order (``hf`` last).
DETECT_ORDER = ("data2vec2", "hf")
S3PRL_PREFIX = "s3prl:"


def backend_module(backend: str):
    """The module implementing ``backend`` (imported on first use)."""
    import importlib

    if backend not in BACKENDS:
        raise ValueError(f"unknown upstream backend {backend!r} (known: {', '.join(BACKENDS)})")
    try:
        return importlib.import_module(BACKENDS[backend])
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("emorl"):
            raise ValueError(f"upstream backend {backend!r} is not implemented in this version of emorl") from err
        raise


def resolve_upstream(name_or_path: str | os.PathLike) -> tuple[str, object]:
    """``(backend, source)`` for a zoo name, a hub id of the zoo, a local folder or ``s3prl:...``."""
    from emorl.zoo import card_for_path, list_cards, resolve

    text = os.fspath(name_or_path)
    if text.startswith(S3PRL_PREFIX):
        return "s3prl", text
    for card in list_cards():
        if text in (card.name, card.hub_id):
            return card.backend, resolve(text)
    path = resolve(text)
    card = card_for_path(path)
    if card is not None:
        return card.backend, path
    for backend in DETECT_ORDER:
        try:
            module = backend_module(backend)
        except ValueError:
            continue
        if module.detect(path):
            return backend, path
    return "hf", path


def load_upstream(name_or_path: str | os.PathLike, dtype: str = "float32", batching: str = "auto") -> Upstream:
    """Load a frozen upstream from a zoo name, a local folder or ``s3prl:...`` (nothing is downloaded)."""
    backend, source = resolve_upstream(name_or_path)
    text = os.fspath(name_or_path)
    name = text if not os.path.exists(text) else None
    return backend_module(backend).load(source, name=name, dtype=dtype, batching=batching)


def upstream_identity(name_or_path: str | os.PathLike, dtype: str = "float32") -> str:
    """The identity :func:`load_upstream` would give, read from the files only (weights not loaded)."""
    backend, source = resolve_upstream(name_or_path)
    return backend_module(backend).identity(source, dtype)


def upstream_dims(name_or_path: str | os.PathLike) -> tuple[int, int]:
    """``(num_layers, hidden_dim)`` of an upstream, from its config (the weights are not loaded)."""
    backend, source = resolve_upstream(name_or_path)
    return backend_module(backend).dims(source)


class UpstreamLoader:
    """Loads an upstream on first call, once per process; picklable (the model is not pickled).

    The probe hands one to its collator, so a DataLoader worker that must extract a clip loads its
    own copy (on the CPU) instead of receiving the model through a pipe.

    Args:
        name_or_path: a zoo name or a local model folder.
        dtype / batching: see :class:`emorl.upstreams.hf.HFUpstream`.
        device: where to put the model once loaded (``None``: CPU); reset to ``None`` when pickled.
    """

    def __init__(self, name_or_path: str | os.PathLike, dtype: str = "float32", batching: str = "auto",
                 device: str | None = None) -> None:
        self.name_or_path = os.fspath(name_or_path)
        self.dtype = dtype
        self.batching = batching
        self.device = device
        self._upstream: Upstream | None = None
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """The upstream's identity, from its files (the weights are not loaded)."""
        if self._identity is None:
            self._identity = upstream_identity(self.name_or_path, self.dtype)
        return self._identity

    @property
    def loaded(self) -> bool:
        return self._upstream is not None

    def __call__(self) -> Upstream:
        if self._upstream is None:
            self._upstream = load_upstream(self.name_or_path, dtype=self.dtype, batching=self.batching)
        if self.device is not None:
            self._upstream.to(self.device)
        return self._upstream

    def release(self) -> None:
        """Drop the loaded model (frees its memory once nothing else holds it)."""
        self._upstream = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_upstream"] = None
        state["device"] = None
        return state
