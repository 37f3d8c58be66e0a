"""``emorl report RUN_DIR... --out DIR``: the runs' results beside EMO-RL's published numbers, and figures.

    emorl report runs/demo_sft_esr/version_0 runs/demo_emorl_esr/version_0 --out reports/demo
    emorl report runs/*/version_* --out reports/all      # folders without test results are listed, skipped

Writes ``report.md`` (the table, then the figures), ``report.csv`` (the same numbers, percent) and
the PNG figures of :mod:`emorl.report.figures`. Numbers come from each run's ``test_results.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from emorl.report.figures import confusion_figures, training_curves, ua_bars
from emorl.report.runs import NotARunError, RunRecord, read_run
from emorl.report.table import table_rows, to_csv, to_markdown


@dataclass
class Collected:
    """The run folders sorted out: usable runs, runs without test results, folders that are not runs."""

    runs: list[RunRecord] = field(default_factory=list)
    untested: list[Path] = field(default_factory=list)
    not_runs: list[tuple[Path, str]] = field(default_factory=list)


def collect(paths: list[Path]) -> Collected:
    """Read every folder; none is fatal on its own."""
    found = Collected()
    for path in paths:
        try:
            record = read_run(path)
        except NotARunError as err:
            found.not_runs.append((path, str(err)))
            continue
        if record is None:
            found.untested.append(path)
        else:
            found.runs.append(record)
    return found


def skipped_lines(found: Collected) -> list[str]:
    """What the report left out, and why."""
    lines = [f"- `{path}`: no test_results.json (run `emorl test` on it)" for path in found.untested]
    return lines + [f"- `{path}`: {why}" for path, why in found.not_runs]


def write_report(paths: list[Path], out: Path) -> Collected:
    """Write the report of these run folders into ``out``; returns what was read and skipped."""
    found = collect(paths)
    if not found.runs:
        problems = "\n".join(skipped_lines(found))
        raise ValueError(f"no run with test results among the {len(paths)} folder(s):\n{problems}")
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(found.runs)
    (out / "report.csv").write_text(to_csv(rows), encoding="utf-8")
    figures = [ua_bars(found.runs, out / "ua_by_test_set.png")]
    for run in found.runs:
        figures += confusion_figures(run, out)
        curves = training_curves(run, out)
        if curves is not None:
            figures.append(curves)
    lines = ["# emorl report", "", "Scores in percent, from each run's `test_results.json`; `paper` is EMO-RL's "
             "published number for the same setting (Tables 1-3, `emorl/report/published.yaml`), `diff` = run - paper.",
             "", to_markdown(rows), ""]
    skipped = skipped_lines(found)
    if skipped:
        lines += ["## Skipped", "", *skipped, ""]
    lines += ["## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures] + [""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return found


def run_report(args: argparse.Namespace) -> int:
    """The command: write the report, list what was skipped, say where it is."""
    found = write_report(list(args.runs), args.out)
    for line in skipped_lines(found):
        print("skipped " + line[2:].replace("`", ""))
    print(f"wrote the report of {len(found.runs)} run(s) to {args.out / 'report.md'} (and report.csv, figures)")
    return 0
