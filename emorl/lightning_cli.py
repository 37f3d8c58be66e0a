"""``emorl fit | validate | test | predict``: :class:`EmorlCLI`, emorl's LightningCLI.

    emorl fit --config configs/emorl_esr.yaml
    emorl test --config configs/sft/sft_ir_meld.yaml --ckpt_path runs/sft_ir_meld/version_0/checkpoints/best.ckpt

Every experiment is one YAML config (``docs/configs.md``): the DataModule is always
:class:`emorl.data.datamodule.EmoDataModule`, the model any LightningModule of :mod:`emorl.models`
(``model.class_path``). :func:`resolve_config` finds a shipped config from any working directory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from emorl import faults
from emorl.data.datamodule import EmoDataModule
from emorl.metrics import format_table

log = logging.getLogger(__name__)

#: The root of the source tree (or of an installed copy of the shipped configs, see pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "default"},
}


def resolve_config(config: str | Path) -> Path:
    """A config path as given, else relative to the repository / installed package."""
    for candidate in (Path(config), REPO_ROOT / config):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config {config} not found (looked in . and {REPO_ROOT})")


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

    def parse_arguments(self, parser, args) -> None:
        """Also ``--ckpt_path last`` -> the newest last / SIGTERM checkpoint of this run name (:mod:`emorl.faults`)."""
        super().parse_arguments(parser, args)
        self.argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]
        faults.resolve_ckpt_path_last(self.config)

    def _parse_ckpt_path(self) -> None:
        """Before LightningCLI takes the model's hyper-parameters from ``--ckpt_path``: a file that is
        not a checkpoint is a one-line error, a checkpoint of another kind of model or base
        architecture is refused, and what the checkpoint's values replace in the config's model is
        said in one line (:mod:`emorl.models.identity`)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            from emorl.errors import EmorlError
            from emorl.models.checkpoints import read_checkpoint
            from emorl.models.identity import identity_mismatches

            hparams = read_checkpoint(ckpt_path, "--ckpt_path").get("hyper_parameters") or {}
            model = self.config[subcommand].get("model")
            found = identity_mismatches(model.as_dict() if hasattr(model, "as_dict") else model or {}, hparams)
            if found.refused:
                raise EmorlError(f"--ckpt_path {ckpt_path} holds another model than the config's: "
                                 + "; ".join(found.refused) + ", give the config it was trained with (its run "
                                 "folder's config.yaml) or a checkpoint of this config's model")
            if found.replaced:
                print(f"emorl {subcommand}: --ckpt_path {ckpt_path}: the checkpoint's model is used: "
                      + "; ".join(found.replaced), file=sys.stderr)
        super()._parse_ckpt_path()

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

    def after_instantiate_classes(self) -> None:
        """Every run saves a checkpoint at SIGTERM and exits non-zero (:class:`emorl.faults.SigtermCheckpoint`)."""
        if not self.parse_only:
            self.trainer.callbacks.append(faults.SigtermCheckpoint(self.argv))

    def after_predict(self) -> None:
        """Write every prediction (one JSON line per clip) to ``<log_dir>/predictions.jsonl``."""
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
        """Write ``test_results.json``, print the UA / WA / F1 table, then any callback's table (e.g.
        ``ExplanationEvaluation``'s)."""
        from emorl.results import run_dir_of

        run_dir = run_dir_of(self.trainer)  # trainer.log_dir is a broadcast under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return
        self._write_test_results(run_dir)
        results = getattr(self.model, "test_results", None)
        if results:
            print(format_table(results))
        for callback in self.trainer.callbacks:
            table = getattr(callback, "results_table", None)
            text = table() if callable(table) else None
            if text:
                print(text)

    def _write_test_results(self, run_dir: Path | None) -> None:
        """``test_results.json`` in the run folder (``emorl report`` reads it)."""
        from emorl.results import write_test_results

        path = write_test_results(self.trainer, self.model, run_dir=run_dir)
        if path is not None:
            print(f"wrote the test results to {path}")



def run_lightning(argv: list[str]) -> None:
    """``emorl fit|validate|test|predict ARGS``: parse, build and run; a user's mistake found on the way
    (:func:`emorl.errors.user_error_types`) ends in one line and exit status 2."""
    from emorl.console import quiet_known_warnings
    from emorl.errors import report, user_error_types

    quiet_known_warnings()
    try:
        EmorlCLI(args=argv)
    except user_error_types() as err:
        sys.exit(report(argv[0] if argv and not argv[0].startswith("-") else "fit", err))
