"""Interrupted runs: a checkpoint at SIGTERM, and ``--ckpt_path last`` across run versions.

- :class:`SigtermCheckpoint` (added by :class:`~emorl.lightning_cli.EmorlCLI` to every Trainer):
  when a cluster sends SIGTERM before it kills a job, Lightning's signal connector sets
  ``trainer.received_sigterm`` and its loops raise
  :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` at the end of the current
  batch (a ``SystemExit`` with status 0). This callback saves ``<run>/checkpoints/sigterm.ckpt``
  from ``on_exception`` (a consistent point: after the batch's optimiser step; GRPO rollouts still
  waiting for theirs are dropped and the line says so), prints one line naming the checkpoint and
  the command that resumes it, and turns the exit status into :data:`SIGTERM_EXIT_STATUS`.
  Under DDP its own SIGTERM handler replaces Lightning's notifier (which runs a collective inside
  the signal handler) and the ranks agree on the signal at every training batch and epoch end (an
  all-reduce of the flag), so every rank stops after the same batch and saves together; under
  :class:`emorl.strategy.FSDP2Strategy` that save is a sharded folder ``sigterm.ckpt/`` (each rank its shards).
- :func:`find_last_checkpoint` / :func:`resolve_ckpt_path_last`: ``--ckpt_path last`` means the
  newest ``last.ckpt`` or ``sigterm.ckpt`` of a training run of the config's run name
  (``<save_dir>/<name>/*/checkpoints/``; a sharded checkpoint is a folder of that name), not Lightning's reading (the last checkpoint of the new,
  empty version folder, so a resume started again at step 0).

See ``docs/configs.md`` ("Interrupted runs") and ``docs/reliability.md``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from emorl.errors import EmorlError

log = logging.getLogger(__name__)

#: exit status of a run stopped by SIGTERM (128 + 15, what a shell reports for a process killed by it)
SIGTERM_EXIT_STATUS = 143

#: file name of the checkpoint saved at SIGTERM, in the run's ``checkpoints/`` folder
SIGTERM_CHECKPOINT = "sigterm.ckpt"

#: checkpoint names ``--ckpt_path last`` accepts: ModelCheckpoint's ``last.ckpt`` (``last-vN.ckpt``
#: when the name was taken) and :data:`SIGTERM_CHECKPOINT`
_LAST_NAME = re.compile(r"^(last(-v\d+)?|sigterm)\.ckpt$")


# -- SIGTERM -------------------------------------------------------------------------------------
def display_path(path: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``cwd`` (default: the working directory) when it lies below it, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.path.abspath(cwd or os.getcwd()))
    return absolute if relative.startswith("..") else relative


def resume_command(argv: Sequence[str], ckpt_path: str) -> str:
    """The ``emorl`` command line that resumes ``argv`` (``["fit", "--config", ...]``) from ``ckpt_path``.

    Every argument is kept (config files and overrides) but an earlier ``--ckpt_path``, which is
    replaced by ``ckpt_path``; arguments are shell-quoted.
    """
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        kept.append(str(arg))
    if not kept or kept[0] != "fit":
        kept = ["fit", *[a for a in kept if a != "fit"]]
    return "emorl " + shlex.join([*kept, "--ckpt_path", ckpt_path])


def run_checkpoint_dir(trainer: L.Trainer) -> Path:
    """The run's ``checkpoints/`` folder: the ModelCheckpoint's (when there is one), else
    ``<save_dir>/<name>/<version>/checkpoints`` of the first logger (as ModelCheckpoint resolves
    it), else ``<default_root_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir or trainer.default_root_dir
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return Path(save_dir, str(logger.name), version, "checkpoints")
    return Path(trainer.default_root_dir, "checkpoints")


