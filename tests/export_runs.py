"""Short SFT runs of the tiny models to export (LoRA with a trained projector, and full fine-tuning).

    from tests.export_runs import train_run, predict_run
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.lalm_fixtures import REPO, tiny_model_dir

MAX_NEW_TOKENS = 8


@dataclass
class Run:
    """A finished training run: its folder, saved config and last checkpoint."""

    run_dir: Path
    config: Path
    checkpoint: Path
    family: str
    mode: str


def sft_config(family: str, mode: str, corpus_root: Path, runs: Path, name: str) -> dict:
    """``configs/sft/lora/sft_ir_ravdess.yaml`` shrunk to 2 optimiser steps of a tiny model, lr large enough to move it."""
    config = yaml.safe_load((REPO / "configs" / "sft" / "lora" / "sft_ir_ravdess.yaml").read_text())
    config["trainer"].update({
        "max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False, "num_sanity_val_steps": 0,
        "limit_val_batches": 0, "log_every_n_steps": 1,
        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": str(runs), "name": name}},
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                       "init_args": {"save_last": True, "save_top_k": 0}}],
    })
    init = config["model"]["init_args"]
    init.update({"model": str(tiny_model_dir(family)), "dtype": "float32", "gradient_checkpointing": False,
                 "lr": 5e-2, "warmup_steps": 0, "max_new_tokens": MAX_NEW_TOKENS, "answers_to_log": 2,
                 "train_projector": True})
    if mode == "full":
        init.update({"lora": None, "full_finetune": True, "lr": 1e-2})
    else:
        init["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    config["data"].update({"data_dir": str(corpus_root), "num_workers": 0, "batch_size": 4, "eval_batch_size": 4})
    return config


def train_run(family: str, mode: str, corpus_root: Path, work: Path) -> Run:
    """``emorl fit`` of :func:`sft_config` in this process; the run folder holds config.yaml and last.ckpt."""
    from emorl.cli import main

    name = f"sft_{family.replace('.', '')}_{mode}"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sft_config(family, mode, corpus_root, work / "runs", name)))
    main(["fit", "--config", str(path)])
    run_dir = max((work / "runs" / name).glob("version_*"))
    return Run(run_dir, run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt", family, mode)


def predict_run(run: Run, clips_dir: Path) -> dict[str, str]:
    """``emorl predict`` with the run's config and checkpoint on a folder of wavs: ``{file stem: answer text}``."""
    from emorl.cli import main

    before = set((run.run_dir.parent).glob("version_*"))
    main(["predict", "--config", str(run.config), "--ckpt_path", str(run.checkpoint),
          "--data.predict_path", str(clips_dir)])
    new = max(set(run.run_dir.parent.glob("version_*")) - before)
    rows = [json.loads(line) for line in (new / "predictions.jsonl").read_text().splitlines()]
    return {Path(row["key"]).name: row["text"] for row in rows}


def emorl_test_run(run: Run) -> Path:
    """``emorl test`` of the run's checkpoint; returns the test run's folder."""
    from emorl.cli import main

    before = set((run.run_dir.parent).glob("version_*"))
    main(["test", "--config", str(run.config), "--ckpt_path", str(run.checkpoint)])
    return max(set(run.run_dir.parent.glob("version_*")) - before)
