"""Corpus-relative prosody bins: tertile cut points (pitch per gender, rate per source) -> low / normal / high.

:func:`fit_thresholds` takes a corpus's measures and returns :class:`ProsodyThresholds`, whose
:meth:`~ProsodyThresholds.bin` puts any clip, new ones included, into ``low`` / ``normal`` /
``high`` (``unknown`` where the measure is missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emorl.prosody.measures import ProsodyMeasures

#: Binned quantity -> the measure it bins. Pitch is cut per speaker gender, rate per rate source.
BINNED: dict[str, str] = {
    "pitch": "pitch_mean_hz",
    "pitch_range": "pitch_range_st",
    "pitch_slope": "pitch_slope_st_s",
    "energy": "energy_mean_db",
    "energy_variability": "energy_std_db",
    "rate": "rate_syl_s",
    "pauses": "pause_ratio",
    "jitter": "jitter_local_pct",
    "shimmer": "shimmer_local_pct",
    "hnr": "hnr_db",
}
BINS = ("low", "normal", "high")
UNKNOWN = "unknown"
ALL = "all"
MIN_GROUP = 6  #: a gender (or rate source) with fewer measured clips is cut with the corpus's cuts
#: Quantities whose 0 means "none" (no pause at all): 0 is ``low`` and the tertiles are cut over
#: the clips above 0, so a corpus where most clips have no pause still tells few from many.
ZERO_IS_LOW = frozenset({"pauses"})


def _gender(gender: str | None) -> str | None:
    g = str(gender or "").strip().upper()[:1]
    return g if g in ("M", "F") else None


def _group(name: str, measures: ProsodyMeasures, gender: str | None) -> str | None:
    if name == "pitch":
        return _gender(gender)
    if name == "rate":
        return measures.rate_source
    return None


@dataclass(frozen=True)
class ProsodyThresholds:
    """Tertile cut points of a corpus: ``cuts[quantity][group] = (low_below, high_above)``.

    ``group`` is ``"all"`` (every clip), a gender ``"M"`` / ``"F"`` (pitch) or a rate source
    ``"transcript"`` / ``"audio"`` (rate); a clip whose group has no cuts uses ``"all"``. A value
    below the first cut is ``low``, above the second ``high``, else ``normal`` (so a cut shared
    by many equal values puts those values in ``normal``); a pause ratio of 0 is ``low``
    (:data:`ZERO_IS_LOW`).
    """

    cuts: dict[str, dict[str, tuple[float, float]]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def bin_value(self, name: str, value: float | None, group: str | None = None) -> str:
        by_group = self.cuts.get(name) or {}
        cut = by_group.get(group) if group is not None else None
        cut = cut or by_group.get(ALL)
        if name in ZERO_IS_LOW and value == 0:
            return "low"
        if value is None or cut is None:
            return UNKNOWN
        return "low" if value < cut[0] else "high" if value > cut[1] else "normal"

    def bin(self, measures: ProsodyMeasures, gender: str | None = None) -> dict[str, str]:
        """Every quantity of :data:`BINNED` -> ``low`` / ``normal`` / ``high`` / ``unknown``."""
        return {name: self.bin_value(name, getattr(measures, attr), _group(name, measures, gender))
                for name, attr in BINNED.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"cuts": {n: {g: [round(c[0], 4), round(c[1], 4)] for g, c in groups.items()}
                         for n, groups in self.cuts.items()},
                "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProsodyThresholds:
        cuts = {n: {g: (float(c[0]), float(c[1])) for g, c in groups.items()} for n, groups in data["cuts"].items()}
        return cls(cuts, {n: dict(g) for n, g in (data.get("counts") or {}).items()})


def fit_thresholds(items: Iterable[tuple[ProsodyMeasures, str | None]]) -> ProsodyThresholds:
    """Tertiles (1/3 and 2/3 quantiles, linear interpolation) of every binned quantity.

    ``items`` are (measures, speaker gender or None) of every clip of a corpus. Each quantity is
    cut over all clips where it is defined (group ``"all"``; pauses: where above 0) and, for
    pitch, per gender (rate: per source) with at least :data:`MIN_GROUP` clips. A quantity
    defined nowhere has no cuts.
    """
    values: dict[str, dict[str, list[float]]] = {name: {} for name in BINNED}
    for measures, gender in items:
        for name, attr in BINNED.items():
            value = getattr(measures, attr)
            if value is None or (name in ZERO_IS_LOW and value == 0):
                continue
            values[name].setdefault(ALL, []).append(float(value))
            group = _group(name, measures, gender)
            if group is not None:
                values[name].setdefault(group, []).append(float(value))
    cuts: dict[str, dict[str, tuple[float, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, groups in values.items():
        for group, vals in sorted(groups.items()):
            if group != ALL and len(vals) < MIN_GROUP:
                continue
            q1, q2 = np.quantile(np.asarray(vals), [1 / 3, 2 / 3])
            cuts.setdefault(name, {})[group] = (float(q1), float(q2))
            counts.setdefault(name, {})[group] = len(vals)
    return ProsodyThresholds(cuts, counts)
