"""Runs that speak (issue 18, items 5 and 6): the closing summary of fit / test / predict, the test run's
record of its checkpoint and training run, the HParams tab's method and real test metrics, and
``emorl predict --ckpt_path CKPT`` without a config or a corpus on a folder, a manifest and a list.

One acoustic-baseline fit (in this process, seconds) serves every test of the file."""

import contextlib
import io
import json
import shutil

import pytest
import yaml

from emorl.cli import main
from tests.corpus_factory import make_tiny_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fitted tiny acoustic baseline: ``(tmp, config path, best checkpoint, fit's stdout)``."""
    tmp = tmp_path_factory.mktemp("runs")
    corpus = make_tiny_corpus(tmp / "corpus", per_speaker_label=1)
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1,
            "enable_model_summary": False, "enable_progress_bar": False,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp / "runs"), "name": "ac"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/ua", "mode": "max", "filename": "best"}}],
        },
        "model": {"class_path": "emorl.models.acoustic.AcousticBaseline",
                  "init_args": {"hidden_dim": 16, "dropout": 0.0, "lr": 0.01}},
        "data": {"data_dir": str(corpus.root), "batch_size": 8, "val_fraction": 0.25},
    }
    path = tmp / "ac.yaml"
    path.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["fit", "--config", str(path)])
    return tmp, path, tmp / "runs/ac/version_0/checkpoints/best.ckpt", out.getvalue()


def _said(text: str, command: str) -> list[str]:
    return [line[len(f"emorl {command}: "):] for line in text.splitlines() if line.startswith(f"emorl {command}: ")]


def test_fit_ends_with_the_run_folder_the_best_checkpoint_and_its_score(trained):
    tmp, _, ckpt, out = trained
    said = _said(out, "fit")
    assert said[0] == f"run folder: {tmp / 'runs/ac/version_0'}"
    assert said[1].startswith(f"best checkpoint: {ckpt} (val/ua ") and ckpt.is_file()
    assert said[2].startswith("last validation: val/f1 ") and "val/ua" in said[2]


def test_test_records_its_checkpoint_prints_one_table_and_fills_the_hparams_tab(trained, capsys):
    tmp, config, ckpt, _ = trained
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert out.count("test set ") == 1 and "┃" not in out  # emorl's table once, not Lightning's
    run = tmp / "runs/ac/version_1"
    assert _said(out, "test") == [f"run folder: {run}", f"checkpoint: {ckpt} (training run {tmp / 'runs/ac/version_0'})"]
    record = json.loads((run / "test_results.json").read_text())
    assert record["checkpoint"] == str(ckpt) and record["training_run"] == str(tmp / "runs/ac/version_0")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, plugins = {}, set()
    for events in run.glob("events.out.tfevents.*"):
        reader = EventAccumulator(str(events))
        reader.Reload()
        scalars.update({tag: reader.Scalars(tag)[-1].value for tag in reader.Tags()["scalars"]})
        try:
            plugins |= set(reader.PluginTagToContent("hparams"))
        except KeyError:  # this file holds no hparams summary
            pass
    assert "hp_metric" not in scalars  # no -1 placeholder
    ua = record["test_sets"]["tiny"]["ua"]
    assert scalars["hp/tiny/ua"] == pytest.approx(ua) == pytest.approx(scalars["test/tiny/ua"])
    assert "_hparams_/session_start_info" in plugins
    from emorl.run_summary import method_hparams

    method = method_hparams("emorl.models.grpo.GRPOLALM", {"model": "m", "prompt_format": "esr",
                                                           "rewards": [{"name": "format_esr", "weight": 1.0}]}, "meld")
    assert method == {"method/module": "GRPOLALM", "method/model": "m", "method/prompt_format": "esr",
                      "method/rewards": "format_esr*1.0", "method/train_corpus": "meld"}


def test_predict_from_the_checkpoint_alone_on_a_folder_a_manifest_and_a_list(trained, tmp_path, capsys, monkeypatch):
    tmp, _, ckpt, _ = trained
    wavs = sorted((tmp / "corpus").rglob("*.wav"))[:3]
    folder = tmp_path / "my_clips"
    folder.mkdir()
    for wav in wavs:
        shutil.copy(wav, folder / wav.name)
    copies = sorted(folder.iterdir())
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps({"wav": str(w)}) + "\n" for w in copies))
    (tmp_path / "files.txt").write_text("".join(f"my_clips/{w.name}\n" for w in copies))
    shutil.move(str(tmp / "corpus"), str(tmp / "corpus_gone"))  # no training corpus on disk
    monkeypatch.chdir(tmp_path)
    try:
        for version, source in enumerate((folder, tmp_path / "clips.jsonl", tmp_path / "files.txt")):
            main(["predict", "--ckpt_path", str(ckpt), "--data.predict_path", str(source),
                  "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
            run = tmp_path / "runs" / "ac" / f"version_{version}"  # named after the training run
            rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
            assert sorted(r["key"] for r in rows) == sorted(w.stem for w in wavs)
            assert {r["test_set"] for r in rows} == {source.stem}
            assert {r["emotion"] for r in rows} <= {"neutral", "happy", "sad", "angry"}  # the checkpoint's classes
            assert json.loads((run / "run_source.json").read_text())["checkpoint"] == str(ckpt)
            assert _said(capsys.readouterr().out, "predict")[0] == "run folder: runs/ac/version_" + str(version)
    finally:
        shutil.move(str(tmp / "corpus_gone"), str(tmp / "corpus"))
