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
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from emorl import cli_checks, faults, run_summary
from emorl.data.datamodule import EmoDataModule
from emorl.errors import EmorlError
from emorl.metrics import format_table

log = logging.getLogger(__name__)

#: The root of the source tree (or of an installed copy of the shipped configs, see pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
}


class EmorlArgumentParser(LightningArgumentParser):
    """Lightning's parser that raises its parse errors (``run_lightning`` prints them as one line)
    instead of printing the usage and a many-line message."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)


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
    - after ``test`` a UA / WA / F1 table of every test set is printed (Lightning's own table is
      off), the method and the test metrics go to the HParams tab;
    - every run ends with its run folder and checkpoints (:mod:`emorl.run_summary`);
    - the accelerator guard, ``--ckpt_path`` checks and typed overrides of :mod:`emorl.cli_checks`.

    ``parse_only=True`` parses and validates a config without building anything (used by the
    test that parses every shipped config).
    """

    def __init__(self, *args, parse_only: bool = False, **kwargs) -> None:
        self.parse_only = parse_only
        kwargs.setdefault("datamodule_class", EmoDataModule)
        kwargs.setdefault("model_class", L.LightningModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {"logger": DEFAULT_LOGGER, "enable_progress_bar": True})
        kwargs.setdefault("parser_class", EmorlArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse errors as one line and exit status 2 (:func:`emorl.cli_checks.parse_error_line`); also
        ``--ckpt_path last`` -> the newest last / SIGTERM checkpoint of this run name (:mod:`emorl.faults`)."""
        from argparse import ArgumentError

        self.argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]
        command = self.argv[0] if self.argv and self.argv[0] in self.subcommands() else "fit"
        try:
            with warnings.catch_warnings():  # `emorl` passes its argv on: not the mistake Lightning warns of
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                super().parse_arguments(parser, args)
        except ArgumentError as err:
            from emorl.errors import report

            sys.exit(report(command, EmorlError(cli_checks.parse_error_line(str(err), command))))
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._name_after_typed_model(self.config[subcommand])
        faults.resolve_ckpt_path_last(self.config)

    def _name_after_typed_model(self, config) -> None:
        """A run on a base model typed on the command line (not the config's) is named after it
        (``<run name>-<model>``, unless ``--trainer.logger...`` is typed too), before ``--ckpt_path
        last`` looks for the run's checkpoints."""
        init_args = (config.get("model") or {}).get("init_args") if config.get("model") else None
        typed = cli_checks.typed_model_name(self.argv, init_args)
        logger = (config.get("trainer") or {}).get("logger")
        logger_args = logger.get("init_args") if hasattr(logger, "get") else None
        if (typed and logger_args is not None and logger_args.get("name")
                and not any(arg.startswith("--trainer.logger") for arg in self.argv)):
            logger_args["name"] = cli_checks.run_name_for_model(logger_args["name"], typed)

    def _set_seed(self) -> None:
        """Lightning's seeding without its "Seed set to N" line (the config says the seed)."""
        seed_log = logging.getLogger("lightning.fabric.utilities.seed")
        level = seed_log.level
        seed_log.setLevel(logging.WARNING)
        try:
            super()._set_seed()
        finally:
            seed_log.setLevel(level)

    def _parse_ckpt_path(self) -> None:
        """Before LightningCLI takes the model's hyper-parameters from ``--ckpt_path``: a file that is
        not a checkpoint is a one-line error, a checkpoint of another kind of model or base
        architecture is refused, and what the checkpoint's values replace in the config's model is
        said in one line (:mod:`emorl.models.identity`)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
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
            init_args = model.get("init_args") if model is not None else None
            typed = {key: init_args.get(key) for key in cli_checks.typed_model_args(self.argv)
                     if init_args is not None and key in init_args}
            wins, said = cli_checks.portable_overrides(typed, hparams)
            super()._parse_ckpt_path()
            if wins:
                restored = self.config[subcommand]["model"]
                target = restored.get("init_args") or restored.get("dict_kwargs")
                for key, value in wins.items():
                    target[key] = value
                print(f"emorl {subcommand}: --ckpt_path {ckpt_path}: the command line overrides the checkpoint's "
                      + "; ".join(said), file=sys.stderr)
            return
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """``validate / test / predict --ckpt_path``: the model's ``init_checkpoint`` is not loaded.

        The checkpoint holds every trained weight the init checkpoint held (an init checkpoint
        must have the same trainable weights), so loading it first changes nothing, and the file
        it names may have moved since training. ``fit --ckpt_path`` keeps it (a full-fine-tuning
        GRPO reference is a copy of the initial policy).
        """
        subcommand = self.config.get("subcommand")
        if subcommand and not self.parse_only:
            self._check_before_building(subcommand)
        if subcommand not in ("validate", "test", "predict"):
            return
        config = self.config[subcommand]
        if subcommand == "test":
            config["verbose"] = False  # emorl's table follows (one table, not Lightning's per dataloader)
        init_args = config.get("model", {}).get("init_args") if config.get("ckpt_path") else None
        if init_args is not None and init_args.get("init_checkpoint"):
            log.info("%s --ckpt_path: init_checkpoint %s not loaded (the checkpoint holds the trained weights)",
                     subcommand, init_args.init_checkpoint)
            init_args.init_checkpoint = None

    def _check_before_building(self, subcommand: str) -> None:
        """A ``--ckpt_path`` that names nothing, the accelerator guard (not for ``parse_only``: a GPU
        config parses on any machine), and ``predict``'s clips."""
        config = self.config[subcommand]
        cli_checks.check_ckpt_path(config.get("ckpt_path"), config.get("trainer"))
        cli_checks.check_accelerator(config.get("trainer"), cli_checks.visible_gpus())
        predict_path = (config.get("data") or {}).get("predict_path") if subcommand == "predict" else None
        if predict_path:  # a missing / empty / malformed clip list, before the trainer is built
            from emorl.data.folder import list_clips

            list_clips(predict_path)

    def instantiate_classes(self) -> None:
        if not self.parse_only:
            super().instantiate_classes()

    def after_instantiate_classes(self) -> None:
        """Every run saves a checkpoint at SIGTERM and exits non-zero (:class:`emorl.faults.SigtermCheckpoint`)."""
        if self.parse_only:
            return
        callbacks = self.trainer.callbacks
        callbacks.append(faults.SigtermCheckpoint(self.argv))
        if run_summary.EmorlProgressBar.counts_steps(self.trainer, self.model):  # GRPO: optimiser steps, reward
            for i, callback in enumerate(callbacks):
                if type(callback).__name__ in ("TQDMProgressBar", "RichProgressBar"):  # Lightning's default bar
                    callbacks[i] = run_summary.EmorlProgressBar()
        run_summary.quiet_hp_metric(self.trainer)

    def _say(self, lines: list[str]) -> None:
        """emorl's closing lines (rank zero), on stdout."""
        if self.trainer.is_global_zero:
            print("\n".join(f"emorl {self.subcommand}: {line}" for line in lines), flush=True)

    def after_fit(self) -> None:
        """The run folder, the best / last checkpoint with its score, the last validation scores."""
        from emorl.results import run_dir_of

        run_dir = run_dir_of(self.trainer)
        callback = self.trainer.checkpoint_callback
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        self._say(run_summary.fit_summary(
            run_dir, getattr(callback, "best_model_path", None), getattr(callback, "best_model_score", None),
            getattr(callback, "monitor", None), getattr(callback, "last_model_path", None), metrics))

    def after_validate(self) -> None:
        from emorl.results import run_dir_of

        self._say(run_summary.closing_lines("validate", run_dir_of(self.trainer), self.trainer.ckpt_path))

    def after_predict(self) -> None:
        """Write every prediction (one JSON line per clip) to ``<log_dir>/predictions.jsonl``."""
        def flatten(outputs):
            for item in outputs or []:
                if isinstance(item, dict):
                    yield item
                else:
                    yield from flatten(item)

        from emorl.results import run_dir_of

        run_dir = run_dir_of(self.trainer)
        rows = list(flatten(self.trainer.predict_loop.predictions))
        suffix = f".rank{self.trainer.global_rank}" if self.trainer.world_size > 1 else ""
        path = Path(self.trainer.log_dir or ".") / f"predictions{suffix}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if self.trainer.is_global_zero and run_dir is not None:
            run_summary.write_run_source(run_dir, self.trainer.ckpt_path, "predict")
        print(f"wrote {len(rows)} predictions to {path}")
        self._say(run_summary.closing_lines("predict", run_dir, self.trainer.ckpt_path))

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
            run_summary.log_method_hparams(self.trainer, self.model, results)
        for callback in self.trainer.callbacks:
            table = getattr(callback, "results_table", None)
            text = table() if callable(table) else None
            if text:
                print(text)
        self._say(run_summary.closing_lines("test", run_dir, self.trainer.ckpt_path))

    def _write_test_results(self, run_dir: Path | None) -> None:
        """``test_results.json`` in the run folder (``emorl report`` reads it)."""
        from emorl.results import write_test_results

        path = write_test_results(self.trainer, self.model, run_dir=run_dir)
        if path is not None:
            print(f"wrote the test results to {path}")



def with_checkpoint_config(argv: list[str]) -> list[str]:
    """``emorl predict --ckpt_path CKPT --data.predict_path CLIPS`` without ``--config``: the config
    comes from the checkpoint (:func:`emorl.cli_checks.predict_config`), given as ``--config JSON``."""
    if not argv or argv[0] != "predict" or any(a in ("--config", "-c") or a.startswith("--config=") for a in argv):
        return argv
    ckpt_path = cli_checks.option_value(argv, "--ckpt_path")
    if (not ckpt_path or ckpt_path in cli_checks.SPECIAL_CKPT_PATHS
            or not cli_checks.option_value(argv, "--data.predict_path")):
        return argv  # `--ckpt_path last` names a run of a config: it needs --config
    cli_checks.check_ckpt_path(ckpt_path)
    from emorl.models.checkpoints import read_checkpoint

    config = cli_checks.predict_config(read_checkpoint(ckpt_path, "--ckpt_path"), ckpt_path)
    return [argv[0], "--config", json.dumps(config), *argv[1:]]


def run_lightning(argv: list[str]) -> None:
    """``emorl fit|validate|test|predict ARGS``: parse, build and run; a user's mistake found on the way
    (:func:`emorl.errors.user_error_types`) ends in one line and exit status 2."""
    from emorl.console import quiet_known_warnings
    from emorl.errors import find_user_error, report, user_error_types

    quiet_known_warnings()
    command = argv[0] if argv and not argv[0].startswith("-") else "fit"
    if "--help" in argv or "-h" in argv:  # `--model.help` and `--model` list emorl's modules once imported
        import importlib

        from emorl.models.identity import KINDS

        for class_path in KINDS:
            importlib.import_module(class_path.rsplit(".", 1)[0])
    try:
        argv = with_checkpoint_config(argv)
        EmorlCLI(args=argv)
    except Exception as err:
        found = find_user_error(err, user_error_types())
        if found is None:
            raise
        end_process_group()
        sys.exit(report(command, found))
    except SystemExit:  # a SIGTERM stop (every rank at the same batch) or a one-line error
        end_process_group()
        raise
    end_process_group()


def end_process_group() -> None:
    """Destroy the default process group of a finished run while the interpreter is still whole.

    Left to the interpreter's shutdown, a gloo group can abort a run that has finished ("terminate called
    without an active exception", exit status -6) or hang its exit: its worker threads still hold tensors
    whose release needs the GIL (pytorch/pytorch#179291). Lightning destroys only NCCL groups at exit.
    Not called after a crash: the other ranks may still be inside a collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
