"""ESWR's partial-credit coefficient alpha over training (EMO-RL: "dynamically adjusting from 1 to 0")."""

from __future__ import annotations

import math
from typing import Literal

AlphaSchedule = Literal["linear", "cosine", "constant"]


def alpha_at(
    step: int,
    total_steps: int,
    schedule: AlphaSchedule = "linear",
    start: float = 1.0,
    end: float = 0.0,
) -> float:
    """alpha at optimiser step ``step`` (0-based) of ``total_steps``.

    ``linear``: ``start`` at step 0 to ``end`` at the last step; ``cosine``: the same ends along
    a half cosine; ``constant``: ``start`` throughout. Steps past the end stay at ``end``.
    """
    if schedule == "constant":
        return float(start)
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"alpha schedule must be linear, cosine or constant, not {schedule!r}")
    if total_steps <= 1:
        return float(end if step > 0 else start)
    progress = min(max(step, 0) / (total_steps - 1), 1.0)
    if schedule == "cosine":
        progress = (1.0 - math.cos(math.pi * progress)) / 2.0
    return float(start + (end - start) * progress)
