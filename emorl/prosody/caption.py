"""The caption of a clip's prosody (one deterministic line from its bins) and a manifest row's entry.

``pitch: high and rising, wide range; loudness: normal, steady; rate: fast; pauses: few;
voice: breathy (low HNR)`` (format in ``docs/prosody.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emorl.prosody.bins import UNKNOWN, ProsodyThresholds
from emorl.prosody.measures import PROSODY_VERSION, ProsodyMeasures

def prosody_caption(measures: ProsodyMeasures, bins: Mapping[str, str]) -> str:
    """One short, deterministic line from the bins (format in ``docs/prosody.md``).

    ``pitch: LEVEL[ and rising|falling][, narrow|wide range]; loudness: soft|normal|loud[, steady|
    variable]; rate: slow|normal|fast; pauses: none|few|some|many; voice: ...``. A part whose
    bins are unknown is left out; a silent clip is ``"silent"``.
    """
    if measures.energy_mean_db is None:
        return "silent"
    parts = []
    level = bins.get("pitch", UNKNOWN)
    if level == UNKNOWN:
        parts.append("pitch: none (unvoiced)" if "unvoiced" in measures.fallbacks else "")
    else:
        text = level
        slope, slope_bin = measures.pitch_slope_st_s, bins.get("pitch_slope")
        if slope is not None and slope_bin == "high" and slope > 0:
            text += " and rising"
        elif slope is not None and slope_bin == "low" and slope < 0:
            text += " and falling"
        extent = {"low": "narrow range", "high": "wide range"}.get(bins.get("pitch_range", UNKNOWN))
        parts.append(f"pitch: {text}" + (f", {extent}" if extent else ""))
    loud = {"low": "soft", "normal": "normal", "high": "loud"}.get(bins.get("energy", UNKNOWN))
    if loud:
        steady = {"low": "steady", "high": "variable"}.get(bins.get("energy_variability", UNKNOWN))
        parts.append(f"loudness: {loud}" + (f", {steady}" if steady else ""))
    rate = {"low": "slow", "normal": "normal", "high": "fast"}.get(bins.get("rate", UNKNOWN))
    if rate:
        parts.append(f"rate: {rate}")
    if measures.pause_count == 0:
        parts.append("pauses: none")
    elif bins.get("pauses", UNKNOWN) != UNKNOWN:
        parts.append("pauses: " + {"low": "few", "normal": "some", "high": "many"}[bins["pauses"]])
    if bins.get("hnr", UNKNOWN) != UNKNOWN:
        voice = []
        if bins["hnr"] == "low":
            voice.append("breathy (low HNR)")
        rough = [name for name in ("jitter", "shimmer") if bins.get(name) == "high"]
        if rough:
            voice.append(f"rough (high {' and '.join(rough)})")
        if not voice:
            voice.append("clear (high HNR)" if bins["hnr"] == "high" else "modal")
        parts.append("voice: " + ", ".join(voice))
    return "; ".join(p for p in parts if p)


def annotate(measures: ProsodyMeasures, thresholds: ProsodyThresholds, gender: str | None = None) -> dict[str, Any]:
    """What a manifest row stores under ``"prosody"``: measures, bins and caption of one clip."""
    bins = thresholds.bin(measures, gender)
    return {"measures": measures.to_dict(), "bins": bins, "caption": prosody_caption(measures, bins),
            "version": PROSODY_VERSION}