def _distributed(trainer: L.Trainer) -> bool:
    return trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def agree_on_sigterm(trainer: L.Trainer, pending: bool = False) -> bool:
    """Whether any rank received SIGTERM (``pending``: noted by :class:`SigtermCheckpoint`'s handler, or
    Lightning's flag), by an all-reduce under DDP. Every rank then gets Lightning's flag at this same
    point, so every rank's loop raises after the same batch. Single process: Lightning's flag."""
    received = bool(trainer.received_sigterm) or pending
    if not _distributed(trainer):
        return received
    flag = torch.tensor([int(received)], device=trainer.strategy.root_device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if int(flag.item()):
        trainer._signal_connector.received_sigterm = True  # Lightning's loops read the flag there
    return bool(flag.item())


def sigterm_message(command: str, ckpt: str | None, step: int, epoch: int, dropped: int = 0,
                    resume: str | None = None, error: str | None = None) -> str:
    """The one line printed at SIGTERM (``emorl <command>: stopped by SIGTERM ...``)."""
    if command != "fit":
        return f"emorl {command}: stopped by SIGTERM before the end; nothing was written"
    if ckpt is None:
        return f"emorl fit: stopped by SIGTERM at step {step} (epoch {epoch}); the checkpoint could not be saved: {error}"
    line = f"emorl fit: stopped by SIGTERM at step {step} (epoch {epoch}); checkpoint saved to {shlex.quote(ckpt)}"
    if dropped:
        line += (f" ({dropped} rollout(s) waiting for the optimiser step were dropped: the resume starts after "
                 "their batches)")
    return line + f"; resume with: {resume}"


class SigtermCheckpoint(L.Callback):
    """At SIGTERM: save ``checkpoints/sigterm.ckpt`` (fit), print one line, exit with status 143.

    Args:
        argv: the command line of the run (``["fit", "--config", ...]``), for the resume command.
        filename: the checkpoint's file name in the run's ``checkpoints/`` folder.
    """

    def __init__(self, argv: Sequence[str] = (), filename: str = SIGTERM_CHECKPOINT) -> None:
        self.argv = [str(a) for a in argv]
        self.filename = filename
        self.saved: Path | None = None
        self._pending = False

    # -- DDP: the ranks agree on the signal at training batch and epoch ends -------------------
    def on_sanity_check_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._install_handler(trainer)

    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._install_handler(trainer)

    def _install_handler(self, trainer: L.Trainer) -> None:
        """Under DDP, replace Lightning's SIGTERM notifier (it runs a ``broadcast`` inside the signal
        handler, which pairs with whatever collective the other ranks are in: a hang or a crash) by one
        that only notes the signal (and forwards it to the launcher's child processes, as Lightning's
        does); :func:`agree_on_sigterm` then sets Lightning's flag on every rank at the same point.
        Lightning restores the handlers it found when the run ends."""
        if not _distributed(trainer) or threading.current_thread() is not threading.main_thread():
            return
        connector = trainer._signal_connector
        current = signal.getsignal(signal.SIGTERM)
        handlers = list(getattr(current, "signal_handlers", []))
        notifier = connector._sigterm_notifier_fn
        if notifier not in handlers:
            return
        self._pending = False

        def note(signum: int, _frame: Any) -> None:  # no logging here: a handler may interrupt the logger
            if not self._pending and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)
            self._pending = True

        signal.signal(signal.SIGTERM, type(current)([note if h == notifier else h for h in handlers]))

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        agree_on_sigterm(trainer, self._pending)

    def on_train_epoch_end(self, trainer: L.Trainer, *_: Any) -> None:
        agree_on_sigterm(trainer, self._pending)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = SIGTERM_EXIT_STATUS
        fn = getattr(trainer.state.fn, "value", None) or "fit"
        command = "fit" if fn == "fit" else fn
        ckpt, error = None, None
        if command == "fit":
            path = run_checkpoint_dir(trainer) / self.filename
            try:
                trainer.save_checkpoint(path)
                ckpt, self.saved = display_path(path), path
            except Exception as err:  # noqa: BLE001 - the line says it; the run stops either way
                error = f"{type(err).__name__}: {err}"
        if trainer.is_global_zero:
            dropped = len(getattr(pl_module, "buffer", None) or [])
            resume = resume_command(self.argv, ckpt) if ckpt else None
            print(sigterm_message(command, ckpt, trainer.global_step, trainer.current_epoch, dropped, resume, error),
                  file=sys.stderr, flush=True)


