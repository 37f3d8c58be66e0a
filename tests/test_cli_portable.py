"""Portable checkpoints (issue 18, item 3): the base model and the run move to another folder;
``emorl test`` (and ``emorl predict`` from the checkpoint alone) from there works with
``--model.init_args.model NEW``, which wins over the path the checkpoint stored, said in one line;
a run trained on a typed base model is named after it."""

import json
import shutil

import pytest
import yaml

from emorl.cli import main
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import tiny_model_dir


@pytest.mark.slow
def test_a_moved_run_tests_from_its_new_folder_with_the_typed_model(tmp_path, capsys, monkeypatch):
    corpus = make_tiny_corpus(tmp_path / "corpus", per_speaker_label=1)
    model = tmp_path / "old" / "tiny-qwen2-audio"
    shutil.copytree(tiny_model_dir("qwen2-audio"), model)
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "limit_val_batches": 0,
                    "num_sanity_val_steps": 0, "enable_model_summary": False, "enable_progress_bar": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": "runs", "name": "sft"}}},
        "model": {"class_path": "emorl.models.sft.SFTLALM",
                  "init_args": {"model": "placeholder", "prompt_format": "ir", "lora": None, "full_finetune": False,
                                "train_projector": True, "dtype": "float32", "max_new_tokens": 4,
                                "system_prompt": "Answer in one word."}},
        "data": {"data_dir": str(corpus.root), "batch_size": 4, "eval_batch_size": 8, "val_fraction": 0.25},
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", "sft.yaml", "--model.init_args.model", str(model)])
    run = tmp_path / "runs" / "sft-tiny-qwen2-audio" / "version_0"  # the run name follows the typed model
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    capsys.readouterr()

    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "old"), str(elsewhere / "models"))
    shutil.move(str(tmp_path / "runs"), str(elsewhere / "runs"))
    moved_run = elsewhere / "runs" / run.parent.name / run.name
    moved_ckpt = moved_run / "checkpoints" / ckpt.name
    monkeypatch.chdir(elsewhere)
    new_model = str(elsewhere / "models" / "tiny-qwen2-audio")
    main(["test", "--config", str(moved_run / "config.yaml"), "--ckpt_path", str(moved_ckpt),
          "--model.init_args.model", new_model, "--trainer.enable_progress_bar", "false"])
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if "overrides" in line]
    assert said == [f"emorl test: --ckpt_path {moved_ckpt}: the command line overrides the checkpoint's model "
                    f"{new_model!r} (checkpoint: {str(model)!r})"]
    record = json.loads((elsewhere / "runs" / run.parent.name / "version_1" / "test_results.json").read_text())
    assert record["checkpoint"] == str(moved_ckpt) and record["training_run"] == str(moved_run)
    assert set(record["test_sets"]) == {"tiny"}

    # predict from the moved checkpoint alone: its classes and prompt, the typed model, no corpus
    clips = elsewhere / "my_clips"
    clips.mkdir()
    for wav in sorted((tmp_path / "corpus").rglob("*.wav"))[:2]:
        shutil.copy(wav, clips / wav.name)
    main(["predict", "--ckpt_path", str(moved_ckpt), "--data.predict_path", str(clips), "--model.init_args.model",
          new_model, "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    predict_run = elsewhere / "runs" / run.parent.name / "version_2"
    rows = [json.loads(line) for line in (predict_run / "predictions.jsonl").read_text().splitlines()]
    assert {r["test_set"] for r in rows} == {"my_clips"} and len(rows) == 2 and all("text" in r for r in rows)
    used = yaml.safe_load((predict_run / "config.yaml").read_text())
    assert used["model"]["init_args"]["system_prompt"] == "Answer in one word."  # the checkpoint's prompt
    assert used["model"]["init_args"]["model"] == new_model
    assert used["data"]["label_names"] == ["neutral", "happy", "sad", "angry"] and used["data"]["data_dir"] is None
    capsys.readouterr()

    # without the option the checkpoint's old folder is used, and its absence is one line
    with pytest.raises(SystemExit) as done:
        main(["test", "--config", str(moved_run / "config.yaml"), "--ckpt_path", str(moved_ckpt)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("emorl test: error:")]
    assert done.value.code == 2 and lines == [
        f"emorl test: error: model folder {model} does not exist, give the model's folder or zoo name "
        "(a moved run: --model.init_args.model NEW_FOLDER overrides its checkpoint's)"]
