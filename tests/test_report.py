"""`emorl report` on run folders written as emorl writes them (no model needed: the records are made here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread
from torch.utils.tensorboard import SummaryWriter

from emorl.cli import main
from emorl.report.table import published_rows

LABELS = ["neutral", "happy", "sad", "angry"]


def make_run(root: Path, name: str, model: dict, data_dir: str, scores: dict, predictions: list[dict] | None = None,
             curves: dict | None = None) -> Path:
    """A run folder: config.yaml, test_results.json, predictions/<set>.jsonl, TensorBoard events."""
    run = root / name / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model, "data": {"data_dir": data_dir}}))
    (run / "test_results.json").write_text(json.dumps({"test_sets": scores, "checkpoint": None,
                                                       "training_run": str(run), "run_dir": str(run)}))
    if predictions:
        (run / "predictions").mkdir()
        for test_set in scores:
            (run / "predictions" / f"{test_set}.jsonl").write_text("\n".join(json.dumps(r) for r in predictions))
    if curves:
        writer = SummaryWriter(str(run))
        for tag, values in curves.items():
            for step, value in enumerate(values):
                writer.add_scalar(tag, value, step)
        writer.close()
    return run


GRPO = {"class_path": "emorl.models.grpo.GRPOLALM",
        "init_args": {"prompt_format": "esr", "rewards": [{"name": "format_esr"}, {"name": "eswr"}]}}
SFT = {"class_path": "emorl.models.sft.SFTLALM", "init_args": {"prompt_format": "ir"}}


@pytest.fixture
def runs(tmp_path):
    preds = [{"key": f"k{i}", "label": LABELS[i % 4], "prediction": LABELS[(i * 3) % 4] if i % 5 else None}
             for i in range(12)]
    grpo = make_run(tmp_path, "emorl_esr", GRPO, "data/meld",
                    {"meld": {"ua": 0.4012, "wa": 0.6, "f1": 0.38, "parse_rate": 0.9}}, preds,
                    {"train/reward": [0.1, 0.5, 0.9], "train/kl": [0.0, 0.01, 0.02], "train/accuracy": [0.2, 0.3, 0.5]})
    sft = make_run(tmp_path, "sft_ir_meld", SFT, "data/meld",
                   {"ravdess": {"ua": 0.5, "wa": 0.61, "f1": 0.5, "parse_rate": 1.0},
                    "savee": {"ua": 0.55, "wa": 0.7, "f1": None, "parse_rate": 1.0}}, preds)
    untested = tmp_path / "untested" / "version_0"
    untested.mkdir(parents=True)
    (untested / "config.yaml").write_text(yaml.safe_dump({"model": SFT}))
    return grpo, sft, untested, tmp_path / "not_a_run"


def test_report_table_holds_the_runs_numbers_beside_the_published_ones(runs, tmp_path, capsys):
    grpo, sft, untested, not_a_run = runs
    not_a_run.mkdir()
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as stop:
        main(["report", str(grpo), str(sft), str(untested), str(not_a_run), "--out", str(out)])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert f"skipped {untested}: no test_results.json" in printed
    assert f"skipped {not_a_run}: " in printed and "not an emorl run folder" in printed
    rows = list(csv.DictReader((out / "report.csv").open()))
    by_set = {(r["run"], r["test_set"]): r for r in rows}
    meld = by_set[("emorl_esr/version_0", "meld")]
    assert float(meld["ua"]) == 40.12 and float(meld["wa"]) == 60.0 and float(meld["parse_rate"]) == 90.0
    assert (meld["paper_table"], meld["paper_row"]) == ("1", "ESWR + ESR")
    assert float(meld["paper_ua"]) == 39.46 and float(meld["diff_ua"]) == pytest.approx(40.12 - 39.46)
    ravdess = by_set[("sft_ir_meld/version_0", "ravdess")]
    assert (ravdess["paper_table"], ravdess["paper_row"], ravdess["paper_wa"]) == ("2", "SFT+ IR", "59.83")
    assert ravdess["paper_ua"] == "" and by_set[("sft_ir_meld/version_0", "savee")]["f1"] == ""
    report = (out / "report.md").read_text()
    assert "| emorl_esr/version_0 |" in report and "## Skipped" in report
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"ua_by_test_set.png", "confusion_emorl_esr_version_0_meld.png",
                                      "curves_emorl_esr_version_0.png", "confusion_sft_ir_meld_version_0_savee.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
        assert f"]({png.name})" in report


def test_no_run_with_results_is_a_clear_error(runs, tmp_path, capsys):
    _, _, untested, _ = runs
    with pytest.raises(SystemExit) as stop:
        main(["report", str(untested), "--out", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert "no run with test results" in capsys.readouterr().err


def test_published_rows_are_those_of_the_paper():
    """Every row of Tables 1-3 once: 28 + 27 + 5 settings, numbers spot-checked against the paper's text."""
    rows = published_rows()
    assert [sum(r["table"] == t for r in rows) for t in (1, 2, 3)] == [28, 27, 5]
    keys = [(r["table"], r["row"], r["train"], r["test"]) for r in rows]
    assert len(keys) == len(set(keys))
    paper = (Path(__file__).resolve().parents[2] / "shared" / "papers" / "emo-rl.txt")
    if paper.is_file():
        text = paper.read_text()
        for row in rows:
            for metric in ("ua", "wa", "f1"):
                if metric in row:
                    assert f"{row[metric]:.2f}" in text, (row, metric)
