"""What every emorl LightningModule shares at validation, test and predict time (composition, not a
base class): per-stage SER metrics, and the bodies of the audio-language modules' test and
predict steps.

A module holds one :class:`StageMetrics`, calls :meth:`update` from its validation / test steps
with predicted class ids (-1 for an unparsable answer) and true ids, and calls
:meth:`log_validation` / :meth:`log_test` from its epoch-end hooks. Logged names:
``val/ua``, ``val/wa``, ``val/f1``, ``val/parse_rate``, ``val/recall/<class>``, and the same under
``test/<test-set>/``. At the end of a test, each test set's confusion matrix goes to TensorBoard
as a figure and its predictions to ``<log_dir>/predictions/<test-set>.jsonl``.

:func:`test_batch`, :func:`finish_test` and :func:`predict_batch` are the bodies of every
audio-language module's ``test_step``, ``on_test_epoch_end`` and ``predict_step``
(:class:`~emorl.models.zeroshot.ZeroShotLALM`, :class:`~emorl.models.sft.SFTLALM`,
:class:`~emorl.models.grpo.GRPOLALM`). They need of the module what :class:`AnswersClips` says:
``answer(batch)``, ``metrics`` and ``hparams.answers_to_log`` / ``hparams.class_names``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

import lightning as L
import torch
from torch import nn

from emorl.labels import READINGS
from emorl.metrics import LENIENT_READING, EmotionMetrics, confusion_figure, prefixed


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
            if trainer.is_global_zero and trainer.loggers:
                from emorl.loggers import log_figure  # every logger: TensorBoard, W&B, CSV

                figure = confusion_figure(confusion, self.class_names, title=f"{name} (test)")
                log_figure(trainer, f"test/{name}/confusion", figure, trainer.global_step)
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


class AnswersClips(Protocol):
    """What :func:`test_batch`, :func:`finish_test` and :func:`predict_batch` use of a module."""

    metrics: StageMetrics
    hparams: Any  # answers_to_log, class_names

    def answer(self, batch: dict) -> tuple[list[str], torch.Tensor, Any]:
        """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), generation result)``."""
        ...


def log_answer_samples(module: L.LightningModule, tag: str, rows: Sequence[dict], limit: int = 8) -> None:
    """A table of sample answers (key, true label, prediction, text) to every logger (:mod:`emorl.loggers`)."""
    from emorl.loggers import log_table

    trainer = module.trainer
    if not rows or limit <= 0 or not trainer.is_global_zero or not trainer.loggers:
        return
    columns = ["key", "label", "prediction", "answer"]
    table = [[row.get("key"), row.get("label"), row.get("prediction"), row.get("text", "")] for row in rows[:limit]]
    log_table(trainer, tag, columns, table, trainer.global_step)


def test_batch(module: AnswersClips, batch: dict | None, dataloader_idx: int) -> dict | None:
    """Answer a test batch and add it to the module's metrics (predictions keep the raw text).

    Returns ``{"test_set", "texts", "preds"}`` (the module's ``test_step`` returns it, so callbacks
    such as :class:`emorl.explanations.ExplanationEvaluation` get the answers as ``outputs``).
    """
    if batch is None:
        return None
    name = module.trainer.datamodule.test_names[dataloader_idx]
    texts, preds, _ = module.answer(batch)
    module.metrics.update("test", preds.to(module.device), batch["label"], test_name=name,
                          keys=batch["key"], texts=texts)
    return {"test_set": name, "texts": texts, "preds": preds.tolist()}


def finish_test(module: AnswersClips, reading: str) -> dict[str, dict[str, float]]:
    """Sample answers to every logger, then every test set's scores, figure and predictions file,
    the scores marked when the answers were read leniently (:func:`mark_reading`)."""
    for name in module.metrics.test_order:
        log_answer_samples(module, f"test/{name}/answers", module.metrics.predictions.get(name, []),
                           module.hparams.answers_to_log)
    return mark_reading(module.metrics.log_test(module), reading)


def predict_batch(module: AnswersClips, batch: dict | None, dataloader_idx: int) -> list[dict]:
    """One JSON-ready row per clip: its set, key, predicted emotion (``None``: unparsable) and text."""
    if batch is None:
        return []
    texts, preds, _ = module.answer(batch)
    names = module.hparams.class_names
    datamodule = module.trainer.datamodule
    sets = getattr(datamodule, "predict_names", None) or getattr(datamodule, "test_names", None) or ["predict"]
    return [
        {"test_set": sets[dataloader_idx], "key": key, "emotion": names[int(p)] if int(p) >= 0 else None,
         "text": text}
        for key, p, text in zip(batch["key"], preds, texts)
    ]
