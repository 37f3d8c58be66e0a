"""EmotionThinker-Base's prosody-description task: the target wording, its reader, and the task mix.

EmotionThinker first teaches the audio-language model to *perceive* prosody: from the audio alone,
say how high the voice is, how loud, how fast, before any emotion reasoning. emorl's version is a
second SFT task beside the emotion answer (:class:`emorl.models.sft.SFTLALM`, option ``tasks``):

- the prompt is :data:`emorl.prompts.PROSODY_QUESTION` (no emotion options, no transcript);
- the target is :func:`describe_prosody` of the clip's measured bins (``row["prosody"]["bins"]``,
  ``emorl data prosody``), in the caption's own words, e.g. ``pitch: high; loudness: soft; rate:
  normal`` (the words :func:`emorl.prosody.caption.prosody_caption` writes, so the claims reader
  of :mod:`emorl.prosody.claims` reads them back);
- a description is scored per dimension by :func:`score_description`: 1 when the level it names
  equals the bin, 0 when it names another level or none, ``None`` when the bin is unknown;
- :class:`TaskMix` picks each clip's task for an epoch from a hash of (seed, epoch, key): the same
  clip gets the same task in every run, batch order and rank, and over many clips the shares
  follow the weights. A clip picked for ``prosody`` whose row has no known bin is trained on the
  emotion task instead (:meth:`TaskMix.plan` counts these).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The described dimensions, in the order the description names them (bins of the same names).
DIMENSIONS: tuple[str, ...] = ("pitch", "energy", "rate")
#: How the description calls each dimension (the caption's part names).
DIMENSION_WORDS: dict[str, str] = {"pitch": "pitch", "energy": "loudness", "rate": "rate"}
#: bin -> word, per dimension (the caption's words: a soft voice, a fast rate).
LEVEL_WORDS: dict[str, dict[str, str]] = {
    "pitch": {"low": "low", "normal": "normal", "high": "high"},
    "energy": {"low": "soft", "normal": "normal", "high": "loud"},
    "rate": {"low": "slow", "normal": "normal", "high": "fast"},
}
#: The SFT tasks :class:`TaskMix` chooses from.
TASKS: tuple[str, ...] = ("emotion", "prosody")

_LEVELS = ("low", "normal", "high")
_WORD_TO_DIMENSION = {word: dim for dim, word in DIMENSION_WORDS.items()}
_DESCRIBED = re.compile(
    r"\b(?P<dim>" + "|".join(DIMENSION_WORDS.values()) + r")\s*:\s*(?P<level>[a-z]+)", re.IGNORECASE
)


def row_bins(row: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The measured bins of a manifest row (``row["prosody"]["bins"]``), or None when not measured."""
    prosody = (row or {}).get("prosody")
    bins = prosody.get("bins") if isinstance(prosody, Mapping) else None
    return dict(bins) if isinstance(bins, Mapping) else None


def known_levels(bins: Mapping[str, str] | None) -> dict[str, str]:
    """The described dimensions whose bin is ``low`` / ``normal`` / ``high`` (unknown ones left out)."""
    return {dim: bins[dim] for dim in DIMENSIONS if bins and bins.get(dim) in _LEVELS}


def describe_prosody(bins: Mapping[str, str] | None) -> str | None:
    """The target description of a clip's bins, or None when no described dimension is known.

    >>> describe_prosody({"pitch": "high", "energy": "low", "rate": "normal", "hnr": "low"})
    'pitch: high; loudness: soft; rate: normal'
    >>> describe_prosody({"pitch": "unknown", "energy": "high", "rate": "low"})
    'loudness: loud; rate: slow'

    A dimension whose bin is unknown (an unvoiced clip has no pitch) is left out rather than
    guessed: the model is never taught to name a level nobody measured.
    """
    levels = known_levels(bins)
    parts = [f"{DIMENSION_WORDS[dim]}: {LEVEL_WORDS[dim][level]}" for dim, level in levels.items()]
    return "; ".join(parts) or None


