"""Tiny randomly initialised stand-ins of the zoo's models (``emorl zoo tiny NAME --out DIR``).

:func:`build_tiny` writes a tiny model of a card's architecture (same config class, same
architecture switches, tiny sizes) with its feature extractor / processor, through
``save_pretrained``, so tests and smoke runs go through the very loading path real checkpoints
take. Frozen encoders are built by their backend (:mod:`emorl.upstreams`), audio-language models
by :mod:`emorl.lalm.tiny`. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from emorl.zoo import load_card


def build_tiny(name: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny randomly initialised model of card ``name``'s architecture into ``out``.

    Same architecture and switches as the real checkpoint (``architecture_config``), tiny sizes
    (``tiny``), saved in the format the real checkpoint comes in, so it loads through the very
    same path (for ``hf``: ``save_pretrained`` of the hub's ``checkpoint_class`` plus its feature
    extractor). The card's backend builds it. Deterministic for a given ``seed``; returns ``out``.
    """
    card = load_card(name)
    if card.kind == "textlm":  # its card only carries published sizes (emorl plan)
        raise ValueError(f"{name} is a text LM card (sizes for `emorl plan`): no tiny stand-in is built for it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if card.kind == "lalm":  # audio-language models: emorl.lalm.tiny (backend = family)
        from emorl.lalm.tiny import build_tiny as build_tiny_lalm

        return build_tiny_lalm(card, out, seed)
    from emorl.upstreams import backend_module

    return backend_module(card.backend).build_tiny(card, out, seed)


def tiny_main(name: str, out: str | os.PathLike, seed: int = 0) -> int:
    """Build the tiny stand-in of ``name`` into ``out`` and say how to use it."""
    if name.startswith("s3prl:"):  # s3prl:hubert_local / s3prl:wavlm_local: a checkpoint file
        from emorl.upstreams.s3prl_backend import build_tiny_s3prl, tiny_kind

        path = build_tiny_s3prl(name, out, seed=seed)
        print(f"wrote a tiny random {name} to {path}; use it as `upstream: s3prl:{tiny_kind(name)}_local:{path}`")
        return 0
    path = build_tiny(name, out, seed=seed)
    if load_card(name).kind == "lalm":
        print(f"wrote a tiny random {name} to {path}; load it with emorl.lalm.load_backbone({str(path)!r}) "
              "or give the folder as the model of an SFT / GRPO / zero-shot config")
        return 0
    print(f"wrote a tiny random {name} to {path}; use it as `upstream: {path}` in a probe config")
    return 0
