"""Loading checkpoints a user is handed without unpickling code: ``torch.load(weights_only=True)``.

A ``torch.save`` file is a pickle: fully unpickled, it may call any function it
names (a crafted file can run a shell command). emorl loads every checkpoint with
``weights_only=True``, which rebuilds tensors and plain containers only, plus, where a published
checkpoint needs them, a short list of classes allowed by name for that one load
(:func:`safe_torch_load`, ``torch.serialization.safe_globals``; never added for the whole process).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def fairseq_safe_globals() -> list:
    """What fairseq checkpoints (data2vec 2.0, emotion2vec) pickle besides tensors and plain containers.

    Their training state holds numpy scalars and arrays (the meters' values) and older files an
    ``argparse.Namespace`` as ``args``. None of these runs code of the file's choosing: numpy
    rebuilds numbers and arrays from bytes and a dtype, a Namespace sets attributes.
    """
    import argparse

    import numpy as np

    allowed: list = [argparse.Namespace, np.ndarray, np.dtype]
    allowed += [type(np.dtype(code)) for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "?")]
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2 spellings
        allowed += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    return allowed


def safe_torch_load(file: str | Path, allowed: Sequence = (), **kwargs: Any) -> Any:
    """``torch.load(file, weights_only=True, **kwargs)`` with ``allowed`` globals for this load only.

    Raises ``pickle.UnpicklingError`` (nothing of the file run) when it pickles anything else.
    """
    with torch.serialization.safe_globals(list(allowed)):
        return torch.load(file, weights_only=True, **kwargs)


def refused_globals(file: str | Path, err: Exception) -> str:
    """What a ``weights_only`` load refused in ``file`` (for an error message)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # an old (non-zip) file: the loader's own message names the first one
        names = []
    if names:
        return ", ".join(names)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    told = [line for line in lines if "Unsupported" in line] or lines[-1:]
    return told[0][:300] if told else type(err).__name__
