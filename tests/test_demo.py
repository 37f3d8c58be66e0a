"""The main job: EMO-RL end to end on the demo corpus (`emorl demo`), and the acoustic baseline demo."""

import pytest

from emorl.demo import run_demo, run_emorl_demo
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


def test_emorl_demo_runs_sft_then_grpo_then_tests_both(demo_root, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    results = run_emorl_demo(demo_root, sft_epochs=1, grpo_steps=2)  # shortened; `emorl demo` runs the configs
    assert set(results) == {"sft_esr", "emorl_esr"}
    for scores in results.values():
        assert set(scores["ravdess"]) >= {"ua", "wa", "f1", "parse_rate"}
    table = capsys.readouterr().out
    assert "sft_esr ravdess" in table and "emorl_esr ravdess" in table
    ckpt = next((tmp_path / "runs" / "demo_emorl_esr").glob("version_*/checkpoints/last.ckpt"))
    assert ckpt.is_file() and (demo_root / "models" / "tiny-qwen2-audio" / "config.json").is_file()
    _check_demo_report(tmp_path)


def _check_demo_report(work):
    """`make demo`'s report: report.csv holds each run's logged test metrics (percent); every figure is a PNG."""
    import csv

    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = work / "reports" / "demo"
    rows = {row["run"]: row for row in csv.DictReader((report / "report.csv").open())}
    assert set(rows) == {"demo_sft_esr/version_0", "demo_emorl_esr/version_0"}
    for run, row in rows.items():
        assert row["test_set"] == "ravdess" and row["paper_table"] == ""  # the demo corpus is no paper setting
        events = EventAccumulator(str(work / "runs" / run)).Reload()
        for metric in ("ua", "wa", "f1", "parse_rate"):
            logged = events.Scalars(f"test/ravdess/{metric}")[-1].value
            assert float(row[metric]) == pytest.approx(round(100 * logged, 2), abs=0.006), (run, metric)
    assert rows["demo_emorl_esr/version_0"]["method"] == "grpo esr eswr+format_esr"
    figures = sorted(report.glob("*.png"))
    assert {p.name for p in figures} >= {"ua_by_test_set.png", "curves_demo_emorl_esr_version_0.png",
                                         "confusion_demo_sft_esr_version_0_ravdess.png"}
    for figure in figures:
        assert imread(figure).shape[0] > 100
        assert f"]({figure.name})" in (report / "report.md").read_text()
