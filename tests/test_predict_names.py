"""`emorl predict --data.predict_path FOLDER` names the acoustic baseline's and the probe's predictions
after the folder (the DataModule's ``predict_names``), not after the training corpus, as the LALM
modules do."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from emorl.cli import main
from tests.corpus_factory import make_tiny_corpus

REPO = Path(__file__).resolve().parents[1]


def _emorl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m emorl ARGS`` in a subprocess on this checkout; asserts it succeeded."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "emorl", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _config(tmp_path: Path, data_dir: Path, name: str, model: dict) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/ua", "mode": "max", "filename": "best"}}],
        },
        "model": model,
        "data": {"data_dir": str(data_dir), "batch_size": 8, "val_fraction": 0.25},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit_and_predict_a_folder(tmp_path: Path, name: str, model: dict) -> list[dict]:
    """Fit on the tiny corpus (named ``tiny``), then ``emorl predict`` on a folder named ``my_clips``."""
    corpus = make_tiny_corpus(tmp_path / "c")
    assert corpus.name == "tiny"
    folder = tmp_path / "my_clips"
    folder.mkdir()
    wavs = sorted((tmp_path / "c").rglob("*.wav"))[:5]
    for wav in wavs:
        shutil.copy(wav, folder / wav.name)
    config = _config(tmp_path, corpus.root, name, model)
    main(["fit", "--config", str(config)])
    ckpt = tmp_path / "runs" / name / "version_0" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()

    _emorl("predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.predict_path", str(folder),
           cwd=tmp_path)
    lines = (tmp_path / "runs" / name / "version_1" / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(r["key"] for r in rows) == sorted(w.stem for w in wavs)  # the folder's clips, each once
    return rows


def test_acoustic_predictions_on_a_folder_carry_the_folders_name(tmp_path):
    model = {"class_path": "emorl.models.acoustic.AcousticBaseline",
             "init_args": {"hidden_dim": 16, "dropout": 0.0, "lr": 0.01}}
    rows = _fit_and_predict_a_folder(tmp_path, "acoustic", model)
    assert {r["test_set"] for r in rows} == {"my_clips"}, {r["test_set"] for r in rows}  # not "tiny"


def test_probe_predictions_on_a_folder_carry_the_folders_name(tmp_path):
    upstream = tmp_path / "wavlm-large"
    _emorl("zoo", "tiny", "wavlm-large", "--out", str(upstream), cwd=tmp_path)
    model = {"class_path": "emorl.models.probe.LinearProbe",
             "init_args": {"upstream": str(upstream), "cache_dir": str(tmp_path / "cache"), "hidden_dim": 16,
                           "lr": 0.01}}
    rows = _fit_and_predict_a_folder(tmp_path, "probe", model)
    assert {r["test_set"] for r in rows} == {"my_clips"}, {r["test_set"] for r in rows}  # not "tiny"
