"""Acoustic features measure what they claim: pitch, loudness, rate; never NaN."""

import time

import numpy as np
import pytest

from emorl.features.acoustic import ACOUSTIC_FEATURE_DIM, acoustic_features, feature_names, yin
from tests.corpus_factory import tone

NAMES = feature_names()


def _get(vector, name):
    return float(vector[NAMES.index(name)])


def test_dimension_and_names():
    assert len(NAMES) == ACOUSTIC_FEATURE_DIM == len(set(NAMES))
    vector = acoustic_features(tone(200, 1.0))
    assert vector.shape == (ACOUSTIC_FEATURE_DIM,) and vector.dtype == np.float32


@pytest.mark.parametrize("wave", [np.zeros(16000, np.float32), np.zeros(10, np.float32),
                                  np.zeros(0, np.float32), np.full(800, np.nan, np.float32)])
def test_silent_short_and_nan_clips_give_finite_zeros(wave):
    vector = acoustic_features(wave)
    assert np.isfinite(vector).all()
    assert _get(vector, "voiced_fraction") == 0.0


def test_pitch_in_semitones_tracks_a_tone_an_octave_apart():
    low = _get(acoustic_features(tone(110, 1.0)), "f0_st_mean")
    high = _get(acoustic_features(tone(220, 1.0)), "f0_st_mean")
    assert low == pytest.approx(12.0, abs=0.3)  # 110 Hz is 12 semitones above 55 Hz
    assert high - low == pytest.approx(12.0, abs=0.3)
    assert _get(acoustic_features(tone(220, 1.0)), "voiced_fraction") > 0.9


def test_a_pitch_glide_has_a_positive_slope_and_range():
    t = np.arange(16000) / 16000
    glide = (0.3 * np.sin(2 * np.pi * (150 * t + 75 * t**2))).astype(np.float32)  # 150 -> 300 Hz
    vector = acoustic_features(glide)
    assert _get(vector, "f0_st_slope") > 8  # about 12 semitones over 1 s
    assert _get(vector, "f0_st_range") > 8


def test_louder_is_higher_energy_and_other_rates_resample():
    quiet = _get(acoustic_features(tone(200, 1.0, amplitude=0.05)), "rms_db_mean")
    loud = _get(acoustic_features(tone(200, 1.0, amplitude=0.5)), "rms_db_mean")
    assert loud - quiet == pytest.approx(20.0, abs=0.5)
    at_48k = acoustic_features(tone(110, 1.0, sr=48000), sample_rate=48000)
    assert _get(at_48k, "f0_st_mean") == pytest.approx(12.0, abs=0.3)


def test_pauses_and_bursts_raise_pause_ratio_and_peak_rate():
    burst = tone(200, 0.15)
    gap = np.zeros(int(0.15 * 16000), np.float32)
    choppy = np.concatenate([burst, gap] * 5)
    steady = tone(200, len(choppy) / 16000)
    assert _get(acoustic_features(choppy), "pause_ratio") > 0.3
    assert _get(acoustic_features(steady), "pause_ratio") < 0.05
    assert _get(acoustic_features(choppy), "peak_rate") >= 3


@pytest.mark.parametrize("freq", [70.0, 110.0, 196.0, 330.0, 470.0])
def test_yin_finds_a_tone_across_the_search_range(freq):
    f0, aperiodicity = yin(tone(freq, 0.5))
    middle = slice(10, -10)  # away from the zero-padded edges
    assert np.median(f0[middle]) == pytest.approx(freq, rel=0.01)
    assert np.all(aperiodicity[middle] < 0.1)


def test_noise_is_mostly_unvoiced_and_a_silent_clip_is_the_zero_vector():
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert _get(acoustic_features(noise), "voiced_fraction") < 0.2
    assert not acoustic_features(np.zeros(16000, np.float32)).any()


def test_a_short_voiced_clip_is_finite():
    vector = acoustic_features(tone(200, 0.03))  # 30 ms: a handful of frames
    assert np.isfinite(vector).all()
    assert _get(vector, "f0_st_mean") == pytest.approx(12 * np.log2(200 / 55), abs=0.5)


def test_leading_and_trailing_silence_do_not_change_rates_or_pitch():
    speech = np.concatenate([tone(200, 0.15), np.zeros(2400, np.float32)] * 4)
    padded = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    a, b = acoustic_features(speech), acoustic_features(padded)
    for name in ("peak_rate", "pause_ratio", "voiced_fraction", "f0_st_mean", "rms_db_mean"):
        assert _get(b, name) == pytest.approx(_get(a, name), rel=0.05, abs=0.05), name


def test_fast_enough_for_the_baseline():
    """Budget: under 15 ms for a 2 s clip on one CPU core (measured 4-8 ms); asserted loosely."""
    t = np.arange(32000) / 16000
    clip = (0.3 * np.sin(2 * np.pi * (120 + 40 * np.sin(2 * np.pi * 2 * t)) * t)).astype(np.float32)
    clip *= (np.sin(2 * np.pi * 4 * t) > -0.3).astype(np.float32)  # syllable-like bursts
    acoustic_features(clip)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        acoustic_features(clip)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.05, f"{1000 * np.median(times):.1f} ms per 2 s clip"
