"""The ``emorl`` command: dispatch only.

One table of subcommands (:data:`LIGHTNING_SUBCOMMANDS` plus the argparse commands of
:mod:`emorl.commands`); the overview (``emorl --help``) is written from them. Nothing heavy is
imported until a subcommand needs it: ``emorl --help``, ``emorl data ...`` and ``emorl zoo ...``
do not import torch or Lightning.

- ``emorl fit | validate | test | predict --config X.yaml`` -> :mod:`emorl.lightning_cli`;
- ``emorl data ...``, ``emorl zoo ...``, ``emorl demo``, ``emorl plan``, ``emorl checkpoint ...`` -> :mod:`emorl.commands`.

Two options of every command, taken here: ``--verbose`` (a user error's traceback and full text,
as ``EMORL_TRACEBACK=1``) and ``--log-level LEVEL`` (emorl's own log lines, ``INFO`` by default:
the feature cache's "extracting N clips", skipped clips, what a checkpoint replaced).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

#: The LightningCLI subcommands: name -> (what it does, an example).
LIGHTNING_SUBCOMMANDS = {
    "fit": ("train a model", "emorl fit --config configs/demo/acoustic.yaml"),
    "validate": ("run the validation split", "emorl validate --config X.yaml --ckpt_path CKPT"),
    "test": ("test on every test set", "emorl test --config X.yaml --ckpt_path CKPT"),
    "predict": ("predict a folder, manifest or file list", "emorl predict --ckpt_path CKPT --data.predict_path CLIPS"),
}

#: options of every command (taken out of the command line before the subcommand parses it)
GLOBAL_OPTIONS = {
    "--verbose": "a user error's traceback and full text (or EMORL_TRACEBACK=1)",
    "--log-level LEVEL": "emorl's log lines: DEBUG | INFO (default) | WARNING | ERROR",
}


def take_global_options(argv: list[str]) -> tuple[list[str], bool, str]:
    """``(argv without them, --verbose given, --log-level value)``; a bad level is a usage error."""
    rest, verbose, level = [], False, "INFO"
    args = iter(argv)
    for arg in args:
        if arg == "--verbose":
            verbose = True
        elif arg == "--log-level" or arg.startswith("--log-level="):
            level = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                print(f"emorl: error: --log-level {level!r}: choose DEBUG, INFO, WARNING or ERROR", file=sys.stderr)
                sys.exit(2)
        else:
            rest.append(arg)
    return rest, verbose, level


def overview() -> str:
    """``emorl --help``: every subcommand with its help, from the tables that define them."""
    from emorl.commands import build_parser, subcommand_help

    lines = ["usage: emorl {" + ",".join([*LIGHTNING_SUBCOMMANDS, *subcommand_help(build_parser())]) + "} ...", "",
             "Speech emotion recognition with audio-language models trained by RL, and baselines.", "",
             "training and evaluation (LightningCLI; `emorl fit --help` for every option):"]
    width = max(len(what) for what, _ in LIGHTNING_SUBCOMMANDS.values()) + 1
    lines += [f"  {name:<10} {what + ':':<{width}}  {example}" for name, (what, example) in LIGHTNING_SUBCOMMANDS.items()]
    for command, (what, children) in subcommand_help(build_parser()).items():
        lines += ["", f"{command}: {what}" + (f" (`emorl {command} --help`)" if children else "")]
        for child, child_help in children.items():
            lines.append(f"  {command + ' ' + child:<22} {child_help}")
    lines += ["", "options of every command:"]
    lines += [f"  {option:<22} {what}" for option, what in GLOBAL_OPTIONS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    argv, verbose, level = take_global_options(list(sys.argv[1:] if argv is None else argv))
    if verbose:
        os.environ["EMORL_TRACEBACK"] = "1"
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return
    from emorl.log_setup import configure_logging

    configure_logging(level)
    if argv[0] in LIGHTNING_SUBCOMMANDS or argv[0].startswith("-"):
        from emorl.lightning_cli import run_lightning

        run_lightning(argv)
        return
    from emorl.commands import COMMANDS, run_command

    if argv[0] in COMMANDS:
        sys.exit(run_command(argv))
    print(f"emorl: unknown command {argv[0]!r}\n", file=sys.stderr)
    print(overview(), file=sys.stderr)
    sys.exit(2)
