"""The demo's comparison over several seeds: each row's UA / WA / F1 / parse rate, mean and spread side by side.

    python tools/bench_demo.py                    # seeds 0 1 2 of `emorl demo` (about 3 x 4 min on 2 idle cores)
    python tools/bench_demo.py --seeds 0 1 2 --data-root data/demo --json bench_demo.json

Each seed runs the whole demo (:func:`emorl.demo.run_emorl_demo`: hearing stage, SFT warm start,
GRPO BCR + IR and EMO-RL from it, the test on the held-out actors) with that seed; the corpus and
the tiny base model are shared. For every row and metric it prints the seeds' values, their mean
and spread (max - min), and for each GRPO row the mean gap to the SFT row and to GRPO BCR + IR with
a verdict: ``above`` / ``below`` when the mean gap is larger than the largest spread between seeds
of the two rows compared, else ``within noise``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("ua", "wa", "f1", "parse_rate")
HEADINGS = {"ua": "UA", "wa": "WA", "f1": "F1", "parse_rate": "parse"}


def mean_spread(values: list[float]) -> tuple[float, float]:
    """The mean and the spread (max - min) of ``values``."""
    return sum(values) / len(values), max(values) - min(values)


def verdict(row: list[float], base: list[float]) -> tuple[float, float, str]:
    """Mean gap ``row - base`` (paired by seed), the larger of the two rows' seed spreads, and
    ``above`` / ``below`` when the mean gap exceeds that spread, else ``within noise``."""
    gap = sum(a - b for a, b in zip(row, base, strict=True)) / len(row)
    noise = max(mean_spread(row)[1], mean_spread(base)[1])
    word = "within noise" if abs(gap) <= noise else ("above" if gap > 0 else "below")
    return gap, noise, word


def per_seed_table(per_seed: dict[int, dict[str, dict[str, float]]]) -> str:
    """Rows x metrics: every seed's value, then mean +- spread (percent)."""
    seeds = sorted(per_seed)
    rows = [name for name in per_seed[seeds[0]] if name != "chance"]
    head = ["row", "metric", *(f"seed {s}" for s in seeds), "mean", "spread"]
    lines = []
    for name in rows:
        for metric in METRICS:
            values = [100 * per_seed[s][name][metric] for s in seeds]
            mean, spread = mean_spread(values)
            lines.append([name, HEADINGS[metric], *(f"{v:.2f}" for v in values), f"{mean:.2f}", f"{spread:.2f}"])
    return _format(head, lines)


def summary_table(per_seed: dict[int, dict[str, dict[str, float]]], sft: str, baseline: str) -> str:
    """One line per row: mean +- spread of UA / WA / F1 / parse side by side, and per GRPO row the UA
    gap to the SFT row and to ``baseline`` with its verdict."""
    seeds = sorted(per_seed)
    chance = per_seed[seeds[0]]["chance"]
    head = ["row", *(HEADINGS[m] for m in METRICS), f"UA vs {sft}", f"UA vs {baseline}"]
    lines = [["chance", *(f"{100 * chance[m]:.2f}" if m in chance else "" for m in METRICS), "", ""]]
    for name in (n for n in per_seed[seeds[0]] if n != "chance"):
        cells = [name]
        for metric in METRICS:
            mean, spread = mean_spread([100 * per_seed[s][name][metric] for s in seeds])
            cells.append(f"{mean:.2f} +- {spread / 2:.2f}")
        ua = [100 * per_seed[s][name]["ua"] for s in seeds]
        for other in (sft, baseline):
            if name in (sft, other) or other not in per_seed[seeds[0]]:
                cells.append("")
                continue
            gap, noise, word = verdict(ua, [100 * per_seed[s][other]["ua"] for s in seeds])
            cells.append(f"{gap:+.2f} ({word}; spread {noise:.2f})")
        lines.append(cells)
    note = ("mean +- half the spread (max - min) over seeds " + " ".join(map(str, seeds))
            + "; a gap is 'above' / 'below' when |mean gap| > the larger seed spread of the two rows")
    return _format(head, lines) + "\n" + note


def _format(head: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [head, *lines]) for i in range(len(head))]
    text = ["  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()
            for cells in [head, *lines]]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", type=Path, default=Path("data/demo"))
    parser.add_argument("--json", type=Path, help="also write {seed: {row: {metric: value}}} here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    from emorl.demo import GRPO_ROWS, SFT_ROW, run_emorl_demo

    per_seed = {}
    for seed in args.seeds:
        print(f"\n=== seed {seed} ===", flush=True)
        per_seed[seed] = run_emorl_demo(args.data_root, seed=seed, verbose=args.verbose, write_report=False)
    if args.json:
        args.json.write_text(json.dumps(per_seed, indent=1))
    print("\n" + per_seed_table(per_seed))
    print("\n" + summary_table(per_seed, SFT_ROW, next(iter(GRPO_ROWS))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
