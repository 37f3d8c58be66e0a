import os
from pathlib import Path

import pytest

#: what Lightning's process launcher writes into ``os.environ`` of the process that runs a Trainer under
#: DDP or ModelParallelStrategy, one device included. Left behind in the pytest process by an in-process
#: run, they reach every later ``emorl fit`` subprocess, which then takes itself for an externally
#: launched rank (LOCAL_RANK is set), starts no other rank and waits for it until the test's timeout.
LAUNCHER_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK",
                        "PL_GLOBAL_SEED")


@pytest.fixture(autouse=True)
def _restore_launcher_environment():
    """Each test ends with the launcher's variables as it found them."""
    before = {name: os.environ.get(name) for name in LAUNCHER_ENVIRONMENT}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real corpus metadata (``../shared/data`` beside the checkout, or ``$EMORL_SHARED_DATA``)."""
    override = os.environ.get("EMORL_SHARED_DATA")
    path = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        message = f"real corpus metadata {path} not found (../shared/data not found; set EMORL_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def espeak() -> str:
    """Path of espeak-ng; skip without it, except in CI where it must be installed."""
    import shutil

    path = shutil.which("espeak-ng")
    if path is None:
        message = "espeak-ng is not installed (make system-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_speech():
    """The real recordings of ``tests/real_speech.py``; skip without them, except in CI (make system-deps)."""
    from tests import real_speech as speech

    missing = speech.missing_files()
    if missing:
        message = (f"real speech recordings not installed ({len(missing)} file(s) missing, e.g. {missing[0]}): "
                   f"apt-get install {speech.PACKAGES.replace(' and ', ' ')} (make system-deps)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return speech
