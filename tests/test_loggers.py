"""Answer samples and confusion figures reach Weights & Biases (offline) and the CSV logger too."""

from __future__ import annotations

import json

import pytest
import yaml

from emorl.cli import main
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import REPO, tiny_model_dir

pytest.importorskip("wandb")
pytestmark = pytest.mark.slow


def test_wandb_offline_and_csv_loggers_get_the_answer_table_and_confusion_figure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    corpus = make_tiny_corpus(tmp_path / "corpus", per_speaker_label=1)
    config = yaml.safe_load((REPO / "configs/lalm/qwen2_audio_zeroshot_direct.yaml").read_text())
    config["trainer"].update({"accelerator": "cpu", "enable_progress_bar": False, "logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "zs"}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"save_dir": str(tmp_path), "project": "emorl-test", "offline": True}},
    ]})
    config["model"]["init_args"].update({"model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32",
                                        "max_new_tokens": 4, "answers_to_log": 3})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0})
    (tmp_path / "zs.yaml").write_text(yaml.safe_dump(config))
    main(["test", "--config", str(tmp_path / "zs.yaml")])

    run = tmp_path / "runs" / "zs" / "version_0"  # the CSV logger's run folder is the run folder
    assert (run / "test_results.json").is_file() and (run / "predictions" / "tiny.jsonl").is_file()
    metrics = (run / "metrics.csv").read_text()
    assert "test/tiny/ua" in metrics
    answers = (run / "text" / "test_tiny_answers.md").read_text()
    assert "| key | label | prediction | answer |" in answers and answers.count("\n| ") >= 4
    figure = run / "figures" / "test_tiny_confusion-step0.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"

    offline = next((tmp_path / "wandb").glob("offline-run-*"))
    media = offline / "files" / "media"
    tables = list(media.rglob("*.table.json"))
    images = list(media.rglob("*.png"))
    assert tables and images, sorted(str(p) for p in offline.rglob("*"))[:30]
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["key", "label", "prediction", "answer"] and len(table["data"]) == 3
