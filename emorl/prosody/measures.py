"""Prosody of one utterance as numbers: pitch (pYIN), energy, speaking rate, pauses, voice quality.

:func:`measure_prosody` turns one waveform (+ its transcript) into :class:`ProsodyMeasures`;
:func:`voice_quality` is Praat's jitter / shimmer / HNR alone; :func:`speaker_medians` and
:func:`semitones_re` give a clip's pitch relative to its speaker. Everything is measured at
16 kHz on a 10 ms frame grid. Undefined measures are ``None``, never NaN; why a measure is
missing is listed in :attr:`ProsodyMeasures.fallbacks` (definitions in ``docs/prosody.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import Any

import numpy as np

from emorl.librosa_safe import import_librosa
from emorl.prosody.syllables import count_syllables

SAMPLE_RATE = 16_000
HOP = 160  #: 10 ms frame hop (pYIN and the energy frames share it)
RMS_FRAME = 400  #: 25 ms energy frames
PYIN_FRAME = 1024  #: 64 ms pYIN frames (its YIN window: 32 ms, > one period at 55 Hz)
FMIN, FMAX = 55.0, 500.0  #: pYIN search range (Hz), as EmotionThinker's pipeline
ACTIVE_BELOW_PEAK_DB = 30.0  #: a frame is active when within this of the loudest frame ...
ACTIVE_FLOOR_DB = -65.0  #: ... and above this level (dBFS)
MIN_PAUSE_S = 0.25  #: internal silences at least this long are pauses (Goldman-Eisler's 250 ms)
MIN_VOICED_FRAMES = 5  #: fewer voiced frames (50 ms) than this: no pitch ("unvoiced")
NO_TROUGH_PROB = 0.01  #: pYIN's probability for a frame with no YIN trough under any threshold
PEAK_PROMINENCE_DB = 3.0  #: audio speaking-rate estimate: envelope peaks standing out this much ...
PEAK_DISTANCE_S = 0.1  #: ... at least this far apart
PRAAT_FLOOR, PRAAT_CEILING = 75.0, 500.0  #: Praat's standard pitch floor; ceiling = pYIN's
_MARGIN_FRAMES = 10  #: pYIN runs on the speech span plus 100 ms each side
_DB_FLOOR = -100.0
PROSODY_VERSION = 1  #: bump when a measure's definition changes: stored measures are then redone

#: What a fallback in :attr:`ProsodyMeasures.fallbacks` means.
FALLBACKS = {
    "empty": "no samples: every measure is None",
    "nonfinite": "NaN / infinite samples were set to 0 before measuring",
    "silent": "no frame above the activity threshold: every measure but duration is None",
    "unvoiced": "too few voiced frames: pitch and voice quality are None",
    "no-rate": "neither a transcript nor an envelope peak gave a speaking rate",
    "voice-quality": "Praat found too few periods: jitter / shimmer / HNR (some) are None",
}


@dataclass(frozen=True)
class ProsodyMeasures:
    """The prosody of one utterance, as numbers (see ``docs/prosody.md`` for each definition)."""

    duration_s: float  #: the whole clip
    speech_s: float | None = None  #: speech span: first to last active frame
    voiced_fraction: float | None = None  #: voiced frames / speech-span frames
    pitch_mean_hz: float | None = None  #: mean F0 over voiced frames
    pitch_range_st: float | None = None  #: 95th - 5th percentile of F0, in semitones
    pitch_slope_st_s: float | None = None  #: least-squares slope of F0 in semitones per second
    energy_mean_db: float | None = None  #: mean RMS level of active frames, dBFS
    energy_std_db: float | None = None  #: its standard deviation, dB
    rate_syl_s: float | None = None  #: syllables per second of speech span
    rate_source: str | None = None  #: "transcript" or "audio" (envelope peaks)
    syllables: int | None = None  #: the syllable count the rate is made of
    pause_count: int | None = None  #: internal silences >= MIN_PAUSE_S
    pause_s: float | None = None  #: their total duration
    pause_ratio: float | None = None  #: pause_s / speech_s
    jitter_local_pct: float | None = None  #: Praat jitter (local), percent
    shimmer_local_pct: float | None = None  #: Praat shimmer (local), percent
    hnr_db: float | None = None  #: Praat harmonics-to-noise ratio (cc), mean over voiced frames
    fallbacks: tuple[str, ...] = field(default_factory=tuple)  #: names of :data:`FALLBACKS`

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON-ready, floats rounded to ``digits`` decimals (what a manifest row stores)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, digits)
        out["fallbacks"] = list(self.fallbacks)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProsodyMeasures:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones are None."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["fallbacks"] = tuple(kwargs.get("fallbacks") or ())
        kwargs.setdefault("duration_s", 0.0)
        return cls(**kwargs)


# -- measuring -------------------------------------------------------------------------------------
def _frame_levels_db(y: np.ndarray) -> np.ndarray:
    """RMS level (dBFS) of 25 ms frames centred every 10 ms (frame t at t * 10 ms)."""
    padded = np.pad(y.astype(np.float64), (RMS_FRAME // 2, RMS_FRAME // 2))
    n = 1 + len(y) // HOP
    padded = np.pad(padded, (0, max(0, (n - 1) * HOP + RMS_FRAME - len(padded))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, RMS_FRAME)[::HOP][:n]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), _DB_FLOOR)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _pyin(librosa: ModuleType, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """librosa's pYIN with emorl's settings: F0 (Hz, NaN unvoiced), voiced flags, voicing probability."""
    return librosa.pyin(segment, fmin=FMIN, fmax=FMAX, sr=SAMPLE_RATE, frame_length=PYIN_FRAME, hop_length=HOP,
                        center=True, no_trough_prob=NO_TROUGH_PROB)


def _warm_up_pyin(librosa: ModuleType) -> None:
    """One pYIN call on a 0.3 s float32 tone: compiles every kernel :func:`_pyin` uses (see emorl.librosa_safe)."""
    _pyin(librosa, np.sin(2 * np.pi * 200.0 * np.arange(4_800) / SAMPLE_RATE).astype(np.float32))


def _pitch(y: np.ndarray, first: int, last: int, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pYIN F0 (Hz) and frame times (s) of the voiced, active frames of the speech span.

    The HMM can call frames voiced that no YIN trough supports (their voicing probability is
    pYIN's ``no_trough_prob``; white noise does this): when fewer than
    :data:`MIN_VOICED_FRAMES` voiced frames have real support, the clip has no voiced frame.
    """
    lo = max(0, first - _MARGIN_FRAMES)
    hi = min(len(active), last + _MARGIN_FRAMES + 1)
    f0, voiced, probability = _pyin(import_librosa(_warm_up_pyin), y[lo * HOP : hi * HOP])
    supported = voiced & (probability > 1.5 * NO_TROUGH_PROB)
    if supported.sum() < MIN_VOICED_FRAMES:
        return np.zeros(0), np.zeros(0)
    index = lo + np.arange(len(f0))
    keep = voiced & np.isfinite(f0) & (index < len(active))
    keep[keep] &= active[index[keep]]
    return f0[keep], index[keep] * HOP / SAMPLE_RATE


