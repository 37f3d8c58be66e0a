"""The ``emorl`` command.

``emorl fit|validate|test|predict --config X.yaml`` go to :class:`EmorlCLI` (LightningCLI);
``emorl data ...``, ``emorl zoo ...`` and ``emorl demo`` are plain argparse commands (``emorl/commands.py``).
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI

from emorl.data.datamodule import EmoDataModule

log = logging.getLogger(__name__)
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "default"},
}


class EmorlCLI(LightningCLI):
    """LightningCLI with emorl's DataModule, any LightningModule, and emorl's defaults.

    - the model's ``class_names`` come from the DataModule (the training corpus's label set);
    - runs log to TensorBoard under ``runs/<name>/version_N`` (auto-versioned, so the saved
      ``config.yaml`` never collides with an earlier run's);
    - each LightningModule configures its own optimiser (documented in its ``__init__``);
    - after ``test`` a UA / WA / F1 table of every test set is printed.

    ``parse_only=True`` parses and validates a config without building anything (used by the
    test that parses every shipped config).
    """

    def __init__(self, *args, parse_only: bool = False, **kwargs) -> None:
        self.parse_only = parse_only
        kwargs.setdefault("datamodule_class", EmoDataModule)
        kwargs.setdefault("model_class", L.LightningModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {"logger": DEFAULT_LOGGER})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """``validate / test / predict --ckpt_path``: the model's ``init_checkpoint`` is not loaded.

        The checkpoint holds every trained weight the init checkpoint held (an init checkpoint
        must have the same trainable weights), so loading it first changes nothing, and the file
        it names may have moved since training. ``fit --ckpt_path`` keeps it (a full-fine-tuning
        GRPO reference is a copy of the initial policy).
        """
        subcommand = self.config.get("subcommand")
        if subcommand not in ("validate", "test", "predict"):
            return
        config = self.config[subcommand]
        init_args = config.get("model", {}).get("init_args") if config.get("ckpt_path") else None
        if init_args is not None and init_args.get("init_checkpoint"):
            log.info("%s --ckpt_path: init_checkpoint %s not loaded (the checkpoint holds the trained weights)",
                     subcommand, init_args.init_checkpoint)
            init_args.init_checkpoint = None

    def instantiate_classes(self) -> None:
        if not self.parse_only:
            super().instantiate_classes()

    def after_predict(self) -> None:
        """Write every prediction (one JSON line per clip) to ``<log_dir>/predictions.jsonl``."""
        import json
        from pathlib import Path

        def flatten(outputs):
            for item in outputs or []:
                if isinstance(item, dict):
                    yield item
                else:
                    yield from flatten(item)

        rows = list(flatten(self.trainer.predict_loop.predictions))
        suffix = f".rank{self.trainer.global_rank}" if self.trainer.world_size > 1 else ""
        path = Path(self.trainer.log_dir or ".") / f"predictions{suffix}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"wrote {len(rows)} predictions to {path}")

    def after_test(self) -> None:
        """Write ``test_results.json``, print the UA / WA / F1 table, then any callback's table (e.g. ``ExplanationEvaluation``'s)."""
        if not self.trainer.is_global_zero:
            return
        self._write_test_results()
        results = getattr(self.model, "test_results", None)
        if results:
            from emorl.metrics import format_table

            print(format_table(results))
        for callback in self.trainer.callbacks:
            table = getattr(callback, "results_table", None)
            text = table() if callable(table) else None
            if text:
                print(text)

    def _write_test_results(self) -> None:
        """``test_results.json`` in the run folder (``emorl report`` reads it)."""
        from emorl.results import write_test_results

        path = write_test_results(self.trainer, self.model)
        if path is not None:
            print(f"wrote the test results to {path}")


def _print_overview() -> None:
    print(
        "usage: emorl {fit,validate,test,predict,data,zoo,demo,export,report} ...\n\n"
        "Speech emotion recognition with audio-language models trained by RL, and baselines.\n\n"
        "training and evaluation (LightningCLI; `emorl fit --help` for every option):\n"
        "  fit        train a model:            emorl fit --config configs/baselines/acoustic_demo.yaml\n"
        "  validate   run the validation split: emorl validate --config X.yaml --ckpt_path CKPT\n"
        "  test       test on every test set:   emorl test --config X.yaml --ckpt_path CKPT\n"
        "  predict    predict the test sets:    emorl predict --config X.yaml --ckpt_path CKPT\n\n"
        "data (`emorl data --help`):\n"
        "  data prepare {meld,iemocap,ravdess,savee}  native corpus -> prepared manifests + EmoBox folds\n"
        "  data import-emobox                         any EmoBox manifest -> prepared corpus\n"
        "  data track2                                EmoBox cross-corpus test set (4 classes, 240 clips)\n"
        "  data synth                                 render the embedded demo corpus (espeak-ng)\n"
        "  data check                                 find unreadable / empty / silent / NaN / long clips\n"
        "  data prosody                               pitch / energy / rate / pauses / voice quality, bins, captions\n"
        "  data cot                                   EmotionCoT rationales for the training rows (template / LM)\n\n"
        "zoo (`emorl zoo --help`):\n"
        "  zoo list                                   frozen encoders, EmoBox numbers, local copies\n"
        "  zoo tiny NAME --out DIR                    tiny random stand-in of a zoo model\n\n"
        "  demo       the main job on the embedded demo corpus, end to end\n\n"
        "sharing and comparing runs:\n"
        "  export     a run's checkpoint -> Hugging Face model folder / PEFT adapter + model card (docs/export.md)\n"
        "  report     runs -> report.md / report.csv beside EMO-RL's published numbers, figures (docs/report.md)\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return
    if argv[0] in ("data", "zoo", "demo", "export", "report"):
        from emorl.commands import run_command

        sys.exit(run_command(argv))
    if argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        print(f"emorl: unknown command {argv[0]!r}\n", file=sys.stderr)
        _print_overview()
        sys.exit(2)
    EmorlCLI(args=argv)
