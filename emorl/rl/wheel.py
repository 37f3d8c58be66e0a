"""Plutchik's wheel of emotions and EMO-RL's emotion similarity matrix.

EMO-RL (eq. 7) scores how close a predicted emotion is to the true one by their angle on
Plutchik's wheel: ``S(i, j) = (cos(angle(i, j)) + 1) / 2``, 1/2 when either label is neutral.
Two choices the paper leaves open are made here, documented and overridable:

- **a label and itself** score 1, neutral included (the formula as printed gives neutral-neutral
  1/2, so a correct "neutral" could never earn the full reward);
- **labels that are not on the wheel.** Plutchik's eight primaries sit 45 degrees apart
  (:data:`PLUTCHIK_ANGLES`). emorl's canonical names map onto them (``happy`` = joy, ``sad`` =
  sadness, ``angry`` = anger, ``fear``, ``surprise``, ``disgust``); the others are placed on
  Plutchik's primary dyads, halfway between the two emotions that compose them
  (:data:`DEFAULT_ANGLES`):

  ====================  ======  ============================================================
  label                 angle   why
  ====================  ======  ============================================================
  ``calm``              22.5    joy + trust ("serenity" / "acceptance"): mild, positive
  ``contempt``          247.5   disgust + anger, Plutchik's own dyad for contempt
  ``frustrated``        292.5   anger + anticipation: anger at a blocked expectation
  ``excited``           337.5   joy + anticipation ("optimism"), high-arousal positive
  ``other``             none    not an emotion: similar to nothing but itself
  ====================  ======  ============================================================

  A dyad sits 22.5 degrees from each of its parents (S = 0.96): with the default gamma 0.7, a
  near miss such as ``calm`` for ``happy`` earns ``alpha * 0.96``. Pass ``angles=`` to change any
  of this (a label mapped to ``None`` is off the wheel).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

#: Plutchik's eight primary emotions, degrees clockwise from joy.
PLUTCHIK_ANGLES: dict[str, float] = {
    "joy": 0.0, "trust": 45.0, "fear": 90.0, "surprise": 135.0,
    "sadness": 180.0, "disgust": 225.0, "anger": 270.0, "anticipation": 315.0,
}

#: emorl's canonical labels -> angle in degrees (``None``: off the wheel). See the module docstring.
DEFAULT_ANGLES: dict[str, float | None] = {
    "happy": PLUTCHIK_ANGLES["joy"],
    "fear": PLUTCHIK_ANGLES["fear"],
    "surprise": PLUTCHIK_ANGLES["surprise"],
    "sad": PLUTCHIK_ANGLES["sadness"],
    "disgust": PLUTCHIK_ANGLES["disgust"],
    "angry": PLUTCHIK_ANGLES["anger"],
    "calm": 22.5,
    "contempt": 247.5,
    "frustrated": 292.5,
    "excited": 337.5,
    "other": None,
}

NEUTRAL = "neutral"
#: S(neutral, x) for any other label x (EMO-RL eq. 7).
NEUTRAL_SIMILARITY = 0.5


def angle_similarity(degrees: float) -> float:
    """``(cos(angle) + 1) / 2``: 1 at 0 degrees, 0.854 at 45, 0.5 at 90, 0 at 180."""
    return (math.cos(math.radians(degrees)) + 1.0) / 2.0


def similarity(
    a: str,
    b: str,
    angles: Mapping[str, float | None] | None = None,
    neutral_similarity: float = NEUTRAL_SIMILARITY,
) -> float:
    """EMO-RL's similarity of two canonical labels (module docstring for the choices made).

    1 for a label and itself; ``neutral_similarity`` when exactly one is neutral; 0 when either
    is off the wheel; else the angle similarity of their positions. Raises ``KeyError`` for a
    label neither neutral nor in ``angles``.
    """
    if a == b:
        return 1.0
    if NEUTRAL in (a, b):
        return float(neutral_similarity)
    table = DEFAULT_ANGLES if angles is None else angles
    for label in (a, b):
        if label not in table:
            raise KeyError(f"label {label!r} has no place on the emotion wheel; give it one with angles=")
    if table[a] is None or table[b] is None:
        return 0.0
    return angle_similarity(float(table[a]) - float(table[b]))


def similarity_matrix(
    labels: Sequence[str],
    angles: Mapping[str, float | None] | None = None,
    neutral_similarity: float = NEUTRAL_SIMILARITY,
) -> torch.Tensor:
    """``S`` (C, C) float64 for ``labels`` in class order: ``S[i, j] = similarity(labels[i], labels[j])``."""
    return torch.tensor(
        [[similarity(a, b, angles, neutral_similarity) for b in labels] for a in labels], dtype=torch.float64
    )