def _audio_syllables(levels: np.ndarray, allowed: np.ndarray) -> int:
    """Syllable nuclei: peaks of the 50 ms-smoothed level that stand out by 3 dB, >= 100 ms apart."""
    from scipy.signal import find_peaks

    smooth = np.convolve(np.pad(levels, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    # a micro-tilt breaks ties: a row of equal ripples (a steady tone) is one peak, not one each
    smooth = smooth + 1e-6 * np.arange(len(smooth))
    bounded = np.concatenate([[_DB_FLOOR], smooth, [_DB_FLOOR]])
    distance = round(PEAK_DISTANCE_S * SAMPLE_RATE / HOP)
    peaks, _ = find_peaks(bounded, prominence=PEAK_PROMINENCE_DB, distance=distance)
    peaks = peaks - 1
    return int(allowed[peaks].sum())


def voice_quality(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[float | None, float | None, float | None]:
    """Praat's jitter (local, %), shimmer (local, %) and HNR (dB), each None when undefined.

    Praat's standard voice-report settings: ``To PointProcess (periodic, cc)`` with pitch floor
    75 Hz and ceiling 500 Hz; jitter and shimmer over periods of 0.1-20 ms, maximum period factor
    1.3, maximum amplitude factor 1.6; ``To Harmonicity (cc)`` with time step 10 ms, floor 75 Hz,
    silence threshold 0.1, 1 period per window, averaged over its voiced frames.
    """
    import parselmouth
    from parselmouth.praat import call

    def number(value) -> float | None:
        value = float(value)
        return value if math.isfinite(value) else None

    try:
        sound = parselmouth.Sound(np.asarray(y, dtype=np.float64), sampling_frequency=sample_rate)
        points = call(sound, "To PointProcess (periodic, cc)", PRAAT_FLOOR, PRAAT_CEILING)
        jitter = number(call(points, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3))
        shimmer = number(call([sound, points], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6))
        harmonicity = call(sound, "To Harmonicity (cc)", 0.01, PRAAT_FLOOR, 0.1, 1.0)
        hnr = number(call(harmonicity, "Get mean", 0, 0))
    except parselmouth.PraatError:
        return None, None, None
    return (None if jitter is None else 100 * jitter, None if shimmer is None else 100 * shimmer, hnr)


def measure_prosody(
    waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, transcript: str | None = None
) -> ProsodyMeasures:
    """Measure one mono waveform (float, -1..1); other sample rates are resampled to 16 kHz.

    ``transcript``, when given and holding words, makes the speaking rate its syllable count
    (:func:`count_syllables`) over the speech span; otherwise the rate is estimated from the
    audio (energy-envelope peaks on voiced frames). Never raises on odd audio: an empty, silent
    or unvoiced clip gives None for what cannot be measured, named in ``fallbacks``.
    """
    y = np.asarray(waveform, dtype=np.float32).reshape(-1)
    fallbacks: list[str] = []
    if not np.isfinite(y).all():
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        fallbacks.append("nonfinite")
    if sample_rate != SAMPLE_RATE and y.size:
        from emorl.audio import resample

        y = resample(y, sample_rate, SAMPLE_RATE)
    duration = y.size / SAMPLE_RATE
    if y.size == 0:
        return ProsodyMeasures(duration, fallbacks=("empty",))
    levels = _frame_levels_db(y)
    active = levels >= max(levels.max() - ACTIVE_BELOW_PEAK_DB, ACTIVE_FLOOR_DB)
    if not active.any():
        return ProsodyMeasures(duration, fallbacks=tuple(fallbacks + ["silent"]))
    first, last = int(np.argmax(active)), int(len(active) - 1 - np.argmax(active[::-1]))
    span = active[first : last + 1]
    # a 25 ms window touching sound is active: runs of active frames overstate the sound, runs
    # of silent frames understate the silence, by the window's overhang (15 ms)
    overhang = (RMS_FRAME - HOP) / SAMPLE_RATE
    speech_s = min(max(len(span) * HOP / SAMPLE_RATE - overhang, HOP / SAMPLE_RATE), duration)
    silences = [(b - a) * HOP / SAMPLE_RATE + overhang for a, b in _runs(~span)]
    pauses = [s for s in silences if s >= MIN_PAUSE_S]
    pause_s = float(min(sum(pauses), speech_s))
    energy = levels[active]

    f0, times = _pitch(y, first, last, active)
    pitch: dict[str, float | None] = {}
    jitter = shimmer = hnr = None
    if len(f0) >= MIN_VOICED_FRAMES:
        semitones = 12 * np.log2(f0 / FMIN)
        slope = float(np.polyfit(times - times.mean(), semitones, 1)[0]) if np.ptp(times) > 0 else 0.0
        p5, p95 = np.percentile(semitones, [5, 95])
        pitch = {"pitch_mean_hz": float(f0.mean()), "pitch_range_st": float(p95 - p5), "pitch_slope_st_s": slope}
        lo, hi = max(0, first - _MARGIN_FRAMES) * HOP, (last + _MARGIN_FRAMES + 1) * HOP
        jitter, shimmer, hnr = voice_quality(y[lo:hi])
        if None in (jitter, shimmer, hnr):
            fallbacks.append("voice-quality")
    else:
        fallbacks.append("unvoiced")

    words = count_syllables(transcript)
    if words > 0:
        syllables, source = words, "transcript"
    else:
        allowed = active
        if len(f0) >= MIN_VOICED_FRAMES:  # nuclei are voiced
            allowed = np.zeros_like(active)
            allowed[np.round(times * SAMPLE_RATE / HOP).astype(int)] = True
        syllables, source = _audio_syllables(levels, allowed), "audio"
    if syllables == 0:
        fallbacks.append("no-rate")
    return ProsodyMeasures(
        duration_s=duration,
        speech_s=speech_s,
        voiced_fraction=len(f0) / len(span),
        **pitch,
        energy_mean_db=float(energy.mean()),
        energy_std_db=float(energy.std()),
        rate_syl_s=syllables / speech_s if syllables else None,
        rate_source=source if syllables else None,
        syllables=syllables if syllables else None,
        pause_count=len(pauses),
        pause_s=pause_s,
        pause_ratio=pause_s / speech_s,
        jitter_local_pct=jitter,
        shimmer_local_pct=shimmer,
        hnr_db=hnr,
        fallbacks=tuple(fallbacks),
    )


def semitones_re(value_hz: float | None, reference_hz: float | None) -> float | None:
    """``12 * log2(value / reference)``, or None when either is missing or not positive."""
    if not value_hz or not reference_hz or value_hz <= 0 or reference_hz <= 0:
        return None
    return 12 * math.log2(value_hz / reference_hz)


def speaker_medians(items: Sequence[tuple[str | None, ProsodyMeasures]]) -> dict[str, float]:
    """Median ``pitch_mean_hz`` per speaker over that speaker's voiced clips (2 at least)."""
    by_speaker: dict[str, list[float]] = {}
    for speaker, measures in items:
        if speaker is not None and measures.pitch_mean_hz is not None:
            by_speaker.setdefault(str(speaker), []).append(measures.pitch_mean_hz)
    return {s: float(np.median(v)) for s, v in by_speaker.items() if len(v) >= 2}
