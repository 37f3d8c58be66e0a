"""A run's own record of its test: ``test_results.json`` in the run folder.

``emorl test`` (and ``emorl demo``, which tests in the training run) writes, beside the run's
``config.yaml`` and ``predictions/``::

    {
      "test_sets": {"meld": {"ua": 0.39, "wa": 0.69, "f1": 0.41, "parse_rate": 1.0, "recall/angry": ...}},
      "checkpoint": "runs/emorl_esr/version_0/checkpoints/last.ckpt",   # null: the weights in memory / zero-shot
      "training_run": "runs/emorl_esr/version_0",                       # null: nothing was trained
      "run_dir": "runs/emorl_esr/version_1",
      "model_class": "emorl.models.grpo.GRPOLALM",
      "written": "2026-12-06T02:30:00+00:00"
    }

Scores are fractions (0-1), as logged. ``emorl report`` reads this file and nothing else for the
numbers. Whatever the logger (TensorBoard, CSV, Weights & Biases), the file goes to
``trainer.log_dir`` or, without a logger, to the checkpoint callback's parent folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

RESULTS_FILE = "test_results.json"


def training_run_of(checkpoint: str | Path | None) -> str | None:
    """The run folder a checkpoint was saved in (``<run>/checkpoints/x.ckpt`` -> ``<run>``), else its folder."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    return str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)


def _clean(scores: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe scores: NaN (a class with no support) becomes ``None``."""
    return {name: (None if isinstance(v, float) and math.isnan(v) else float(v)) for name, v in scores.items()}


def results_record(
    test_sets: dict[str, dict[str, float]],
    run_dir: str | Path,
    checkpoint: str | Path | None,
    model_class: str,
    trained_here: bool = False,
) -> dict[str, Any]:
    """The content of ``test_results.json``. ``trained_here``: the test ran in the training run
    itself (``emorl demo``), so the training run is ``run_dir`` even without a checkpoint file."""
    training_run = training_run_of(checkpoint) or (str(run_dir) if trained_here else None)
    return {
        "test_sets": {name: _clean(scores) for name, scores in test_sets.items()},
        "checkpoint": str(checkpoint) if checkpoint else None,
        "training_run": training_run,
        "run_dir": str(run_dir),
        "model_class": model_class,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_dir_of(trainer) -> Path | None:
    """Where a trainer's run lives: the logger's ``log_dir`` (any logger), else the checkpoints' parent."""
    if trainer.logger is not None and trainer.log_dir:
        return Path(trainer.log_dir)
    callback = getattr(trainer, "checkpoint_callback", None)
    dirpath = getattr(callback, "dirpath", None)
    return Path(dirpath).parent if dirpath else None


def write_test_results(trainer, model, trained_here: bool = False, run_dir: Path | None = None) -> Path | None:
    """Write ``test_results.json`` for the test the trainer just ran (global rank 0 only).

    ``run_dir``: the run folder, found by the caller on *every* rank (:func:`run_dir_of` asks
    ``trainer.log_dir``, a broadcast under DDP); ``None``: found here (one process only).
    Returns the file's path, or ``None`` when there is nothing to write (no test results, another
    rank, no run folder).
    """
    results = getattr(model, "test_results", None)
    run_dir = run_dir if run_dir is not None else run_dir_of(trainer)
    if not results or not trainer.is_global_zero or run_dir is None:
        return None
    checkpoint = getattr(trainer, "ckpt_path", None)
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    record = results_record(results, run_dir, checkpoint, model_class, trained_here=trained_here)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS_FILE
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_test_results(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``test_results.json``, or ``None`` when it has none."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
