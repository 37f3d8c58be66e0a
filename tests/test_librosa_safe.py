"""emorl.librosa_safe: processes that start together compile librosa's numba kernels one at a time.

Without the lock, two processes compiling at once left a cache that crashed every later process
(a segmentation fault; in 1 to 2 of 3 tries here).
"""

import os
import subprocess
import sys
import tempfile
import time

import pytest
from filelock import FileLock

from emorl import librosa_safe

MEASURE_A_TONE = (
    "import numpy as np\n"
    "from emorl.prosody import measure_prosody\n"
    "tone = 0.3 * np.sin(2 * np.pi * 200.0 * np.arange(16000) / 16000)\n"
    "print(measure_prosody(tone, 16000).pitch_mean_hz)\n"
)


def _env(tmp_path) -> dict[str, str]:
    """A fresh numba cache and a lock file of the test's own (TMPDIR)."""
    return {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "TMPDIR": str(tmp_path)}


def _start(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("round_", [1, 2])  # without the lock: 1 to 2 crashes in 3 rounds here
def test_processes_measuring_at_once_leave_a_cache_later_processes_can_load(tmp_path, round_):
    env = _env(tmp_path)
    together = [_start(MEASURE_A_TONE, env) for _ in range(2)]
    finished = [process.communicate(timeout=600) + (process.returncode,) for process in together]
    after = _start(MEASURE_A_TONE, env)
    finished.append(after.communicate(timeout=600) + (after.returncode,))
    for out, err, code in finished:
        assert code == 0, err[-2000:]  # -11: a segmentation fault loading a corrupt cache
        assert float(out) == pytest.approx(200.0, rel=0.02)
    assert list((tmp_path / "numba").rglob("*.nbi"))  # the kernels really went through the on-disk cache


def test_the_first_import_waits_for_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lock = FileLock(str(librosa_safe.lock_path()))
    assert librosa_safe.lock_path().parent == tmp_path
    with lock:
        child = _start("from emorl.librosa_safe import import_librosa\nimport_librosa()\nprint('imported')",
                       {**os.environ, "TMPDIR": str(tmp_path)})
        time.sleep(3.0)
        assert child.poll() is None  # still waiting for the lock
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and out.strip() == "imported", err[-2000:]


def test_a_warm_up_runs_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls = []

    def warm_up(librosa):
        calls.append(librosa.__name__)

    assert librosa_safe.import_librosa(warm_up).__name__ == "librosa"
    librosa_safe.import_librosa(warm_up)
    assert calls == ["librosa"]
    assert librosa_safe.lock_path().exists()
