"""The acoustic baseline end to end through the `emorl` command, and that it learns."""

import json

import numpy as np
import pytest
import yaml

from emorl.cli import main
from tests.corpus_factory import make_tiny_corpus


def _config(tmp_path, data_dir, **data):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 25, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": "tiny"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/ua", "mode": "max"}}],
        },
        "model": {"class_path": "emorl.models.acoustic.AcousticBaseline",
                  "init_args": {"hidden_dim": 32, "dropout": 0.0, "lr": 0.01}},
        "data": {"data_dir": str(data_dir), "batch_size": 8, "val_fraction": 0.25, **data},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_test_predict_through_the_cli(tmp_path, capsys):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=3)
    config = _config(tmp_path, corpus.root)
    main(["fit", "--config", str(config)])
    version = tmp_path / "runs" / "tiny" / "version_0"
    assert (version / "config.yaml").is_file()
    ckpt = next((version / "checkpoints").glob("*.ckpt"))

    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert "tiny" in out and "UA" in out.upper()
    test_version = tmp_path / "runs" / "tiny" / "version_1"
    events = list(test_version.glob("events.out.tfevents.*"))
    assert events, "the test run logs to its own TensorBoard version"
    predictions = [json.loads(l) for l in (test_version / "predictions" / "tiny.jsonl").read_text().splitlines()]
    assert len(predictions) == 12  # 1 test speaker x 4 labels x 3
    # tones of distinct pitch per label are trivially separable: the held-out speaker is right
    correct = np.mean([p["label"] == p["prediction"] for p in predictions])
    assert correct >= 0.9

    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt)])
    written = (tmp_path / "runs" / "tiny" / "version_2" / "predictions.jsonl").read_text().splitlines()
    first = json.loads(written[0])
    assert first["test_set"] == "tiny" and first["emotion"] in corpus.label_set.classes
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-5


def test_the_confusion_figure_reaches_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    corpus = make_tiny_corpus(tmp_path / "c")
    config = _config(tmp_path, corpus.root)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    ckpt = next((tmp_path / "runs" / "tiny" / "version_0" / "checkpoints").glob("*.ckpt"))
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    acc = EventAccumulator(str(tmp_path / "runs" / "tiny" / "version_1"), size_guidance={"images": 0})
    acc.Reload()
    assert "test/tiny/confusion" in acc.Tags()["images"]
    assert "test/tiny/ua" in acc.Tags()["scalars"]


def test_unknown_command_and_help(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for word in ("fit", "validate", "test", "predict", "data prepare", "import-emobox", "track2",
                 "synth", "check", "demo"):
        assert word in out
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
