import os
from pathlib import Path

import pytest


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
