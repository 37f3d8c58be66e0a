"""Tiny audio-language models for the tests, built once per test session (about 0.2 s each).

    from tests.lalm_fixtures import FAMILIES, CARDS, tiny_model_dir, clips, messages
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FAMILIES = ("qwen2-audio", "qwen2.5-omni")
#: family -> zoo card name
CARDS = {"qwen2-audio": "qwen2-audio-7b-instruct", "qwen2.5-omni": "qwen2.5-omni-7b-thinker"}

_ROOT: list[Path] = []


def _root() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="emorl_tiny_lalm_")))
        atexit.register(shutil.rmtree, _ROOT[0], ignore_errors=True)
    return _ROOT[0]


@functools.lru_cache(maxsize=None)
def tiny_model_dir(family: str) -> Path:
    """The tiny model of ``family``, written by ``emorl zoo tiny``'s code path (do not modify it)."""
    from emorl import tiny_models

    return tiny_models.build_tiny(CARDS[family], _root() / CARDS[family], seed=0)


def clips(seconds=(1.0, 2.5, 0.6), seed: int = 0) -> list[np.ndarray]:
    """Quiet noise clips of the given lengths (16 kHz)."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def messages(n: int = 3) -> list[list[dict]]:
    """``n`` prompts of different text lengths, one audio part each."""
    questions = ["Which emotion?", "What is the emotion of the speaker? Options: angry, happy, sad, neutral.",
                 "Emotion:"]
    return [[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": questions[i % 3]}]}]
            for i in range(n)]


REPO = Path(__file__).resolve().parents[1]


def two_process_steps(callback: str, out_dir: Path, steps: int = 3) -> dict:
    """Trainer settings for ``steps`` optimiser steps in 2 CPU processes (DDP over gloo), without
    validation, logs or checkpoints; ``callback`` (a class path whose ``out_dir`` is set to ``out_dir``)
    records what each rank did."""
    return {
        "max_steps": steps, "accelerator": "cpu", "devices": 2, "strategy": "ddp", "enable_progress_bar": False,
        "val_check_interval": None, "limit_val_batches": 0, "num_sanity_val_steps": 0, "logger": False,
        "enable_checkpointing": False,
        "callbacks": [{"class_path": callback, "init_args": {"out_dir": str(out_dir)}}],
    }


def run_emorl(subcommand: str, config: dict, work_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m emorl SUBCOMMAND`` on ``config`` (written as YAML into ``work_dir``) in a subprocess,
    run from ``work_dir`` with one thread per process; asserts it succeeded (a hang raises TimeoutExpired)."""
    import yaml

    path = work_dir / f"{subcommand}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "emorl", subcommand, "--config", str(path)], cwd=work_dir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def reference_sft_loss(backbone, messages_per_clip, clips_, targets):
    """transformers' own loss of ``targets`` after the prompts (the oracle for SFT losses)."""
    import torch

    from emorl.lalm.inputs import build_prompts
    from emorl.lalm.answers import target_ids

    inputs = build_prompts(backbone, messages_per_clip, clips_)
    ids, _ = target_ids(backbone.tokenizer, targets, backbone.pad_token_id)
    full = torch.cat([inputs.input_ids, ids], 1)
    labels = torch.cat([torch.full_like(inputs.input_ids, -100), ids], 1)
    out = backbone.hf_model(input_ids=full, attention_mask=torch.ones_like(full), labels=labels,
                            input_features=inputs.input_features, feature_attention_mask=inputs.feature_attention_mask)
    return out.loss, ids.shape[1], inputs
