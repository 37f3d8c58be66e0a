"""Start-up time of emorl's light commands next to ``python -c "import torch"``.

    python tools/bench_cli.py                      # this checkout, 5 runs each
    python tools/bench_cli.py --before 4a11577~1   # and a commit's tree beside it (git archive, same run)

Each command runs ``--runs`` times in a fresh process (``python -m emorl ...`` with this
checkout, or the ``--before`` commit's tree, on ``PYTHONPATH``; output discarded); the table shows
the fastest and the median wall time in seconds. ``4a11577~1`` is the tree before ``emorl/cli.py``
stopped importing Lightning at start (issue 13; issue 18 measured it). Nothing is written in the
checkout: the ``--before`` tree is extracted into a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "emorl --help": ["-m", "emorl", "--help"],
    "emorl data --help": ["-m", "emorl", "data", "--help"],
    "emorl zoo list": ["-m", "emorl", "zoo", "list"],
    'python -c "import torch"': ["-c", "import torch"],
}


def time_command(args: list[str], tree: Path, runs: int) -> list[float]:
    """Wall seconds of ``runs`` fresh ``python ARGS`` processes with ``tree`` on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed in {tree}:\n{done.stderr[-2000:]}")
    return seconds


def extract(ref: str, into: Path) -> Path:
    """The tree of commit ``ref`` (``git archive``) in ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True)
    tar = into / "tree.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as handle:
        handle.extractall(into / "tree", filter="data")
    return into / "tree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--before", help="a commit whose tree is timed beside this checkout (e.g. 4a11577~1)")
    args = parser.parse_args()
    trees = {"now": REPO}
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        if args.before:
            trees = {f"before ({args.before})": extract(args.before, Path(tmp)), **trees}
        print(f"{args.runs} runs each, seconds (fastest / median); {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
        width = max(map(len, COMMANDS)) + 2
        print(f"{'command':<{width}}" + "".join(f"{name:>28}" for name in trees))
        for label, command in COMMANDS.items():
            cells = []
            for tree in trees.values():
                seconds = time_command(command, tree, args.runs)
                cells.append(f"{min(seconds):.2f} / {statistics.median(seconds):.2f}")
            print(f"{label:<{width}}" + "".join(f"{cell:>28}" for cell in cells))


if __name__ == "__main__":
    main()
