"""Classic utterance-level acoustic features (eGeMAPS-flavoured statistics) for the baseline.

:func:`acoustic_features` turns one mono clip into a fixed-size float32 vector of
:data:`ACOUSTIC_FEATURE_DIM` statistics; :func:`feature_names` names them. Everything is computed
at 16 kHz (other rates are resampled first) on frames of 25 ms every 10 ms (pitch: 64 ms
frames, same hop), with numpy/scipy and one cached mel filter bank, so a 2 s clip costs a few
milliseconds on one CPU core.

**Speech frames.** A frame is *active* when its RMS level is within 35 dB of the clip's loudest
frame and above -65 dBFS. The *speech span* runs from the first to the last active frame, so
the leading and trailing silence that acted corpora carry (RAVDESS: about 1 s each side) does
not dilute rates and ratios. Statistics are taken over active frames unless said otherwise.

Blocks, in vector order:

- **spectral envelope** (80): MFCC 1-20 (40 mel bands, 0-8 kHz, log power, DCT-II) and their
  deltas (regression over +-2 frames): mean then standard deviation of each, over active
  frames — ``mfcc{i}_{mean,std}``, ``dmfcc{i}_{mean,std}``;
- **energy** (4): RMS level in dB re full scale — mean, std, range (95th - 5th percentile) and
  slope (dB per second, least squares over time) — ``rms_db_*``;
- **pitch** (5): F0 by YIN (de Cheveigné & Kawahara 2002; 55-500 Hz, cumulative mean normalised
  difference, first trough under 0.1 else the global minimum, parabolic interpolation). A frame
  is *voiced* when it is active, its aperiodicity (the normalised difference at the chosen lag)
  is below 0.35 and its F0 is inside the search range. On voiced frames, F0 in semitones re
  55 Hz: mean, std, range (95th - 5th percentile), slope (semitones per second) —
  ``f0_st_*`` — and ``voiced_fraction``, voiced frames over speech-span frames;
- **timing** (2): ``peak_rate``, energy-envelope peaks per second of speech span (a syllable
  nucleus rate: peaks of the 50 ms-smoothed dB envelope that stand out by 2 dB from their
  surroundings, at least 80 ms apart, on voiced frames), and ``pause_ratio``, the fraction of
  speech-span frames that are not active;
- **spectral shape** (8): spectral centroid and 85 % roll-off (kHz), spectral flatness and
  zero-crossing rate: mean and std over active frames — ``centroid_*``, ``rolloff_*``,
  ``flatness_*``, ``zcr_*``.

Undefined statistics are 0, never NaN: a clip with no active frame (silent, empty, all NaN)
gives the zero vector; no voiced frame gives 0 for the pitch block; a statistic over one frame
has std and slope 0. Non-finite input samples are treated as 0.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000
_FRAME = 400  # 25 ms analysis window
_HOP = 160  # 10 ms hop
_N_FFT = 512
_N_MELS = 40
_N_MFCC = 20
_YIN_FRAME = 1024  # 64 ms: two periods of the lowest F0 (55 Hz) fit in the window
_YIN_WINDOW = _YIN_FRAME // 2
FMIN, FMAX = 55.0, 500.0
_YIN_TROUGH = 0.1
_VOICING_APERIODICITY = 0.35
_ACTIVE_BELOW_PEAK_DB = 35.0
_ACTIVE_FLOOR_DB = -65.0
_SILENCE_DB = -100.0


def feature_names() -> list[str]:
    """Names of the :func:`acoustic_features` vector's entries, in order."""
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
_HOP_S = _HOP / SAMPLE_RATE


@lru_cache(maxsize=1)
def _analysis_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann window, mel filter bank (n_mels, bins) and DCT-II matrix (n_mfcc, n_mels)."""
    from scipy.fft import dct

    from emorl.librosa_safe import import_librosa

    librosa = import_librosa()

    window = np.hanning(_FRAME + 2)[1:-1].astype(np.float32)
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=_N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2)
    dct_matrix = dct(np.eye(_N_MELS), type=2, norm="ortho", axis=0)[:_N_MFCC]
    return window, mel.astype(np.float32), dct_matrix.astype(np.float32)


def _frames(y: np.ndarray, length: int) -> np.ndarray:
    """Centred frames ``(n_frames, length)`` every hop; frame t is centred on sample t * hop."""
    padded = np.pad(y, (length // 2, length // 2))
    return np.lib.stride_tricks.sliding_window_view(padded, length)[::_HOP][: len(y) // _HOP + 1]


def _mean_std(x: np.ndarray) -> list[float]:
    """Mean and std along axis 0 (zeros for no rows)."""
    if x.shape[0] == 0:
        width = x.shape[1] if x.ndim > 1 else 1
        return [0.0] * (2 * width)
    return np.concatenate([np.atleast_1d(x.mean(0)), np.atleast_1d(x.std(0))]).tolist()


def _slope(times: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of values over times (0 with fewer than two points)."""
    if len(values) < 2:
        return 0.0
    t = times - times.mean()
    denom = float(t @ t)
    return float(t @ (values - values.mean()) / denom) if denom > 0 else 0.0


