"""What a run says about itself: its closing summary, its progress bar and its HParams entry.

- :func:`fit_summary` / :func:`closing_lines`: after ``emorl fit | test | predict``, emorl's own
  lines: the run folder, the best (or last) checkpoint with its score, the checkpoint a test or
  predict run used and the training run it came from.
- :class:`EmorlProgressBar`: Lightning's TQDM bar; for a module that counts optimiser steps
  (GRPO: ``max_steps`` optimiser steps of ``accumulate_grad_batches`` batches) the training bar
  counts optimiser steps against ``max_steps`` and shows the last mean reward and accuracy
  (``train/reward``, ``train/accuracy`` of ``trainer.callback_metrics``).
- :func:`method_hparams` / :func:`test_hp_metrics`: the method of a run (module, prompt format,
  rewards, training corpus) and its test scores, written together to TensorBoard's HParams tab.
- :func:`write_run_source`: ``run_source.json`` of a predict run (checkpoint, training run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.callbacks import TQDMProgressBar

from emorl.results import training_run_of

RUN_SOURCE_FILE = "run_source.json"


def display(path: Any) -> str:
    """A path as short as it is clear: relative to the working directory when under it."""
    if not path:
        return "-"
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def fit_summary(run_dir: Any, best: Any, score: Any, monitor: str | None, last: Any,
                metrics: Mapping[str, float]) -> list[str]:
    """The closing lines of ``emorl fit``."""
    lines = [f"run folder: {display(run_dir)}"]
    if best:
        value = f" ({monitor} {float(score):.4f})" if monitor and score is not None else ""
        lines.append(f"best checkpoint: {display(best)}{value}")
    if last and str(last) != str(best):
        lines.append(f"last checkpoint: {display(last)}")
    if not best and not last:
        lines.append("no checkpoint was saved (trainer.enable_checkpointing / the ModelCheckpoint callback)")
    shown = {k: v for k, v in sorted(metrics.items()) if k.startswith("val/") and "/recall/" not in k}
    if shown:
        lines.append("last validation: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return lines


def closing_lines(command: str, run_dir: Any, checkpoint: Any) -> list[str]:
    """The closing lines of ``emorl test | validate | predict``: the run folder, the checkpoint and its training run."""
    lines = [f"run folder: {display(run_dir)}"]
    if checkpoint:
        lines.append(f"checkpoint: {display(checkpoint)} (training run {display(training_run_of(checkpoint))})")
    else:
        lines.append("checkpoint: none (the weights the config builds)")
    return lines


def write_run_source(run_dir: Path, checkpoint: Any, command: str) -> Path:
    """``run_source.json``: the checkpoint a test / predict run used and the training run it came from."""
    record = {"command": command, "checkpoint": str(checkpoint) if checkpoint else None,
              "training_run": training_run_of(checkpoint)}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_SOURCE_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


# -- HParams -----------------------------------------------------------------------------------------
def method_hparams(model_class: str, hparams: Mapping[str, Any], train_corpus: str | None) -> dict[str, Any]:
    """What tells runs apart in TensorBoard's HParams tab: module, base model, prompt format,
    rewards, trained weights, training corpus (scalars and strings only)."""
    rewards = hparams.get("rewards")
    values = {
        "method/module": model_class.rsplit(".", 1)[-1],
        "method/model": hparams.get("model") or hparams.get("upstream"),
        "method/prompt_format": hparams.get("prompt_format"),
        "method/rewards": "+".join(f"{r.get('name')}*{r.get('weight', 1)}" for r in rewards) if rewards else None,
        "method/lora_r": (hparams.get("lora") or {}).get("r") if isinstance(hparams.get("lora"), Mapping) else None,
        "method/full_finetune": hparams.get("full_finetune"),
        "method/train_corpus": train_corpus,
    }
    return {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in values.items() if v is not None}


def test_hp_metrics(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{hp/<test set>/<ua|wa|f1|parse_rate>: value}`` of a test's results (finite values only)."""
    import math

    return {f"hp/{name}/{metric}": float(value) for name, scores in results.items()
            for metric, value in scores.items()
            if metric in ("ua", "wa", "f1", "parse_rate") and value is not None and math.isfinite(float(value))}


def log_method_hparams(trainer, model, results: Mapping[str, Mapping[str, float]]) -> None:
    """The method with the real test metrics to every logger with ``log_hyperparams`` (rank zero)."""
    hparams = dict(getattr(model, "hparams", {}) or {})
    corpus = getattr(getattr(getattr(trainer, "datamodule", None), "corpus", None), "name", None)
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    params, metrics = method_hparams(model_class, hparams, corpus), test_hp_metrics(results)
    import inspect

    for logger in trainer.loggers:
        if metrics and "metrics" in inspect.signature(logger.log_hyperparams).parameters:  # TensorBoard
            logger.log_hyperparams(params, metrics=metrics)
        else:  # CSV, W&B: the parameters; the test scores are logged as scalars already
            logger.log_hyperparams(params)
        logger.finalize("success")  # the trainer finalised its loggers already: write these out too


def quiet_hp_metric(trainer) -> None:
    """TensorBoard loggers stop writing ``hp_metric = -1`` at the start of every run."""
    for logger in trainer.loggers:
        if hasattr(logger, "_default_hp_metric"):
            logger._default_hp_metric = False


# -- the progress bar ----------------------------------------------------------------------------------
class EmorlProgressBar(TQDMProgressBar):
    """TQDM bar that, for a module counting optimiser steps (``counts_optimizer_steps = True`` or
    manual optimisation with ``max_steps``), counts optimiser steps and shows reward and accuracy."""

    SHOWN = {"train/reward": "reward", "train/accuracy": "acc", "train/loss": "loss"}

    @staticmethod
    def counts_steps(trainer, module) -> bool:
        return (getattr(module, "counts_optimizer_steps", None) is True
                or (not getattr(module, "automatic_optimization", True) and trainer.max_steps > 0))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.counts_steps(trainer, pl_module):
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = self.train_progress_bar.n = trainer.global_step  # a resumed run
            self.train_progress_bar.set_description("optimiser steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.counts_steps(trainer, pl_module):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if bar.n != trainer.global_step:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if self.counts_steps(trainer, pl_module):
            for key, short in self.SHOWN.items():
                value = trainer.callback_metrics.get(key)
                if value is not None:
                    metrics[short] = f"{float(value):.3f}"
        return metrics