# -- --ckpt_path last ----------------------------------------------------------------------------
def last_checkpoints(checkpoint_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``last.ckpt`` / ``last-vN.ckpt`` / ``sigterm.ckpt`` in ``checkpoint_dirs``, newest first
    (modification time; a sharded checkpoint is a folder named ``*.ckpt`` and counts too)."""
    found = [path for folder in checkpoint_dirs if Path(folder).is_dir()
             for path in Path(folder).iterdir() if _LAST_NAME.match(path.name) and path.exists()]
    return sorted(found, key=lambda p: (checkpoint_time(p), str(p)), reverse=True)


def checkpoint_time(path: Path) -> float:
    """When a checkpoint was last written: a file's modification time; for a sharded folder
    (:class:`emorl.strategy.FSDP2Strategy`), the newest of the folder's and its ``meta.pt``'s (written
    last, by rank 0: a save into an existing ``last.ckpt/`` rewrites its files without always
    touching the folder)."""
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [entry.stat().st_mtime for entry in path.iterdir() if entry.name == "meta.pt"]
    return max(times)


def find_last_checkpoint(save_dir: str | os.PathLike, name: str,
                         extra_dirs: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The newest last / SIGTERM checkpoint of a training run ``<save_dir>/<name>/<version>/checkpoints/``
    (and of ``extra_dirs``, a ModelCheckpoint's explicit ``dirpath``), or None.

    Test and predict runs write no checkpoint, so their version folders never match.
    """
    run_root = Path(save_dir, name)
    dirs = sorted(run_root.glob("*/checkpoints")) if run_root.is_dir() else []
    found = last_checkpoints([*dirs, *extra_dirs])
    return found[0] if found else None


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    getter = getattr(node, "get", None)
    return getter(key, default) if callable(getter) else getattr(node, key, default)


def logger_run_root(logger: Any) -> tuple[str, str] | None:
    """``(save_dir, name)`` of a parsed ``trainer.logger`` (the first logger of a list that has a
    ``save_dir``), or None (``logger: false``, a logger without a folder)."""
    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    for entry in loggers:
        init_args = _get(entry, "init_args")
        save_dir = _get(init_args, "save_dir")
        if save_dir:
            return str(save_dir), str(_get(init_args, "name") or "lightning_logs")
    return None


def checkpoint_dirpaths(callbacks: Any) -> list[str]:
    """The explicit ``dirpath`` of every ModelCheckpoint of a parsed ``trainer.callbacks``."""
    entries = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks] if callbacks else []
    return [str(_get(_get(c, "init_args"), "dirpath")) for c in entries
            if str(_get(c, "class_path", "")).endswith("ModelCheckpoint") and _get(_get(c, "init_args"), "dirpath")]


def resolve_ckpt_path_last(config: Any) -> Path | None:
    """Replace ``--ckpt_path last`` in the parsed LightningCLI ``config`` (``config[subcommand]``) by
    :func:`find_last_checkpoint` of its logger's run name, print which one (one line, rank zero), and
    return it; None when ``ckpt_path`` is not ``last``. :class:`~emorl.errors.EmorlError` when there is none."""
    subcommand = _get(config, "subcommand")
    section = _get(config, subcommand) if subcommand else None
    if section is None or _get(section, "ckpt_path") != "last":
        return None
    trainer = _get(section, "trainer")
    root = logger_run_root(_get(trainer, "logger"))
    if root is None:
        raise EmorlError("--ckpt_path last: the run has no logger folder (trainer.logger), so there are no runs "
                         "to look in; give the checkpoint's path")
    save_dir, name = root
    found = find_last_checkpoint(save_dir, name, checkpoint_dirpaths(_get(trainer, "callbacks")))
    where = f"{Path(save_dir, name)}/"
    if found is None:
        raise EmorlError(f"--ckpt_path last: no checkpoint of a training run under {where}, "
                         "run emorl fit without --ckpt_path first")
    section["ckpt_path"] = str(found)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        verb = "resuming from" if subcommand == "fit" else "using"
        print(f"emorl {subcommand}: --ckpt_path last: {verb} {display_path(found)}", file=sys.stderr, flush=True)
    return found
