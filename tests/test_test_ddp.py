"""``emorl test`` under DDP (2 CPU processes): a test set with fewer clips than ranks.

Evaluation sets are sharded without padding, so one rank sees no clip of a 1-clip test set; every
rank must still sync that set's metric, in the same order as the others, or the run hangs.
"""

import json

import pytest

from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import run_emorl

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
    done = run_emorl("test", config, tmp_path, timeout=240)  # a hang (the bug) raises TimeoutExpired
    table = done.stdout
    assert "tiny" in table and "single" in table  # both sets scored and printed
    predictions = tmp_path / "runs" / "ddp" / "version_0" / "predictions"
    rows = {name: sum(len(p.read_text().splitlines()) for p in predictions.glob(f"{name}.rank*.jsonl"))
            for name in ("tiny", "single")}
    assert rows == {"tiny": 8, "single": 1}, sorted(p.name for p in predictions.iterdir())
    assert json.loads(next(predictions.glob("single.rank*.jsonl")).read_text())["label"] == "happy"
