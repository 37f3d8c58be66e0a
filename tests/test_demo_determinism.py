"""The demo's numbers do not depend on the machine's thread count or load (issue 17, point 3).

A short hearing stage and a short SFT stage of the demo run in two fresh processes: one started with
one torch / OpenMP thread, the other with four and a CPU-bound process beside it. The demo pins torch's
threads (:func:`emorl.demo.pin_threads`), so every trained weight must come out bit-identical.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.espeak]
REPO = Path(__file__).resolve().parents[1]

#: in the child: pin, a 1-epoch hearing stage on 24 clips, 2 SFT steps from it; print the weights' digests
CHILD = r"""
import hashlib, json, sys
from pathlib import Path
import torch
from emorl import demo, tiny_models
root, work = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))  # what a machine with that many cores would start with
threads_before = torch.get_num_threads()
demo.pin_threads()
rows = demo.training_rows(root / "prepared")[:24]
heard = work / "heard"
tiny_models.train_hearing(root / "model", rows, heard, epochs=1, batch_size=8, seed=3)
import os; os.chdir(work)
from emorl.lightning_cli import resolve_config
cli = demo._stage(resolve_config(demo.SFT_CONFIG), root / "prepared", heard,
                  ["--seed_everything", "3", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                   "--data.batch_size", "4"])
def digest(module):
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode()); h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
print(json.dumps({"threads_before": threads_before, "threads": torch.get_num_threads(),
                  "hearing": digest(cli.model.backbone.audio_tower), "sft": digest(cli.model)}))
"""


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory, espeak):
    from emorl.tiny_models import build_tiny

    root = tmp_path_factory.mktemp("demo_det")
    synthesize(root / "raw", sentences_per_emotion=1)
    prepare_ravdess(root / "raw", root / "prepared")
    build_tiny("qwen2-audio-7b-instruct", root / "model", seed=0)
    return root


def _run_child(root: Path, work: Path, threads: int) -> dict:
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(work), str(threads)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_short_stage_gives_the_same_weights_whatever_the_threads_and_load(small_demo, tmp_path):
    from emorl.demo import DEMO_THREADS

    quiet = _run_child(small_demo, tmp_path / "one_thread", threads=1)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a CPU-bound neighbour
    try:
        loaded = _run_child(small_demo, tmp_path / "four_threads_busy", threads=4)
    finally:
        busy.kill()
        busy.wait()
    assert (quiet["threads_before"], loaded["threads_before"]) == (1, 4)  # the two really started differently
    assert quiet["threads"] == loaded["threads"] == DEMO_THREADS
    assert quiet["hearing"] == loaded["hearing"]
    assert quiet["sft"] == loaded["sft"]
