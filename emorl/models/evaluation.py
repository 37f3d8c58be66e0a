"""Per-stage SER metrics for any emorl LightningModule (composition, not a base class).

A module holds one :class:`StageMetrics`, calls :meth:`update` from its validation / test steps
with predicted class ids (-1 for an unparsable answer) and true ids, and calls
:meth:`log_validation` / :meth:`log_test` from its epoch-end hooks. Logged names:
``val/ua``, ``val/wa``, ``val/f1``, ``val/parse_rate``, ``val/recall/<class>``, and the same under
``test/<test-set>/``. At the end of a test, each test set's confusion matrix goes to TensorBoard
as a figure and its predictions to ``<log_dir>/predictions/<test-set>.jsonl``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn

from emorl.labels import READINGS, parse_answer
from emorl.metrics import LENIENT_READING, EmotionMetrics, confusion_figure, prefixed


def read_label_ids(texts: Sequence[str], class_names: Sequence[str], reading: str) -> torch.Tensor:
    """Class ids of the labels :func:`emorl.labels.parse_answer` reads from ``texts``, -1 for none.

    ``reading`` is the prompt format's (``strict`` for IR / EUR / ESR, ``lenient`` for the
    zero-shot ``direct`` / ``cot``): the same parser, in the same reading, as the training reward.
    """
    names = list(class_names)
    labels = [parse_answer(text, names, reading=reading) for text in texts]
    return torch.tensor([names.index(label) if label is not None else -1 for label in labels], dtype=torch.long)


def check_reading(reading: str) -> str:
    """``reading`` when it is one of :data:`emorl.labels.READINGS`, else a clear error."""
    if reading not in READINGS:
        raise ValueError(f"answer_reading must be one of {', '.join(READINGS)}, not {reading!r}")
    return reading


def mark_reading(results: dict[str, dict[str, float]], reading: str) -> dict[str, dict[str, float]]:
    """Mark every test set's scores as read leniently (``LENIENT_READING: 1.0``; the results table
    flags their parse rate), so a zero-shot row's parse rate is not taken for a strict one."""
    if reading == "lenient":
        for scores in results.values():
            scores[LENIENT_READING] = 1.0
    return results


def _module_key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class StageMetrics(nn.Module):
    """Validation metrics plus one :class:`EmotionMetrics` per named test set, made on demand."""

    def __init__(self, class_names: Sequence[str]) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.val = EmotionMetrics(self.class_names)
        self.tests = nn.ModuleDict()
        self.test_order: list[str] = []
        self.predictions: dict[str, list[dict]] = {}
        self.results: dict[str, dict[str, float]] = {}

    def test_metric(self, name: str) -> EmotionMetrics:
        key = _module_key(name)
        if key not in self.tests:
            self.tests[key] = EmotionMetrics(self.class_names).to(self.val.device)
            self.test_order.append(name)
        return self.tests[key]

    def update(
        self,
        stage: str,
        preds: torch.Tensor,
        target: torch.Tensor,
        test_name: str | None = None,
        keys: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Add a batch. ``stage`` is ``val`` or ``test``; tests need ``test_name``."""
        if stage == "val":
            self.val.update(preds, target)
            return
        self.test_metric(test_name).update(preds, target)
        if keys is not None:
            rows = self.predictions.setdefault(test_name, [])
            for i, key in enumerate(keys):
                pred = int(preds[i])
                row: dict[str, Any] = {
                    "key": key,
                    "label": self.class_names[int(target[i])],
                    "prediction": self.class_names[pred] if pred >= 0 else None,
                }
                if texts is not None:
                    row["text"] = texts[i]
                rows.append(row)

    @staticmethod
    def _loggable(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in scores.items() if not math.isnan(float(v))}

    def log_validation(self, module: L.LightningModule) -> None:
        if self.val.num_samples == 0:
            return
        scores = self.val.compute()
        module.log_dict(self._loggable(prefixed(scores, "val")), sync_dist=True)
        self.val.reset()

    def log_test(self, module: L.LightningModule) -> dict[str, dict[str, float]]:
        """Log every test set's scores, figure and predictions; return ``{name: {metric: value}}``."""
        trainer = module.trainer
        # every rank syncs every test set's metric in the same order, also a set it saw no clip of
        # (a set with fewer clips than ranks is sharded without padding): else the ranks' syncs mismatch and hang
        known = list(getattr(getattr(trainer, "datamodule", None), "test_names", None) or [])
        for name in known:
            self.test_metric(name)
        for name in known + [name for name in self.test_order if name not in known]:
            metric = self.tests[_module_key(name)]
            scores = metric.compute()
            module.log_dict(self._loggable(prefixed(scores, f"test/{name}")), sync_dist=True)
            self.results[name] = {k: float(v) for k, v in scores.items()}
            confusion = metric.confusion().cpu()
            if trainer.is_global_zero and trainer.logger is not None:
                experiment = getattr(trainer.logger, "experiment", None)
                if hasattr(experiment, "add_figure"):
                    figure = confusion_figure(confusion, self.class_names, title=f"{name} (test)")
                    experiment.add_figure(f"test/{name}/confusion", figure, global_step=trainer.global_step)
            self._write_predictions(module, name)
            metric.reset()
        return self.results

    def _write_predictions(self, module: L.LightningModule, name: str) -> None:
        rows = self.predictions.pop(name, [])
        log_dir = module.trainer.log_dir if module.trainer.logger is not None else None
        if not rows or not log_dir:
            return
        world = module.trainer.world_size
        suffix = f".rank{module.global_rank}" if world > 1 else ""
        path = Path(log_dir) / "predictions" / f"{_module_key(name)}{suffix}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