def _range(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    low, high = np.percentile(values, [5, 95])
    return float(high - low)


def _deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-width frames (edges repeated), features ``(frames, dims)``."""
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    n = len(features)
    num = sum(k * (padded[width + k : width + k + n] - padded[width - k : width - k + n]) for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def yin(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz) and aperiodicity (0 periodic .. 1 noise) per 10 ms frame, by YIN, 55-500 Hz.

    ``y`` must be at :data:`SAMPLE_RATE`. Frames are centred like the other features' frames.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"yin expects {SAMPLE_RATE} Hz audio, got {sample_rate}")
    from scipy.fft import irfft, rfft

    min_lag = int(np.floor(SAMPLE_RATE / FMAX))
    max_lag = int(np.ceil(SAMPLE_RATE / FMIN))
    w = _YIN_WINDOW
    y = np.asarray(y, dtype=np.float32)
    # Lags up to max_lag only read the first w + max_lag samples of a frame: with an FFT of
    # _YIN_FRAME points the circular correlation does not wrap around for those lags.
    frames = _frames(y, _YIN_FRAME)[:, : w + max_lag + 1]
    n_frames = len(frames)
    # r(tau) = sum_{j<w} x_j x_{j+tau}: cross-correlation of the frame's head with the frame.
    spectrum = rfft(frames, _YIN_FRAME, axis=1)
    head = rfft(frames[:, :w], _YIN_FRAME, axis=1)
    acf = irfft(np.conj(head) * spectrum, _YIN_FRAME, axis=1)[:, : max_lag + 1]
    # E(tau) = sum_{j<w} x_{j+tau}^2, from one cumulative sum of squares over the whole clip.
    padded = np.pad(y.astype(np.float64), (_YIN_FRAME // 2, _YIN_FRAME // 2))
    cumsum = np.concatenate([[0.0], np.cumsum(padded**2)])
    start = (np.arange(n_frames) * _HOP)[:, None] + np.arange(max_lag + 1)[None, :]
    energy = (cumsum[start + w] - cumsum[start]).astype(np.float32)
    diff = np.maximum(energy[:, :1] + energy - 2 * acf, 0.0)  # d(tau), tau = 0..max_lag
    cumulative = np.cumsum(diff[:, 1:], axis=1) / np.arange(1, max_lag + 1, dtype=np.float32)
    tiny = np.float32(1e-9) * np.maximum(energy[:, :1], np.float32(1e-12))
    cmnd = np.where(cumulative > tiny, diff[:, 1:] / np.maximum(cumulative, tiny), 1.0)
    # d'(tau), tau = 1..max_lag; 1 (no periodicity) on silent frames.
    lags = cmnd[:, min_lag - 1 : max_lag]  # tau = min_lag..max_lag
    inner = lags[:, 1:-1]
    trough = (inner <= lags[:, :-2]) & (inner < lags[:, 2:]) & (inner < _YIN_TROUGH)
    has_trough = trough.any(axis=1)
    best = np.where(has_trough, trough.argmax(axis=1) + 1, lags.argmin(axis=1))
    rows = np.arange(len(lags))
    # Parabolic interpolation around the chosen lag.
    left = lags[rows, np.maximum(best - 1, 0)]
    mid = lags[rows, best]
    right = lags[rows, np.minimum(best + 1, lags.shape[1] - 1)]
    curvature = left - 2 * mid + right
    shift = np.where(
        (best > 0) & (best < lags.shape[1] - 1) & (np.abs(curvature) > 1e-12),
        0.5 * (left - right) / np.where(np.abs(curvature) > 1e-12, curvature, 1.0),
        0.0,
    )
    period = min_lag + best + np.clip(shift, -1.0, 1.0)
    return (SAMPLE_RATE / period).astype(np.float32), mid.astype(np.float32)


def _peak_count(envelope_db: np.ndarray, allowed: np.ndarray, floor_db: float) -> int:
    """Syllable-nucleus proxy: prominent (2 dB), well-separated (80 ms) peaks of the dB envelope
    that fall on ``allowed`` frames. Outside the envelope counts as silence at ``floor_db``, so a
    nucleus right at the clip's edge still stands out."""
    from scipy.signal import find_peaks

    bounded = np.concatenate([[floor_db], envelope_db, [floor_db]])
    peaks, _ = find_peaks(bounded, prominence=2.0, distance=8)
    return int(allowed[peaks - 1].sum())


def acoustic_features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A fixed-size float32 vector (:data:`ACOUSTIC_FEATURE_DIM`) describing one mono clip.

    See the module docstring for the blocks. Pure: no state, no I/O.
    """
    y = np.nan_to_num(np.asarray(waveform, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate != SAMPLE_RATE and y.size:
        from emorl.audio import resample

        y = resample(y, sample_rate, SAMPLE_RATE)
    out = np.zeros(ACOUSTIC_FEATURE_DIM, dtype=np.float32)
    if y.size == 0:
        return out
    window, mel_fb, dct_matrix = _analysis_tables()

    frames = _frames(y, _FRAME)  # (n, 400)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    rms_db = 20 * np.log10(np.maximum(rms, 10 ** (_SILENCE_DB / 20)))
    threshold = max(float(rms_db.max()) - _ACTIVE_BELOW_PEAK_DB, _ACTIVE_FLOOR_DB)
    active = rms_db > threshold
    if not active.any():
        return out
    first, last = np.flatnonzero(active)[[0, -1]]
    span = slice(first, last + 1)
    span_frames = last - first + 1
    times = np.arange(len(frames)) * _HOP_S
    values: list[float] = []

    # Spectral envelope: MFCC and deltas.
    power = np.abs(np.fft.rfft(frames * window, _N_FFT, axis=1)) ** 2  # (n, 257)
    mel = power @ mel_fb.T
    mfcc = (10 * np.log10(np.maximum(mel, 1e-10))) @ dct_matrix.T  # (n, 20)
    delta = _deltas(mfcc)
    values += _mean_std(mfcc[active]) + _mean_std(delta[active])

    # Energy.
    level = rms_db[active]
    values += _mean_std(level) + [_range(level), _slope(times[active], level)]

    # Pitch.
    f0, aperiodicity = yin(y)
    n = min(len(f0), len(frames))
    voiced = np.zeros(len(frames), dtype=bool)
    voiced[:n] = active[:n] & (aperiodicity[:n] < _VOICING_APERIODICITY) & (f0[:n] > FMIN) & (f0[:n] < FMAX)
    if voiced.any():
        semitones = 12 * np.log2(f0[:n][voiced[:n]] / FMIN)
        values += _mean_std(semitones) + [_range(semitones), _slope(times[voiced], semitones)]
    else:
        values += [0.0, 0.0, 0.0, 0.0]
    values.append(float(voiced[span].sum()) / span_frames)

    # Timing.
    span_seconds = span_frames * _HOP_S
    envelope = np.convolve(np.pad(rms_db[span], 2, mode="edge"), np.ones(5) / 5, mode="valid")
    values.append(_peak_count(envelope, voiced[span], threshold) / span_seconds)
    values.append(1.0 - float(active[span].sum()) / span_frames)

    # Spectral shape.
    freqs = np.fft.rfftfreq(_N_FFT, 1 / SAMPLE_RATE)
    spec = power[active]
    total = np.maximum(spec.sum(axis=1), 1e-20)
    centroid = (spec @ freqs) / total / 1000.0
    cumulative = np.cumsum(spec, axis=1)
    rolloff = freqs[np.minimum((cumulative < 0.85 * total[:, None]).sum(axis=1), len(freqs) - 1)] / 1000.0
    amplitude = np.sqrt(spec) + 1e-10
    flatness = np.exp(np.mean(np.log(amplitude), axis=1)) / np.mean(amplitude, axis=1)
    signs = np.signbit(frames[active])
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    for feature in (centroid, rolloff, flatness, zcr):
        values += _mean_std(feature)

    out[:] = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return out
