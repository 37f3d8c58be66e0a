"""Prosody measures are right on clips of known pitch, level, pauses, rate and voice quality.

Tolerances (also in docs/prosody.md): F0 within 2 %, pitch slope and range within 10 %, level
within 0.5 dB, pause and span durations within 30 ms, audio syllable rate within 15 %; jitter
/ shimmer / HNR by clear margins between clean and perturbed signals. The demo corpus's voices
(espeak-ng) must order by their set pitch and speaking rate, their syllable rate be proportional
to the set rate within 8 %, and the female voice be higher than the male one.
"""

import math
from dataclasses import fields

import numpy as np
import pytest

from emorl.prosody import (
    BINNED,
    FALLBACKS,
    MIN_GROUP,
    ProsodyMeasures,
    ProsodyThresholds,
    annotate,
    count_syllables,
    fit_thresholds,
    measure_prosody,
    prosody_caption,
    word_syllables,
)

SR = 16_000


def harmonic(f0, seconds, amplitude=0.3, slope_st_s=0.0, harmonics=5):
    """A voiced-like tone: 5 harmonics (1/2 amplitude each step), F0 gliding by slope_st_s."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2 ** (slope_st_s * t / 12)) / SR
    y = sum(0.5**k * np.sin((k + 1) * phase) for k in range(harmonics))
    return (amplitude * y / np.abs(y).max()).astype(np.float32)


def periodic(f0, seconds, jitter=0.0, shimmer=0.0, seed=0):
    """Period-by-period synthesis: each period's length and amplitude perturbed (relative std)."""
    rng = np.random.default_rng(seed)
    out, total = [], int(seconds * SR)
    while sum(map(len, out)) < total:
        n = SR / (f0 * (1 + jitter * rng.standard_normal()))
        phase = 2 * np.pi * np.arange(round(n)) / n
        wave = sum(0.5**k * np.sin((k + 1) * phase) for k in range(5))
        out.append((1 + shimmer * rng.standard_normal()) * wave)
    y = np.concatenate(out)[:total]
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def silence(seconds):
    return np.zeros(int(seconds * SR), np.float32)


def _nan_free(m: ProsodyMeasures):
    for f in fields(m):
        value = getattr(m, f.name)
        assert not (isinstance(value, float) and not math.isfinite(value)), f.name


# -- pitch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_steady_pitch_within_2_percent(f0):
    m = measure_prosody(harmonic(f0, 1.0))
    assert m.pitch_mean_hz == pytest.approx(f0, rel=0.02)
    assert m.pitch_range_st < 0.5 and abs(m.pitch_slope_st_s) < 0.3
    assert m.voiced_fraction > 0.9 and m.fallbacks == ()


@pytest.mark.parametrize("slope", [4.0, -6.0])
def test_glide_slope_and_range_within_10_percent(slope):
    seconds = 1.5
    m = measure_prosody(harmonic(150.0, seconds, slope_st_s=slope))
    assert m.pitch_slope_st_s == pytest.approx(slope, rel=0.10)
    # 5th-95th percentile of a linear glide: 90 % of its extent
    assert m.pitch_range_st == pytest.approx(0.9 * abs(slope) * seconds, rel=0.10)


