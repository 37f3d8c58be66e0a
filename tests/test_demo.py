"""The main job: hearing, SFT, GRPO BCR + IR and EMO-RL on the demo corpus (`emorl demo`), and the acoustic baseline demo."""

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


def test_emorl_demo_runs_hearing_sft_both_grpo_rows_then_tests_all_three(demo_root, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    results = run_emorl_demo(demo_root, sft_epochs=1, grpo_steps=2, hearing_epochs=1)  # shortened
    assert set(results) == {"sft_esr", "grpo_bcr_ir", "emorl_eswr_esr", "chance"}
    for name in ("sft_esr", "grpo_bcr_ir", "emorl_eswr_esr"):
        assert set(results[name]) >= {"ua", "wa", "f1", "parse_rate"}
    assert results["chance"]["ua"] == pytest.approx(1 / 8)
    out = capsys.readouterr()
    table = out.out[out.out.index("[demo] held-out actors"):]
    for row in ("chance", "sft_esr", "grpo_bcr_ir", "emorl_eswr_esr"):
        assert row in table
    delta = results["emorl_eswr_esr"]["ua"] - results["sft_esr"]["ua"]
    assert f"{100 * delta:+.2f}" in table  # each row's difference to the SFT row
    assert "[demo] wall time: data" in out.out and "hearing" in out.out
    for noise in ("LightningCLI's args parameter", "litlogger", "in eval mode at the start of training"):
        assert noise not in out.out + out.err, noise
    ckpt = next((tmp_path / "runs" / "demo_emorl_esr").glob("version_*/checkpoints/last.ckpt"))
    assert ckpt.is_file() and (demo_root / "models" / "tiny-qwen2-audio-hears-seed0-e1" / "config.json").is_file()
    _check_demo_report(tmp_path)


def test_hearing_stage_learns_the_training_actors_emotions(demo_root, tmp_path):
    """A random audio tower hears nothing; after the hearing stage the tower's tokens tell the emotions
    of the training clips far above chance (1 / 8), and the saved model carries the trained tower."""
    import torch
    from safetensors.torch import load_file

    from emorl.demo import prepare_demo_data, training_rows
    from emorl.tiny_models import train_hearing

    prepared, model = prepare_demo_data(demo_root)
    stats = train_hearing(model, training_rows(prepared), tmp_path / "heard", epochs=8, seed=0)
    assert stats["train_acc"] > 0.5, stats
    before, after = load_file(model / "model.safetensors"), load_file(tmp_path / "heard" / "model.safetensors")
    tower = [k for k in before if ".audio_tower." in k or k.startswith("audio_tower.")]
    assert tower and any(not torch.equal(before[k], after[k]) for k in tower)
    text = [k for k in before if "language_model" in k]
    assert text and all(torch.equal(before[k], after[k]) for k in text)  # only the audio side trained


def _check_demo_report(work):
    """`make demo`'s report: report.csv holds each run's logged test metrics (percent); every figure is a PNG."""
    import csv

    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = work / "reports" / "demo"
    rows = {row["run"]: row for row in csv.DictReader((report / "report.csv").open())}
    assert set(rows) == {"demo_sft_esr/version_0", "demo_grpo_bcr_ir/version_0", "demo_emorl_esr/version_0"}
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
