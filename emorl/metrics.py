"""Speech emotion recognition metrics: UA, WA, macro F1, per-class recall and parse rate.

Everything is derived from one integer confusion matrix of shape ``(C, C + 1)``: rows are the
true class, columns the predicted class, and the **last column counts unparsed predictions**
(a model answer with no parsable label, prediction id ``-1``).

The rule for unparsed answers: an unparsed prediction is **wrong for its true class** (it lowers
that class's recall, WA and F1) but is **never an extra class** in a macro average; how often
answers parse is reported on its own as ``parse_rate``. The scores equal scikit-learn's (which
EmoBox uses), see :func:`scores_from_confusion` and ``docs/metrics.md``.

:class:`EmotionMetrics` keeps that matrix as a torchmetrics state reduced by ``sum``, so it is
exact under DDP, whatever the number of batches per rank. Use it from a LightningModule as::

    self.val_metrics.update(preds, target)              # in validation_step, preds may hold -1
    ...
    scores = self.val_metrics.compute()                 # in on_validation_epoch_end (all ranks)
    self.log_dict(prefixed(scores, "val"))
    self.val_metrics.reset()
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import torch
import torchmetrics
from torch import Tensor

__all__ = [
    "UNPARSED",
    "EmotionMetrics",
    "confusion_figure",
    "format_table",
    "LENIENT_READING",
    "prefixed",
    "scores_from_confusion",
]

#: Prediction id of an answer with no parsable label.
UNPARSED = -1

#: The scalar scores :meth:`EmotionMetrics.compute` returns besides ``recall/<class>``.
SCORE_NAMES = ("ua", "wa", "f1", "parse_rate")


def _float_dtype(device: torch.device) -> torch.dtype:
    # float64 for exactness where the device has it (MPS does not).
    return torch.float32 if device.type == "mps" else torch.float64


def scores_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """Scores of a ``(C, C + 1)`` confusion matrix (rows true, columns predicted, last column unparsed).

    With ``M`` the matrix, ``n = M.sum()``, ``support[k] = M[k].sum()`` (unparsed included),
    ``tp[k] = M[k, k]`` and ``predicted[k] = M[:, k].sum()`` (parsed columns only):

    - ``wa`` (weighted accuracy) = ``trace(M) / n``; unparsed answers count as wrong.
      Equals ``sklearn.metrics.accuracy_score(y_true, y_pred)``.
    - ``recall`` (``(C,)``) = ``tp[k] / support[k]``, NaN where ``support[k] == 0``.
    - ``ua`` (unweighted accuracy) = mean of ``recall`` over the classes with support (NaN-free
      mean). Equals ``balanced_accuracy_score(y_true, y_pred)`` with ``y_pred = -1`` for unparsed
      answers: sklearn gives the ``-1`` pseudo-class no recall because it has no support.
    - ``f1`` = macro F1 over the classes that are true at least once or *parsed* predicted at
      least once (sklearn's default label set, never the unparsed pseudo-class), each
      ``2 tp / (2 tp + fp + fn)`` with ``fn`` including the class's unparsed answers and 0 when
      undefined. Equals ``f1_score(y_true, y_pred, labels=sorted(set(y_true) | set(y_pred) - {-1}),
      average="macro", zero_division=0)``.
    - ``parse_rate`` = ``1 - M[:, C].sum() / n``.
    - ``support`` (``(C,)``) = the row sums, as integers.

    An unparsed answer is never an extra class in a macro average: it would add a class with
    recall 0 (UA) or F1 0 (F1) and pull both down by an amount that depends on C, not on the
    model's emotion recognition. Scalar scores are NaN when the matrix is empty (``n == 0``).
    Scores are 0-dim float tensors on the matrix's device.
    """
    if confusion.ndim != 2 or confusion.shape[1] != confusion.shape[0] + 1:
        raise ValueError(f"confusion must have shape (C, C + 1), got {tuple(confusion.shape)}")
    m = confusion.to(_float_dtype(confusion.device))
    num_classes = m.shape[0]
    total = m.sum()
    support = m.sum(dim=1)
    tp = torch.diagonal(m[:, :num_classes])
    predicted = m[:, :num_classes].sum(dim=0)
    nan = torch.full_like(total, math.nan)
    if total == 0:
        wa = ua = f1 = parse_rate = nan
        recall = torch.full_like(support, math.nan)
    else:
        wa = tp.sum() / total
        parse_rate = 1 - m[:, num_classes].sum() / total
        has_support = support > 0
        recall = torch.where(has_support, tp / support.clamp(min=1), torch.full_like(support, math.nan))
        ua = recall[has_support].mean()
        present = has_support | (predicted > 0)
        fp = predicted - tp
        fn = support - tp  # unparsed answers are false negatives of their true class
        denominator = 2 * tp + fp + fn
        per_class_f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
        f1 = per_class_f1[present].mean()
    out_dtype = torch.float32
    return {
        "ua": ua.to(out_dtype),
        "wa": wa.to(out_dtype),
        "f1": f1.to(out_dtype),
        "parse_rate": parse_rate.to(out_dtype),
        "recall": recall.to(out_dtype),
        "support": confusion.sum(dim=1).long(),
    }


def _bincount(x: Tensor, minlength: int) -> Tensor:
    if x.device.type in ("cpu", "cuda"):  # deterministic without weights
        return torch.bincount(x, minlength=minlength)
    # MPS / XLA lack bincount: compare against every bin instead.
    return (x.reshape(-1, 1) == torch.arange(minlength, device=x.device)).sum(dim=0)


class EmotionMetrics(torchmetrics.Metric):
    """UA, WA, macro F1, parse rate and per-class recall of a classifier or a generating model.

    ``update(preds, target)`` takes class ids, ``preds`` may be ``-1`` (:data:`UNPARSED`).
    The only state is the ``(C, C + 1)`` confusion matrix (:func:`scores_from_confusion`),
    summed over ranks at :meth:`compute`, so results under DDP equal a single-process run over
    all ranks' samples, even when ranks see different numbers of batches.

    :meth:`compute` returns a flat dict of 0-dim tensors: ``ua``, ``wa``, ``f1``, ``parse_rate``
    and ``recall/<class_name>`` per class (NaN for classes with no sample). Before any update the
    scores are NaN and a warning is issued. :meth:`compute`, :meth:`confusion` and
    :attr:`num_samples` synchronise across ranks: call them on every rank.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    confmat: Tensor

    def __init__(self, class_names: Sequence[str], *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        names = [str(name) for name in class_names]
        if len(names) < 1:
            raise ValueError("class_names must name at least one class")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names must be unique, got {names}")
        self.class_names = names
        self.num_classes = len(names)
        self.validate_args = validate_args
        self.add_state(
            "confmat",
            default=torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add samples: ``preds`` in ``[-1, C)`` (``-1`` = unparsed), ``target`` in ``[0, C)``, same shape."""
        preds, target = torch.as_tensor(preds), torch.as_tensor(target)
        if preds.shape != target.shape:
            raise ValueError(f"preds and target must have the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}")
        for name, value in (("preds", preds), ("target", target)):
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise ValueError(
                    f"{name} must hold integer class ids (e.g. logits.argmax(-1)), got dtype {value.dtype}"
                )
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        if preds.numel() == 0:
            return
        c = self.num_classes
        if self.validate_args:
            if int(target.min()) < 0 or int(target.max()) >= c:
                bad = target[(target < 0) | (target >= c)]
                raise ValueError(
                    f"target ids must be in [0, {c}) for {c} classes {self.class_names}; "
                    f"got {sorted(set(bad.tolist()))[:10]}"
                )
            if int(preds.min()) < UNPARSED or int(preds.max()) >= c:
                bad = preds[(preds < UNPARSED) | (preds >= c)]
                raise ValueError(
                    f"preds ids must be in [-1, {c}) for {c} classes (-1 = unparsed answer); "
                    f"got {sorted(set(bad.tolist()))[:10]}"
                )
        preds = preds.to(self.confmat.device)
        target = target.to(self.confmat.device)
        column = torch.where(preds < 0, torch.full_like(preds, c), preds)
        counts = _bincount(target * (c + 1) + column, minlength=c * (c + 1))
        self.confmat += counts.reshape(c, c + 1)

    def compute(self) -> dict[str, Tensor]:
        """Synced scores: ``ua``, ``wa``, ``f1``, ``parse_rate``, ``recall/<class>``."""
        if int(self.confmat.sum()) == 0:
            warnings.warn(
                f"{type(self).__name__}.compute() with no samples (over all ranks): the scores are NaN",
                UserWarning,
                stacklevel=2,
            )
        scores = scores_from_confusion(self.confmat)
        out = {name: scores[name] for name in SCORE_NAMES}
        for name, value in zip(self.class_names, scores["recall"]):
            out[f"recall/{name}"] = value
        return out

    def confusion(self) -> Tensor:
        """The ``(C, C + 1)`` confusion matrix summed over all ranks (a copy; last column = unparsed)."""
        if self._is_synced:
            return self.confmat.clone()
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self.confmat.clone()

    @property
    def num_samples(self) -> int:
        """Number of samples seen over all ranks (synchronises under DDP: read it on every rank)."""
        return int(self.confusion().sum())


def prefixed(scores: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{f"{prefix}/{name}": value}`` for logging, e.g. ``prefixed(scores, "test/meld")`` -> ``test/meld/ua``."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return dict(scores)
    return {f"{prefix}/{name}": value for name, value in scores.items()}


def confusion_figure(confusion: Tensor, class_names: Sequence[str], title: str = ""):
    """A row-normalised confusion heatmap with the counts written in each cell.

    Rows are the true classes (labelled with their support), columns the predicted classes plus
    an ``unparsed`` column. Colours are the fraction of the row (so the diagonal is each class's
    recall). Built on a plain :class:`matplotlib.figure.Figure` with the Agg canvas: no display
    and no pyplot state. Returns the figure, e.g. for ``logger.experiment.add_figure(tag, figure)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = torch.as_tensor(confusion).detach().cpu().long()
    names = [str(name) for name in class_names]
    c = len(names)
    if tuple(counts.shape) != (c, c + 1):
        raise ValueError(f"confusion must have shape ({c}, {c + 1}) for {c} class names, got {tuple(counts.shape)}")
    support = counts.sum(dim=1, keepdim=True)
    fractions = (counts.double() / support.clamp(min=1).double()).numpy()
    cells = counts.numpy()

    size = 1.0 + 0.75 * (c + 1)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    fontsize = 9 if c <= 8 else 7
    for i in range(c):
        for j in range(c + 1):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            axes.text(j, i, f"{cells[i, j]}", ha="center", va="center", color=colour, fontsize=fontsize)
    axes.set_xticks(range(c + 1), labels=names + ["unparsed"], rotation=45, ha="right")
    axes.set_yticks(range(c), labels=[f"{name} ({int(n)})" for name, n in zip(names, support.squeeze(1))])
    axes.axvline(c - 0.5, color="grey", linewidth=1.0)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (support)")
    total = int(counts.sum())
    axes.set_title(f"{title}  (n={total})" if title else f"n={total}")
    return figure


#: Column headings of :func:`format_table` for the standard scores (others print as their key).
HEADINGS = {"ua": "UA", "wa": "WA", "f1": "F1", "parse_rate": "parse"}
#: A test set's scores hold this key (1.0) when its answers were read leniently (a label named
#: anywhere counts: the zero-shot ``direct`` / ``cot`` prompts); :func:`format_table` marks their parse rate.
LENIENT_READING = "lenient_reading"
_LENIENT_NOTE = "* lenient reading: a label named anywhere in the answer counts (zero-shot direct / cot)"


def _percent(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "nan" if math.isnan(value) else f"{100.0 * value:.2f}"


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    columns: Sequence[str] = SCORE_NAMES,
) -> str:
    """A plain-text table: one row per test set, the given score columns in percent (2 decimals).

    ``results`` is ``{test_set: {score: value}}`` (floats or 0-dim tensors, as from
    :meth:`EmotionMetrics.compute`); a missing score prints ``-``, a NaN ``nan``. Headings are
    ``UA WA F1 parse`` for the standard scores, the key itself for any other column. A parse rate
    read leniently (scores with :data:`LENIENT_READING`) is marked ``*`` and explained below the table.
    """
    header = ["test set", *(HEADINGS.get(column, column) for column in columns)]

    def cell(scores: Mapping[str, Any], column: str) -> str:
        lenient = column == "parse_rate" and scores.get(LENIENT_READING)
        return _percent(scores.get(column)) + ("*" if lenient else "")

    rows = [[str(name), *(cell(scores, column) for column in columns)] for name, scores in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    note = [_LENIENT_NOTE] if any(cell.endswith("*") for row in rows for cell in row[1:]) else []
    return "\n".join([line(header), rule, *(line(row) for row in rows), *note])
