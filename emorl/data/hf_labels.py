"""Labels of an imported Hugging Face dataset: class ids, raw labels, the label map.

A label cell is a ``ClassLabel`` id (resolved with the feature's names), a string, or an integer
without names (then the label map must name the ids as strings). The raw label is mapped onto a
canonical emotion by a label map with the preparers' format and validation
(:meth:`emorl.labels.LabelSet.from_emobox_map`): ``--label-map FILE`` (EmoBox's
``label_map.json``: raw label -> class name, in class order; a ``null`` value marks a raw label
that is *not selected*, counted but never an error), or a corpus name whose EmoBox map emorl
embeds (``iemocap``, ``meld``, ``ravdess``, ``savee``). Without a map every raw label is its own
class, named by :func:`emorl.labels.canonical_label`, in ClassLabel order or first-seen order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emorl.labels import CORPUS_LABELS, LabelSet, UnknownLabelError, canonical_label, validate_label_map


def read_label_map(spec: str, name: str) -> tuple[LabelSet, frozenset[str]]:
    """The label set of ``--label-map`` (a JSON file or an embedded corpus name) and its
    not-selected raw labels (``null`` values)."""
    if spec.lower() in CORPUS_LABELS and not Path(spec).is_file():
        return CORPUS_LABELS[spec.lower()], frozenset()
    try:
        mapping = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read label map {spec} ({err}), give a JSON file raw label -> class name "
                         f"or one of {sorted(CORPUS_LABELS)}") from None
    if not isinstance(mapping, dict):
        validate_label_map(mapping, f"label map {spec}")  # the preparers' check: names what it is instead
    skipped = frozenset(str(raw) for raw, cls in mapping.items() if cls is None)
    kept = {str(raw): cls for raw, cls in mapping.items() if cls is not None}
    if not kept:
        raise ValueError(f"label map {spec} maps no raw label onto a class")
    # from_emobox_map validates the rest as the preparers do (every value a class name)
    return LabelSet.from_emobox_map(name, kept), skipped


class LabelResolver:
    """Cells of the label column -> (raw label, canonical label or None when not selected)."""

    def __init__(self, name: str, feature: Any, column: str, label_map: str | None = None) -> None:
        import datasets

        self.name, self.column = name, column
        self.names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        if isinstance(feature, (datasets.Sequence, getattr(datasets, "LargeList", list), list)):
            raise ValueError(f"label column {column!r} holds lists (multi-label), import-hf needs one label "
                             "per row, name another with --label-column")
        self.fixed = label_map is not None
        if label_map is not None:
            label_set, self.not_selected = read_label_map(label_map, name)
            self.raw_map, self.classes = dict(label_set.raw_map), list(label_set.classes)
        else:
            self.not_selected = frozenset()
            self.raw_map, self.classes = {}, []
            for raw in self.names or ():  # ClassLabel order is the class order
                self._learn(raw)

    def _learn(self, raw: str) -> str:
        label = canonical_label(raw)
        self.raw_map[raw] = label
        if label not in self.classes:
            self.classes.append(label)
        return label

    def raw(self, value: Any, where: str) -> str:
        """The raw label of a cell (a ClassLabel id becomes its name)."""
        if value is None or value == "" or (self.names is not None and value == -1):
            raise UnknownLabelError(f"{where}: no label in column {self.column!r}")
        if self.names is not None and isinstance(value, int):
            if not 0 <= value < len(self.names):
                raise UnknownLabelError(f"{where}: class id {value} is outside the ClassLabel names {self.names}")
            return self.names[value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.fixed:
            raise ValueError(f"label column {self.column!r} holds numbers and no ClassLabel names, pass "
                             '--label-map with the ids as keys ({"0": "angry", ...})')
        return str(value).strip() if isinstance(value, str) else str(value)

    def canonical(self, raw: str, where: str) -> str | None:
        """Canonical label of a raw label; None when the map marks it not selected."""
        if raw in self.not_selected:
            return None
        if raw in self.raw_map:
            return self.raw_map[raw]
        if not self.fixed:
            return self._learn(raw)
        raise UnknownLabelError(f"{where}: raw label {raw!r} is not in the label map {sorted(self.raw_map)}, "
                                "add it to --label-map (null to leave it out) or pass --skip-unknown-labels")

    def label_set(self) -> LabelSet:
        """The classes seen or mapped, with the raw map (written to ``label_map.json``)."""
        return LabelSet(self.name, tuple(self.classes), dict(self.raw_map))
