"""No pickle from files a user is handed: checkpoints load with weights_only=True, a payload never runs."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from emorl.tiny_models import build_tiny
from emorl.safe_load import fairseq_safe_globals, safe_torch_load
from emorl.upstreams import data2vec2
from emorl.upstreams.data2vec2 import Data2Vec2Upstream, UnsafeCheckpointError

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker`` (what a crafted checkpoint would do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.fixture(autouse=True)
def _no_real_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("EMORL_MODELS", raising=False)


@pytest.fixture(scope="module")
def fairseq_folder(tmp_path_factory) -> Path:
    """A tiny data2vec 2.0 folder in fairseq's layout (one model.pt holding cfg + model)."""
    return build_tiny("data2vec2-large", tmp_path_factory.mktemp("d2v2") / "data2vec2-large")


def _crafted(folder: Path, source: Path, marker: Path) -> Path:
    """``source``'s checkpoint plus a payload in its training state, as ``folder/model.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = torch.load(source / "model.pt", weights_only=True)
    checkpoint["extra_state"] = {"payload": Payload(marker)}
    torch.save(checkpoint, folder / "model.pt")
    return folder


def test_a_pickle_payload_is_never_executed(fairseq_folder, tmp_path):
    marker = tmp_path / "marker"
    folder = _crafted(tmp_path / "crafted", fairseq_folder, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec.*not loaded.*docs/reliability\.md"):
        data2vec2.torch_load(folder / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match="not loaded"):
        Data2Vec2Upstream(folder)
    assert data2vec2.detect(folder)  # ours to refuse with that message, not "no backend knows it"
    assert not marker.exists()


def test_the_payload_is_real(fairseq_folder, tmp_path):
    """What the safe load prevents: a full unpickle of the same file runs the payload."""
    marker = tmp_path / "marker"
    folder = _crafted(tmp_path / "crafted", fairseq_folder, marker)
    torch.load(folder / "model.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_fairseq_training_state_loads_without_trust(fairseq_folder, tmp_path):
    """numpy scalars / arrays in the meters and an argparse Namespace load with weights_only=True."""
    folder = tmp_path / "fairseq_state"
    folder.mkdir()
    checkpoint = torch.load(fairseq_folder / "model.pt", weights_only=True)
    checkpoint["args"] = argparse.Namespace(lr=[5e-4], arch="data2vec_multi")
    checkpoint["extra_state"] = {"metrics": {"train": [(0, "loss", "AverageMeter",
                                                        {"val": np.float64(1.5), "count": np.int64(3)})]},
                                 "previous_best": np.float32(0.25), "steps": np.arange(3)}
    torch.save(checkpoint, folder / "model.pt")
    with pytest.raises(Exception):  # without the allowed classes the safe loader refuses it
        torch.load(folder / "model.pt", weights_only=True)
    loaded = safe_torch_load(folder / "model.pt", fairseq_safe_globals())
    assert loaded["extra_state"]["previous_best"] == np.float32(0.25) and loaded["args"].arch == "data2vec_multi"
    upstream, reference = Data2Vec2Upstream(folder), Data2Vec2Upstream(fairseq_folder)
    for (name, value), (_, expected) in zip(upstream.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, expected), name
    # allowed for that load only: nothing of the list is left allowed for the rest of the process
    assert not [g for g in fairseq_safe_globals() if g in torch.serialization.get_safe_globals()]


def test_no_unsafe_load_in_the_package():
    """`git grep "weights_only=False" -- emorl tools` finds nothing."""
    found = subprocess.run(["git", "grep", "-l", "weights_only=False", "--", "emorl", "tools"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    assert found == [], found


def test_a_corrupt_file_is_called_corrupt_not_unsafe(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\0" * 100)
    with pytest.raises(data2vec2.Data2Vec2LoadError, match="Unsupported operand.*corrupt") as err:
        data2vec2.torch_load(tmp_path / "model.pt")
    assert not isinstance(err.value, UnsafeCheckpointError)
