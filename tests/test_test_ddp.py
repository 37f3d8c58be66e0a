"""``emorl test`` under DDP (2 CPU processes): a test set with fewer clips than ranks.

Evaluation sets are sharded without padding, so one rank sees no clip of a 1-clip test set; every
rank must still sync that set's metric, in the same order as the others, or the run hangs.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import REPO

pytestmark = pytest.mark.slow


def test_a_test_set_smaller_than_the_world_is_scored_on_every_rank(tmp_path):
    main = make_tiny_corpus(tmp_path / "main")  # test split: 1 speaker x 4 labels x 2 = 8 clips
    single = make_tiny_corpus(tmp_path / "single", name="single", labels=("happy",), speakers=("s1", "s5"),
                              per_speaker_label=1)  # test split: one clip
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "enable_progress_bar": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": "ddp"}}},
        "model": {"class_path": "emorl.models.acoustic.AcousticBaseline", "init_args": {"hidden_dim": 8}},
        "data": {"data_dir": str(main.root), "batch_size": 2, "test_sets": {"single": {"path": str(single.root)}}},
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "emorl", "test", "--config", str(path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"emorl test hung under DDP: {str(hung.stderr)[-2000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert "tiny" in table and "single" in table  # both sets scored and printed
    predictions = tmp_path / "runs" / "ddp" / "version_0" / "predictions"
    rows = {name: sum(len(p.read_text().splitlines()) for p in predictions.glob(f"{name}.rank*.jsonl"))
            for name in ("tiny", "single")}
    assert rows == {"tiny": 8, "single": 1}, sorted(p.name for p in predictions.iterdir())
    assert json.loads(next(predictions.glob("single.rank*.jsonl")).read_text())["label"] == "happy"
