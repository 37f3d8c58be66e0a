"""The main job: the acoustic baseline learns emotion from the demo corpus on unseen actors."""

import pytest

from emorl.commands import run_demo
from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.espeak]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, espeak):
    root = tmp_path_factory.mktemp("demo")
    synthesize(root / "raw", sentences_per_emotion=2)
    prepare_ravdess(root / "raw", root / "prepared")
    return root


def test_demo_baseline_is_well_above_chance_on_held_out_actors(demo_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # runs/ goes here
    results = run_demo(demo_root, max_epochs=40)
    scores = results["ravdess"]
    chance = 1 / 8
    assert scores["ua"] > 3 * chance, scores
    assert scores["wa"] > 3 * chance, scores
    assert scores["parse_rate"] == 1.0
    assert (tmp_path / "runs" / "acoustic_demo").is_dir()
