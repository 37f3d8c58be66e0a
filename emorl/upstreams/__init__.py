"""Frozen speech encoders behind one interface (:class:`Upstream`), their loader and feature cache.

    from emorl.upstreams import load_upstream
    upstream = load_upstream("wavlm-large")          # a zoo name or a local model folder
    out = upstream(wave, wave_lengths)               # out.hidden_states, out.lengths

Backends: ``hf`` (transformers: HuBERT, WavLM, data2vec-audio, Whisper encoder). See
``docs/zoo.md``.
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
]


def _backend_of(name_or_path: str | os.PathLike) -> str:
    from emorl.zoo import card_for_path, list_cards

    text = os.fspath(name_or_path)
    for card in list_cards():
        if text in (card.name, card.hub_id):
            return card.backend
    card = card_for_path(text)
    return card.backend if card is not None else "hf"


def load_upstream(name_or_path: str | os.PathLike, dtype: str = "float32", batching: str = "auto") -> Upstream:
    """Load a frozen upstream from a zoo name or a local folder (nothing is downloaded)."""
    from emorl.zoo import resolve

    path = resolve(name_or_path)
    backend = _backend_of(name_or_path)
    if backend != "hf":
        raise ValueError(f"{name_or_path}: backend {backend!r} is not implemented (only 'hf')")
    from emorl.upstreams.hf import HFUpstream

    name = os.fspath(name_or_path) if not os.path.exists(os.fspath(name_or_path)) else None
    return HFUpstream(path, name=name, dtype=dtype, batching=batching)


def upstream_identity(name_or_path: str | os.PathLike, dtype: str = "float32") -> str:
    """The identity :func:`load_upstream` would give, read from the files only (weights not loaded)."""
    from emorl.upstreams.hf import hf_identity
    from emorl.zoo import resolve

    return hf_identity(resolve(name_or_path), dtype)


def upstream_dims(name_or_path: str | os.PathLike) -> tuple[int, int]:
    """``(num_layers, hidden_dim)`` of an upstream, from its config (the weights are not loaded)."""
    from emorl.upstreams.hf import config_dims
    from emorl.zoo import resolve

    return config_dims(resolve(name_or_path))


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
