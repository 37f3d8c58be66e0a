"""librosa, imported so that processes starting together cannot corrupt its numba cache.

librosa compiles its numba kernels when its modules are imported (``guvectorize`` with declared
signatures) or first called (``jit``), with ``cache=True``: the machine code is written beside
librosa's sources (or under ``NUMBA_CACHE_DIR``) and loaded by every later process. Two processes
compiling the same kernel at the same time write the same cache files, and the index one of them
leaves can point at the other's code: every process that loads it afterwards dies of a
segmentation fault (seen with ``emorl data prosody --workers 2`` on a fresh install, numba 0.68 /
librosa 0.11, and reproduced with two plain ``librosa.pyin`` processes).

:func:`import_librosa` imports librosa, and runs a caller's warm-up (one call of each kernel it
will use, with the same argument types), under an inter-process file lock, once per process: the
first process compiles and writes the cache alone, the others wait and load it whole. Later calls
take no lock.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from filelock import FileLock

LOCK_TIMEOUT_S = 900.0  #: longer than any compile; a stale lock file is harmless (flock is released on exit)
_done: set[str] = set()
_thread_lock = threading.Lock()


def lock_path() -> Path:
    """The lock file, per user (another user's lock file in a shared temp directory may not be writable)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"emorl-librosa-numba-{user}.lock"


def import_librosa(warm_up: Callable[[ModuleType], object] | None = None) -> ModuleType:
    """librosa, with its kernels (and ``warm_up(librosa)``'s) compiled under the lock the first time.

    Args:
        warm_up: called once per process with librosa while the lock is held; it should call
            every lazily compiled kernel the caller uses with the argument types it will use
            (e.g. :func:`librosa.pyin` on a short float32 tone). Identified by its qualified name.
    """
    key = "" if warm_up is None else f"{warm_up.__module__}.{warm_up.__qualname__}"
    if key in _done:
        return sys.modules["librosa"]
    with _thread_lock, FileLock(str(lock_path()), timeout=LOCK_TIMEOUT_S):
        if key not in _done:
            # importing librosa.sequence and librosa.util compiles their declared-signature kernels
            import librosa
            import librosa.sequence
            import librosa.util

            if warm_up is not None:
                warm_up(librosa)
            _done.add(key)
    return sys.modules["librosa"]
