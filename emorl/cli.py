"""The ``emorl`` command: dispatch only.

One table of subcommands (:data:`LIGHTNING_SUBCOMMANDS` plus the argparse commands of
:mod:`emorl.commands`); the overview (``emorl --help``) is written from them. Nothing heavy is
imported until a subcommand needs it: ``emorl --help``, ``emorl data ...`` and ``emorl zoo ...``
do not import torch or Lightning.

- ``emorl fit | validate | test | predict --config X.yaml`` -> :mod:`emorl.lightning_cli`;
- ``emorl data ...``, ``emorl zoo ...``, ``emorl demo``, ``emorl plan``, ``emorl checkpoint ...`` -> :mod:`emorl.commands`.
"""

from __future__ import annotations

import sys
from typing import Sequence

#: The LightningCLI subcommands: name -> (what it does, an example).
LIGHTNING_SUBCOMMANDS = {
    "fit": ("train a model", "emorl fit --config configs/demo/acoustic.yaml"),
    "validate": ("run the validation split", "emorl validate --config X.yaml --ckpt_path CKPT"),
    "test": ("test on every test set", "emorl test --config X.yaml --ckpt_path CKPT"),
    "predict": ("predict the test sets (or --data.predict_path)", "emorl predict --config X.yaml --ckpt_path CKPT"),
}


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
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return
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