def read_description(text: str | None) -> dict[str, str]:
    """The levels a description names, per dimension: its first ``<dimension word>: <level word>``.

    Reads the target wording (:func:`describe_prosody`) back, case-insensitively and with any
    spacing; a level word that does not belong to its dimension (``loudness: fast``) or a second
    mention of a dimension is ignored.

    >>> read_description("Pitch: LOW; loudness: loud; rate: fast; pitch: high")
    {'pitch': 'low', 'energy': 'high', 'rate': 'high'}
    """
    found: dict[str, str] = {}
    for match in _DESCRIBED.finditer(text or ""):
        dim = _WORD_TO_DIMENSION[match.group("dim").lower()]
        level = {w: lv for lv, w in LEVEL_WORDS[dim].items()}.get(match.group("level").lower())
        if level is not None and dim not in found:
            found[dim] = level
    return found


def score_description(text: str | None, bins: Mapping[str, str] | None) -> dict[str, int | None]:
    """Per dimension: 1 when the description names the measured level, 0 when another or none,
    None when the bin is unknown (nothing to check)."""
    said = read_description(text)
    known = known_levels(bins)
    return {dim: (int(said.get(dim) == known[dim]) if dim in known else None) for dim in DIMENSIONS}


def _unit_interval(*parts: Any) -> float:
    """A number in [0, 1) from a hash of ``parts`` (stable across runs, processes and platforms)."""
    digest = hashlib.sha1("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


@dataclass(frozen=True)
class TaskMix:
    """Which SFT task each clip trains on, per epoch: weights over :data:`TASKS` and a seed."""

    weights: dict[str, float]
    seed: int = 0

    @classmethod
    def from_config(cls, tasks: Mapping[str, float] | Sequence[Any] | None, seed: int = 0) -> TaskMix | None:
        """``{emotion: 1.0, prosody: 1.0}``, ``[emotion, prosody]`` (equal weights) or
        ``[{name: prosody, weight: 2}, ...]``; None for None (the emotion task alone, as without a mix)."""
        if tasks is None:
            return None
        if isinstance(tasks, Mapping):
            items = list(tasks.items())
        elif isinstance(tasks, Sequence) and not isinstance(tasks, str):
            items = [(t, 1.0) if isinstance(t, str) else (t.get("name"), t.get("weight", 1.0))
                     if isinstance(t, Mapping) else (t, None) for t in tasks]
        else:
            raise ValueError(f"tasks must be a mapping of task -> weight or a list, not {tasks!r}")
        weights: dict[str, float] = {}
        for name, weight in items:
            if name not in TASKS:
                raise ValueError(f"unknown SFT task {name!r}; choose from {', '.join(TASKS)}")
            if name in weights:
                raise ValueError(f"SFT task {name!r} is listed twice")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
                raise ValueError(f"the weight of SFT task {name!r} must be a number >= 0, not {weight!r}")
            weights[name] = float(weight)
        if not any(weights.values()):
            raise ValueError(f"tasks {dict(items)!r}: at least one task needs a weight above 0")
        return cls({name: weights[name] for name in TASKS if weights.get(name, 0) > 0}, int(seed))

    def uses(self, task: str) -> bool:
        return self.weights.get(task, 0.0) > 0

    def choose(self, key: str, epoch: int | str) -> str:
        """The task of clip ``key`` in ``epoch``: a draw from the weights, by hash (no RNG state)."""
        total = sum(self.weights.values())
        point = _unit_interval(self.seed, epoch, key) * total
        for name, weight in self.weights.items():
            point -= weight
            if point < 0:
                return name
        return next(reversed(self.weights))  # rounding at the very top of the interval

    def plan(self, keys: Sequence[str], rows: Sequence[Mapping | None], epoch: int | str) -> tuple[list[str], int]:
        """Each clip's task, and how many clips drawn for ``prosody`` fell back to ``emotion``
        because their row has no known bin (corpus not measured, or a silent clip)."""
        tasks, fallbacks = [], 0
        for key, row in zip(keys, rows):
            task = self.choose(key, epoch)
            if task == "prosody" and describe_prosody(row_bins(row)) is None:
                task, fallbacks = "emotion", fallbacks + 1
            tasks.append(task)
        return tasks, fallbacks
