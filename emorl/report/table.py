"""The report's table: one row per run and test set, the published numbers beside matching rows.

Scores are percent (the runs log fractions). A run matches a published row of EMO-RL's Tables 1-3
(``emorl/report/published.yaml``) when its kind, prompt format, reward list (or probe encoder),
training corpus and test corpus are the row's; the published UA / WA / F1 and the difference
(run - published) then fill the row's last columns.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import yaml

from emorl.report.runs import RunRecord, corpus_of

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
SCORES = ("ua", "wa", "f1", "parse_rate")
PUBLISHED_SCORES = ("ua", "wa", "f1")
COLUMNS = (["run", "method", "kind", "prompt", "rewards_or_encoder", "train", "test_set"]
           + [f"{s}" for s in SCORES] + ["paper_table", "paper_row"]
           + [f"paper_{s}" for s in PUBLISHED_SCORES] + [f"diff_{s}" for s in PUBLISHED_SCORES])


@lru_cache(maxsize=1)
def published_rows() -> tuple[dict, ...]:
    """Every published row of EMO-RL's Tables 1-3 (the packaged data file)."""
    data = yaml.safe_load(PUBLISHED_FILE.read_text(encoding="utf-8"))
    return tuple(data["rows"])


def matches(run: RunRecord, test_set: str, row: dict) -> bool:
    """Whether a run's test set is a published row's setting."""
    if row["kind"] != run.kind or row["train"] != run.train_corpus or row["test"] != corpus_of(test_set):
        return False
    if run.kind == "probe":
        return row.get("encoder") == run.encoder
    return row.get("prompt") == run.prompt and sorted(row.get("rewards") or []) == sorted(run.rewards)


def published_for(run: RunRecord, test_set: str) -> list[dict]:
    """The published rows a run's test set matches (a row of each table at most)."""
    return [row for row in published_rows() if matches(run, test_set, row)]


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * float(value), 2)


def table_rows(runs: list[RunRecord]) -> list[dict]:
    """One dict per (run, test set, matching published row or none), columns :data:`COLUMNS`."""
    rows = []
    for run in runs:
        for test_set, scores in run.test_sets.items():
            base = {"run": run.name, "method": run.method, "kind": run.kind, "prompt": run.prompt or "",
                    "rewards_or_encoder": run.encoder or "+".join(run.rewards), "train": run.train_corpus or "",
                    "test_set": test_set}
            base.update({s: _percent(scores.get(s)) for s in SCORES})
            for paper in published_for(run, test_set) or [None]:
                row = dict(base)
                if paper is not None:
                    row.update({"paper_table": paper["table"], "paper_row": paper["row"]})
                    for s in PUBLISHED_SCORES:
                        row[f"paper_{s}"] = paper.get(s)
                        if paper.get(s) is not None and row[s] is not None:
                            row[f"diff_{s}"] = round(row[s] - paper[s], 2)
                rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV (empty cells for missing values)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    return out.getvalue()


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[dict]) -> str:
    """The rows as a markdown table: the run's UA / WA / F1 / parse rate, then the paper's and the difference."""
    head = ["run", "method", "train", "test set", "UA", "WA", "F1", "parse", "paper (table: row)",
            "paper UA / WA / F1", "diff UA / WA / F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        paper = f"{row['paper_table']}: {row['paper_row']}" if row.get("paper_table") else ""
        published = " / ".join(_cell(row.get(f"paper_{s}")) for s in PUBLISHED_SCORES) if paper else ""
        diff = " / ".join(_cell(row.get(f"diff_{s}")) for s in PUBLISHED_SCORES) if paper else ""
        cells = [row["run"], row["method"], row["train"], row["test_set"]] + [_cell(row[s]) for s in SCORES]
        lines.append("| " + " | ".join(cells + [paper, published, diff]) + " |")
    return "\n".join(lines)
