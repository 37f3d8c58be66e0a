"""The report's figures (PNG, matplotlib's Agg canvas: no display, no pyplot state).

- ``ua_by_test_set.png``: UA per test set (groups) and run (bars), the published UA of a matching
  row of EMO-RL's tables as a black marker on its run's bar;
- ``confusion_<run>_<set>.png``: each run's confusion matrix per test set, from its predictions;
- ``curves_<run>.png``: training curves (reward, accuracy, format rate, KL, answer length; SFT's
  loss) from the TensorBoard event files of the run that trained the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from emorl.report.runs import RunRecord, event_scalars, read_predictions
from emorl.report.table import published_for

#: Training curves drawn when logged, in this order.
CURVES = ("train/reward", "train/accuracy", "train/format_rate", "train/kl", "train/answer_length", "train/loss")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def safe_name(text: str) -> str:
    """A file-name-safe form of a run or test-set name."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", text).strip("_")


def ua_bars(runs: list[RunRecord], path: Path) -> Path:
    """Grouped bars of UA (percent) per test set and run, published UA as markers."""
    test_sets = list(dict.fromkeys(name for run in runs for name in run.test_sets))
    figure = _figure(max(6.0, 1.2 * len(test_sets) * max(1, len(runs)) / 2 + 3), 4.5)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(runs))
    marked = False
    for i, run in enumerate(runs):
        xs, heights, published = [], [], []
        for j, name in enumerate(test_sets):
            ua = (run.test_sets.get(name) or {}).get("ua")
            if ua is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            xs.append(x)
            heights.append(100 * ua)
            published += [(x, row["ua"]) for row in published_for(run, name) if row.get("ua") is not None]
        axes.bar(xs, heights, width * 0.95, label=f"{run.name} ({run.method})")
        if published:
            axes.scatter([x for x, _ in published], [v for _, v in published], marker="D", color="black", zorder=3,
                         label=None if marked else "EMO-RL (published)")
            marked = True
    axes.set_xticks(range(len(test_sets)), test_sets)
    axes.set_ylabel("UA (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Unweighted accuracy per test set")
    axes.legend(fontsize="small", loc="upper left")
    figure.savefig(path, dpi=100)
    return path


def confusion_matrix(rows: list[dict], class_names: list[str]) -> torch.Tensor:
    """``(C, C + 1)`` counts from prediction rows (rows true, columns predicted, last column unparsed)."""
    index = {name: i for i, name in enumerate(class_names)}
    matrix = torch.zeros(len(class_names), len(class_names) + 1, dtype=torch.long)
    for row in rows:
        predicted = row.get("prediction")
        matrix[index[row["label"]], index[predicted] if predicted is not None else len(class_names)] += 1
    return matrix


def class_names_of(run: RunRecord, rows: list[dict]) -> list[str]:
    """The run's class names, else those its predictions mention (true labels first)."""
    seen = list(dict.fromkeys([r["label"] for r in rows] + [r["prediction"] for r in rows if r.get("prediction")]))
    return list(run.class_names) + [name for name in seen if name not in run.class_names]


def confusion_figures(run: RunRecord, out: Path) -> list[Path]:
    """One confusion-matrix PNG per test set with predictions."""
    from emorl.metrics import confusion_figure

    paths = []
    for test_set in run.test_sets:
        rows = read_predictions(run, test_set)
        if not rows:
            continue
        names = class_names_of(run, rows)
        figure = confusion_figure(confusion_matrix(rows, names), names, title=f"{run.name}: {test_set}")
        path = out / f"confusion_{safe_name(run.name)}_{safe_name(test_set)}.png"
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths


def training_curves(run: RunRecord, out: Path) -> Path | None:
    """The training curves of the run that trained the model (``None`` when none were logged)."""
    source = run.training_run if run.training_run is not None and run.training_run.is_dir() else run.path
    scalars = event_scalars(source)
    tags = [tag for tag in CURVES if tag in scalars]
    if not tags:
        return None
    figure = _figure(3.2 * len(tags), 3.0)
    for k, tag in enumerate(tags):
        axes = figure.add_subplot(1, len(tags), k + 1)
        steps, values = zip(*scalars[tag])
        axes.plot(steps, values, marker="." if len(steps) < 30 else None)
        axes.set_title(tag.removeprefix("train/"))
        axes.set_xlabel("step")
    figure.suptitle(f"{run.name}: training ({source})", fontsize="small")
    path = out / f"curves_{safe_name(run.name)}.png"
    figure.savefig(path, dpi=100)
    return path
