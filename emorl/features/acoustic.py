"""Classic utterance-level acoustic features (eGeMAPS-flavoured statistics) for the baseline.

Blocks (all statistics over the clip's frames, 25 ms windows, 10 ms hop at 16 kHz):

- spectral envelope: 20 MFCCs and their deltas, mean and standard deviation (80);
- energy: RMS level in dB — mean, std, range (5th-95th percentile), slope per second (4);
- pitch: F0 from YIN (55-500 Hz) on voiced frames, in semitones re 55 Hz — mean, std, range,
  slope per second — and the voiced-frame fraction (5);
- timing: energy-envelope peak rate per second (a syllable-rate proxy) and the pause ratio (2);
- spectral shape: centroid, roll-off, flatness and zero-crossing rate, mean and std (8).

Undefined statistics (a silent or very short clip, no voiced frame) are 0, never NaN.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
_FRAME = 400
_HOP = 160
_YIN_FRAME = 1024
_N_MFCC = 20


def feature_names() -> list[str]:
    names = []
    for kind in ("mfcc", "dmfcc"):
        for stat in ("mean", "std"):
            names += [f"{kind}{i}_{stat}" for i in range(1, _N_MFCC + 1)]
    names += ["rms_db_mean", "rms_db_std", "rms_db_range", "rms_db_slope"]
    names += ["f0_st_mean", "f0_st_std", "f0_st_range", "f0_st_slope", "voiced_fraction"]
    names += ["peak_rate", "pause_ratio"]
    for kind in ("centroid", "rolloff", "flatness", "zcr"):
        names += [f"{kind}_mean", f"{kind}_std"]
    return names


ACOUSTIC_FEATURE_DIM = len(feature_names())


def _slope(values: np.ndarray, hop_seconds: float) -> float:
    if len(values) < 2:
        return 0.0
    t = np.arange(len(values)) * hop_seconds
    return float(np.polyfit(t, values, 1)[0])


def _stats(x: np.ndarray) -> tuple[float, float]:
    return (float(x.mean()), float(x.std())) if x.size else (0.0, 0.0)


def acoustic_features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A fixed-size float32 vector (:data:`ACOUSTIC_FEATURE_DIM`) describing one mono clip."""
    import librosa

    y = np.nan_to_num(np.asarray(waveform, dtype=np.float32))
    if sample_rate != SAMPLE_RATE:
        from emorl.audio import resample

        y = resample(y, sample_rate, SAMPLE_RATE)
    if len(y) < _YIN_FRAME:  # shorter than one analysis window: pad with silence
        y = np.pad(y, (0, _YIN_FRAME - len(y)))
    hop_s = _HOP / SAMPLE_RATE
    out: list[float] = []

    mfcc = librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=_N_MFCC, n_fft=512, win_length=_FRAME,
                                hop_length=_HOP, n_mels=40)
    delta = librosa.feature.delta(mfcc, mode="nearest") if mfcc.shape[1] >= 3 else np.zeros_like(mfcc)
    for block in (mfcc, delta):
        out += block.mean(1).tolist() + block.std(1).tolist()

    rms = librosa.feature.rms(y=y, frame_length=_FRAME, hop_length=_HOP)[0]
    rms_db = 20 * np.log10(np.maximum(rms, 1e-5))
    p5, p95 = np.percentile(rms_db, [5, 95])
    out += [*_stats(rms_db), float(p95 - p5), _slope(rms_db, hop_s)]

    active = rms_db > max(rms_db.max() - 35.0, -70.0)
    f0 = librosa.yin(y, fmin=55, fmax=500, sr=SAMPLE_RATE, frame_length=_YIN_FRAME, hop_length=_HOP)
    n = min(len(f0), len(active))
    f0, active_f0 = f0[:n], active[:n]
    # YIN always answers; keep frames that are loud and whose F0 is inside the search range.
    voiced = active_f0 & (f0 > 56) & (f0 < 495)
    semitones = 12 * np.log2(f0[voiced] / 55.0) if voiced.any() else np.zeros(0)
    if semitones.size:
        q5, q95 = np.percentile(semitones, [5, 95])
        out += [*_stats(semitones), float(q95 - q5), _slope(semitones, hop_s)]
    else:
        out += [0.0, 0.0, 0.0, 0.0]
    out.append(float(voiced.mean()) if n else 0.0)

    duration = len(y) / SAMPLE_RATE
    envelope = np.convolve(rms, np.ones(5) / 5, mode="same")
    peaks = (envelope[1:-1] > envelope[:-2]) & (envelope[1:-1] >= envelope[2:]) & active[1:-1]
    out.append(float(peaks.sum()) / duration)
    out.append(float(1.0 - active.mean()))

    spectrum = np.abs(librosa.stft(y, n_fft=512, win_length=_FRAME, hop_length=_HOP)) + 1e-10
    for feat in (
        librosa.feature.spectral_centroid(S=spectrum, sr=SAMPLE_RATE)[0] / 1000.0,
        librosa.feature.spectral_rolloff(S=spectrum, sr=SAMPLE_RATE)[0] / 1000.0,
        librosa.feature.spectral_flatness(S=spectrum)[0],
        librosa.feature.zero_crossing_rate(y, frame_length=_FRAME, hop_length=_HOP)[0],
    ):
        out += list(_stats(feat))
    vector = np.asarray(out, dtype=np.float32)
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)