def test_other_sample_rates_are_resampled():
    t = np.arange(22050) / 22050
    m = measure_prosody((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 22050)
    assert m.pitch_mean_hz == pytest.approx(180, rel=0.02) and m.duration_s == pytest.approx(1.0, abs=1e-3)


# -- energy, pauses, rate -------------------------------------------------------------------------
def test_level_in_dbfs_within_half_a_db():
    t = np.arange(SR) / SR
    loud = measure_prosody((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    soft = measure_prosody((0.05 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert loud.energy_mean_db == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.5)
    assert loud.energy_mean_db - soft.energy_mean_db == pytest.approx(20.0, abs=0.2)
    assert loud.energy_std_db < 1.0
    # a 12 dB step makes the level vary: std about 6 dB
    step = np.concatenate([harmonic(150, 0.5, 0.4), harmonic(150, 0.5, 0.1)])
    assert measure_prosody(step).energy_std_db == pytest.approx(6.0, abs=1.0)


def test_pause_layout_and_speech_span():
    # 0.5 s lead-in, three 0.6 s tones, a 0.4 s pause and a 0.15 s gap (below the 0.25 s threshold)
    y = np.concatenate([silence(0.5), harmonic(150, 0.6), silence(0.4), harmonic(150, 0.6), silence(0.15),
                        harmonic(150, 0.6), silence(0.5)])  # fmt: skip
    m = measure_prosody(y)
    assert m.pause_count == 1
    assert m.pause_s == pytest.approx(0.4, abs=0.03)
    assert m.speech_s == pytest.approx(2.35, abs=0.03)  # lead-in and tail excluded
    assert m.pause_ratio == pytest.approx(0.4 / 2.35, abs=0.015)
    assert m.duration_s == pytest.approx(3.35, abs=1e-3)


@pytest.mark.parametrize(
    "text, expected",
    [("Kids are talking by the door.", 7), ("The meeting is scheduled for three o'clock.", 10),
     ("Everyone left and I am all alone now.", 11), ("I told you to stop doing that right now!", 10),
     ("This food is rotten and disgusting.", 9), ("", 0), (None, 0)],
)  # fmt: skip
def test_syllable_counter(text, expected):
    assert count_syllables(text) == expected


def test_syllable_rules():
    cases = {"table": 2, "home": 1, "talked": 1, "wanted": 2, "makes": 1, "boxes": 2, "agree": 2, "you": 1,
             "yes": 1, "people": 2, "don't": 1, "2019": 4, "a": 1, "doing": 2, "being": 2, "king": 1}
    assert {w: word_syllables(w) for w in cases} == cases


def test_rate_from_the_transcript_over_the_speech_span():
    y = np.concatenate([silence(0.4), harmonic(150, 2.0), silence(0.4)])
    m = measure_prosody(y, transcript="Kids are talking by the door.")
    assert (m.rate_source, m.syllables) == ("transcript", 7)
    assert m.rate_syl_s == pytest.approx(7 / 2.0, rel=0.03)


def test_rate_from_the_audio_counts_syllable_like_bursts():
    # 4 "syllables" a second: 150 ms voiced nuclei, 100 ms dips to -20 dB
    envelope = np.concatenate([np.hanning(int(0.15 * SR)), np.full(int(0.1 * SR), 0.0)])
    envelope = 0.1 + 0.9 * np.tile(envelope, 8)
    y = harmonic(140, len(envelope) / SR) * envelope
    m = measure_prosody(y)
    assert m.rate_source == "audio" and m.syllables == 8
    assert m.rate_syl_s == pytest.approx(4.0, rel=0.15)


# -- voice quality (Praat) ------------------------------------------------------------------------
def test_voice_quality_clean_versus_perturbed():
    clean = measure_prosody(periodic(150, 1.0))
    assert clean.jitter_local_pct < 0.2 and clean.shimmer_local_pct < 1.0 and clean.hnr_db > 30
    jittery = measure_prosody(periodic(150, 1.0, jitter=0.02))
    assert jittery.jitter_local_pct > 1.0 > 5 * clean.jitter_local_pct
    shimmery = measure_prosody(periodic(150, 1.0, shimmer=0.1))
    assert shimmery.shimmer_local_pct > 5.0 and shimmery.jitter_local_pct < 0.5
    y = periodic(150, 1.0)
    noise = np.random.default_rng(1).standard_normal(len(y)).astype(np.float32)
    noisy = measure_prosody(y + noise * np.sqrt(np.mean(y**2)) / 10 ** (10 / 20))  # SNR 10 dB
    assert noisy.hnr_db < 15 < clean.hnr_db - 15


# -- bad input ------------------------------------------------------------------------------------
def test_silent_clip_is_a_counted_fallback_without_nan():
    m = measure_prosody(silence(1.0))
    assert m.fallbacks == ("silent",) and m.duration_s == 1.0
    assert all(getattr(m, f.name) is None for f in fields(m) if f.name not in ("duration_s", "fallbacks"))
    _nan_free(m)
    assert measure_prosody(np.zeros(0)).fallbacks == ("empty",)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_is_unvoiced_without_nan(seed):
    # seed 0: pYIN's HMM calls some frames voiced that no YIN trough supports; they do not count
    m = measure_prosody(np.random.default_rng(seed).normal(0, 0.1, SR).astype(np.float32))
    assert "unvoiced" in m.fallbacks and m.pitch_mean_hz is None and m.hnr_db is None
    assert m.energy_mean_db == pytest.approx(-20, abs=0.5) and m.pause_count == 0
    _nan_free(m)
    assert set(m.fallbacks) <= set(FALLBACKS)


def test_nan_samples_are_zeroed_and_named():
    y = harmonic(200, 1.0)
    y[100:200] = np.nan
    m = measure_prosody(y)
    assert "nonfinite" in m.fallbacks and m.pitch_mean_hz == pytest.approx(200, rel=0.02)
    _nan_free(m)


# -- bins and captions ----------------------------------------------------------------------------
def _m(**values):
    return ProsodyMeasures(duration_s=1.0, **values)


def test_tertile_bins_per_gender_and_overall():
    items = [(_m(pitch_mean_hz=100.0 + 5 * i, energy_mean_db=-30.0 + i), "M") for i in range(MIN_GROUP)]
    items += [(_m(pitch_mean_hz=200.0 + 10 * i, energy_mean_db=-30.0 + i), "F") for i in range(MIN_GROUP)]
    items += [(_m(pitch_mean_hz=150.0), None), (_m(), "M")]
    th = fit_thresholds(items)
    assert th.counts["pitch"] == {"all": 2 * MIN_GROUP + 1, "M": MIN_GROUP, "F": MIN_GROUP}
    low, _ = th.cuts["pitch"]["M"]
    assert low == pytest.approx(np.quantile([100.0 + 5 * i for i in range(MIN_GROUP)], 1 / 3))
    # a 124 Hz voice is high for a man, low for a woman, and unknown-gender clips use all clips
    assert th.bin(_m(pitch_mean_hz=124.0), "M")["pitch"] == "high"
    assert th.bin(_m(pitch_mean_hz=124.0), "female")["pitch"] == "low"
    assert th.bin(_m(pitch_mean_hz=160.0), None)["pitch"] == "normal"
    assert th.bin(_m(), "M") == {name: "unknown" for name in BINNED}
    assert ProsodyThresholds.from_dict(th.to_dict()).bin(_m(pitch_mean_hz=124.0), "M")["pitch"] == "high"
    # a gender with too few clips falls back to the corpus's cuts
    few = fit_thresholds(items[: MIN_GROUP - 1] + items[MIN_GROUP:])
    assert "M" not in few.cuts["pitch"]
    assert few.bin(_m(pitch_mean_hz=124.0), "M") == few.bin(_m(pitch_mean_hz=124.0), None)


def test_ties_fall_in_normal_and_no_pause_is_low():
    th = fit_thresholds([(_m(hnr_db=10.0), None)] * 5 + [(_m(hnr_db=20.0), None)])
    assert th.bin_value("hnr", 10.0) == "normal" and th.bin_value("hnr", 15.0) == "high"
    # most clips without a pause: pause ratios are cut over the clips that have pauses
    th = fit_thresholds([(_m(pause_ratio=0.0), None)] * 20 + [(_m(pause_ratio=r), None) for r in (0.1, 0.2, 0.3)])
    assert [th.bin_value("pauses", r) for r in (0.0, 0.1, 0.2, 0.3)] == ["low", "low", "normal", "high"]
    assert fit_thresholds([(_m(pause_ratio=0.0), None)]).bin_value("pauses", 0.0) == "low"


def test_caption_is_short_and_deterministic():
    m = _m(pitch_mean_hz=250.0, pitch_slope_st_s=3.0, energy_mean_db=-20.0, pause_count=1, hnr_db=5.0)
    bins = {"pitch": "high", "pitch_slope": "high", "pitch_range": "high", "energy": "normal",
            "energy_variability": "low", "rate": "high", "pauses": "low", "jitter": "normal",
            "shimmer": "normal", "hnr": "low"}
    expected = ("pitch: high and rising, wide range; loudness: normal, steady; rate: fast; pauses: few; "
                "voice: breathy (low HNR)")
    assert prosody_caption(m, bins) == expected
    # a "high" slope bin that is still a fall is not called rising; rough voices are named
    falling = _m(pitch_mean_hz=100.0, pitch_slope_st_s=-0.5, energy_mean_db=-30.0, pause_count=0, hnr_db=20.0)
    bins2 = dict(bins, pitch="low", pitch_range="normal", energy="low", energy_variability="high", rate="low",
                 jitter="high", hnr="normal")
    assert prosody_caption(falling, bins2) == ("pitch: low; loudness: soft, variable; rate: slow; pauses: none; "
                                               "voice: rough (high jitter)")
    assert prosody_caption(_m(), {name: "unknown" for name in BINNED}) == "silent"
    unvoiced = _m(energy_mean_db=-20.0, pause_count=0, fallbacks=("unvoiced",))
    assert prosody_caption(unvoiced, {"energy": "high"}).startswith("pitch: none (unvoiced); loudness: loud")


def test_annotate_round_trips_through_json():
    import json

    m = measure_prosody(harmonic(130, 0.8))
    th = fit_thresholds([(m, "M")])
    entry = json.loads(json.dumps(annotate(m, th, "M")))
    assert set(entry) == {"measures", "bins", "caption", "version"}
    assert set(entry["bins"]) == set(BINNED)
    assert ProsodyMeasures.from_dict(entry["measures"]).to_dict() == entry["measures"]
    assert entry["caption"].startswith("pitch: normal")


# -- the demo corpus's voices ---------------------------------------------------------------------
DEMO_EMOTIONS = ("04", "01", "03", "06", "08")  # sad, neutral, happy, fearful, surprised


@pytest.fixture(scope="module")
def demo_voices(tmp_path_factory, espeak):
    """(actor, emotion) -> (set pitch -p, set rate -s, measures) for the first shared sentence."""
    from emorl.audio import load_audio
    from emorl.data.synth import SHARED_SENTENCES, _plan, statement_texts, synthesize

    out = tmp_path_factory.mktemp("prosody_demo")
    synthesize(out, actors=2, sentences_per_emotion=1)
    statement = next(k for k, text in statement_texts().items() if text == SHARED_SENTENCES[0])
    table = {}
    for job in _plan(espeak, out, [1, 20], 1, 0):
        _, _, emotion, intensity, ss, _, actor = job.path.stem.split("-")
        if ss != statement or intensity != "01" or emotion not in DEMO_EMOTIONS:
            continue
        args = {flag: job.command[job.command.index(flag) + 1] for flag in ("-p", "-s")}
        measures = measure_prosody(load_audio(job.path), transcript=SHARED_SENTENCES[0])
        table[int(actor), emotion] = (int(args["-p"]), int(args["-s"]), measures)
    assert len(table) == 2 * len(DEMO_EMOTIONS)
    return table


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.espeak
@pytest.mark.parametrize("actor", [1, 20])
def test_demo_voices_follow_their_set_pitch_and_rate(demo_voices, actor):
    rows = [demo_voices[actor, e] for e in DEMO_EMOTIONS]
    pitch_set, rate_set, measured = zip(*rows)
    assert all(m.fallbacks == () for m in measured)
    assert _spearman(pitch_set, [m.pitch_mean_hz for m in measured]) >= 0.9
    assert _spearman(rate_set, [m.rate_syl_s for m in measured]) >= 0.9
    # measured syllables/s are proportional to espeak-ng's words/minute: (rate / 60) * (7 syllables
    # / 6 words) * k, k the same for every clip within 8 % (espeak-ng speaks this sentence about
    # 1.4 times faster than its nominal rate: k in 1.2-1.6)
    k = np.array([m.rate_syl_s / (rate / 60 * 7 / 6) for _, rate, m in rows])
    assert 1.2 < np.median(k) < 1.6
    assert np.all(np.abs(k / np.median(k) - 1) < 0.08), k


@pytest.mark.espeak
def test_demo_female_voice_is_higher(demo_voices):
    male = np.mean([demo_voices[1, e][2].pitch_mean_hz for e in DEMO_EMOTIONS])
    female = np.mean([demo_voices[20, e][2].pitch_mean_hz for e in DEMO_EMOTIONS])
    assert female > 1.2 * male
