"""Prosody claims of a free text, and their faithfulness to measured bins (emorl.prosody.claims)."""

import itertools
import random
import re
import time

import pytest

from emorl.prosody import ProsodyMeasures, prosody_caption
from emorl.prosody.claims import Faithfulness, ProsodyClaim, contradicts, extract_claims, faithfulness


def claims(text):
    return [(c.dimension, c.level) for c in extract_claims(text)]


# (sentence, the (dimension, level) claims a careful reader finds in it, in order)
LABELLED = [
    # well-formed statements
    ("Her pitch is high and her voice is loud.", [("pitch", "high"), ("energy", "high")]),
    ("He speaks in a deep, low tone.", [("pitch", "low")]),
    ("A high-pitched, shrill cry.", [("pitch", "high"), ("pitch", "high")]),
    ("The speaker has a low-pitched voice.", [("pitch", "low")]),
    ("The F0 is elevated.", [("pitch", "high")]),
    ("The fundamental frequency is low.", [("pitch", "low")]),
    ("She raised her pitch.", []),  # a verb, not a level: documented limit
    ("A raised pitch and a raised voice.", [("pitch", "high"), ("energy", "high")]),
    ("The tone is high.", [("pitch", "high")]),
    ("The volume is low and the speech is soft-spoken.", [("energy", "low"), ("energy", "low")]),
    ("High energy, intense delivery.", [("energy", "high"), ("energy", "high")]),
    ("The intensity stays quite low.", [("energy", "low")]),
    ("She speaks quietly.", [("energy", "low")]),
    ("He is shouting.", [("energy", "high")]),
    ("An energetic, fast-paced delivery.", [("energy", "high"), ("rate", "high")]),
    ("The speaking rate is high.", [("rate", "high")]),
    ("Rapid speech at a hurried tempo.", [("rate", "high"), ("rate", "high")]),
    ("A quick tempo.", [("rate", "high")]),
    ("He talks slowly, almost sluggish.", [("rate", "low"), ("rate", "low")]),
    ("The pace is slow.", [("rate", "low")]),
    ("She speaks quickly.", [("rate", "high")]),
    # normal levels
    ("Pitch is moderate, volume average, and the pace is normal.",
     [("pitch", "normal"), ("energy", "normal"), ("rate", "normal")]),
    ("A medium pitch and a normal speaking rate.", [("pitch", "normal"), ("rate", "normal")]),
    ("The loudness is typical.", [("energy", "normal")]),
    # negations
    ("She is not loud.", [("energy", "normal")]),
    ("The pitch isn't high.", [("pitch", "normal")]),
    ("He speaks neither fast nor slow.", [("rate", "normal")]),
    ("Not too fast or too slow.", [("rate", "normal")]),
    ("Neither loud nor fast.", [("energy", "normal"), ("rate", "normal")]),
    ("The pitch is not normal.", []),  # no direction
    ("She speaks loudly, not softly.", [("energy", "high")]),
    ("Not soft but loud.", [("energy", "high")]),
    ("Loud rather than soft.", [("energy", "high")]),
    ("Not only loud but also fast.", [("energy", "high"), ("rate", "high")]),
    ("She does not shout, speaking quickly.", [("rate", "high")]),
    # mixed, several per sentence
    ("The pitch is high, the volume low, and the tempo fast.",
     [("pitch", "high"), ("energy", "low"), ("rate", "high")]),
    ("The energy is low, the pitch high.", [("energy", "low"), ("pitch", "high")]),
    ("A higher than normal pitch and lower-than-usual volume.", [("pitch", "high"), ("energy", "low")]),
    ("The volume of her voice is not very high.", [("energy", "normal")]),
    ("Her voice is high.", [("pitch", "high")]),
    # no claim: unrelated words
    ("There is a high chance that the speaker is angry.", []),
    ("Deep sadness and low mood; she has high hopes.", []),
    ("She quickly realises the mistake.", []),
    ("The emotion is sad.", []),
    ("", []),
    # quoted transcript
    ('He says "slow down, you are too loud" calmly.', []),
    ("She says “it is so quiet here”.", []),
    ("<transcript>Slow down! It is too loud.</transcript> The pitch is low.", [("pitch", "low")]),
    ("<TRANSCRIPT>\nspeak quickly\n</TRANSCRIPT>", []),
    # the known limit: an unquoted transcript is read
    ("The speaker says slow down.", [("rate", "low")]),
]


@pytest.mark.parametrize(("text", "expected"), LABELLED)
def test_hand_labelled_sentences(text, expected):
    assert claims(text) == expected


def test_claim_spans_are_the_matched_text():
    got = extract_claims("Her PITCH is quite high; neither fast nor slow, and not loud.")
    assert got == [ProsodyClaim("pitch", "high", "PITCH is quite high"),
                   ProsodyClaim("rate", "normal", "neither fast nor slow"),
                   ProsodyClaim("energy", "normal", "not loud")]
    assert extract_claims(None) == []


# -- round trip of every caption -------------------------------------------------------------------
def _measures(bins):
    slope = {"high": 4.0, "low": -4.0}.get(bins.get("pitch_slope"), 0.0)
    unvoiced = bins["pitch"] == "unknown"
    return ProsodyMeasures(duration_s=2.0, energy_mean_db=-20.0, pitch_slope_st_s=None if unvoiced else slope,
                           pause_count=0 if bins["pauses"] == "low" else 2,
                           fallbacks=("unvoiced",) if unvoiced else ())


LEVELS = ("low", "normal", "high", "unknown")
#: The other bins vary with the main three, so every caption part appears beside every level.
OTHERS = [
    {"pitch_slope": "high", "pitch_range": "high", "energy_variability": "low", "pauses": "normal",
     "hnr": "low", "jitter": "high", "shimmer": "high"},
    {"pitch_slope": "low", "pitch_range": "low", "energy_variability": "high", "pauses": "low",
     "hnr": "high", "jitter": "low", "shimmer": "normal"},
    {"pitch_slope": "normal", "pitch_range": "normal", "energy_variability": "normal", "pauses": "high",
     "hnr": "normal", "jitter": "normal", "shimmer": "high"},
    {k: "unknown" for k in ("pitch_slope", "pitch_range", "energy_variability", "pauses", "hnr", "jitter",
                            "shimmer")},
]


@pytest.mark.parametrize("others", OTHERS, ids=["rising", "falling", "plain", "bare"])
def test_every_caption_reads_back_to_its_own_bins(others):
    for pitch, energy, rate in itertools.product(LEVELS, repeat=3):
        bins = {"pitch": pitch, "energy": energy, "rate": rate, **others}
        caption = prosody_caption(_measures(bins), bins)
        measured = {d: level for d, level in (("pitch", pitch), ("energy", energy), ("rate", rate))
                    if level != "unknown"}
        assert sorted(claims(caption)) == sorted(measured.items()), caption
        result = faithfulness(caption, bins)
        assert result.score == (1.0 if measured else None), caption
        assert (result.agreeing, result.contradicting, result.unverifiable) == (len(measured), 0, 0)


def test_caption_of_other_bins_contradicts():
    bins = {"pitch": "high", "energy": "low", "rate": "normal"}
    caption = prosody_caption(_measures({**bins, "pauses": "low"}), bins)
    assert not contradicts(caption, bins)
    assert contradicts(caption, {**bins, "rate": "high"})
    assert faithfulness(caption, {"pitch": "low", "energy": "high", "rate": "normal"}).score == pytest.approx(1 / 3)


# -- scores by hand --------------------------------------------------------------------------------
def test_scores_computed_by_hand():
    text = "The pitch is high and she speaks fast, not loudly; the pitch is raised."
    # claims: pitch high, rate high, energy normal, pitch high
    bins = {"pitch": "high", "energy": "low", "rate": "unknown"}
    result = faithfulness(text, bins)
    assert isinstance(result, Faithfulness)
    assert [(c.dimension, c.level) for c in result.claims] == [
        ("pitch", "high"), ("rate", "high"), ("energy", "normal"), ("pitch", "high")]
    assert (result.agreeing, result.contradicting, result.unverifiable) == (2, 1, 1)
    assert result.score == pytest.approx(2 / 3)
    assert contradicts(text, bins)
    assert not contradicts(text, {"pitch": "high", "energy": "normal"})  # rate missing: unverifiable


def test_unverifiable_and_claimless_texts_have_no_score():
    assert faithfulness("Loud and fast.", None).score is None
    assert faithfulness("Loud and fast.", {"energy": "unknown", "rate": "weird"}).unverifiable == 2
    empty = faithfulness("The speaker sounds angry.", {"pitch": "high"})
    assert (empty.claims, empty.score) == ([], None)
    assert faithfulness("Loud.", {"energy": "normal"}).score == 0.0
    assert not contradicts(None, {"pitch": "low"})


# -- quoted speech is found in linear time, as the regex found it ------------------------------------
OLD_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|<transcript>.*?</transcript>', re.IGNORECASE | re.DOTALL)


def test_quoted_spans_agree_with_the_old_regex():
    from emorl.prosody.claims import _quoted_spans

    rng = random.Random(0)
    pieces = ['"', "“", "”", "<transcript>", "</transcript>", "<TRANSCRIPT>", "</tran\u017fcript>", "a", " ", "loud"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    assert sum(bool(OLD_QUOTED.search(t)) for t in texts) > 1000
    wrong = [t for t in texts if _quoted_spans(t) != [m.span() for m in OLD_QUOTED.finditer(t)]]
    assert not wrong, wrong[:3]


def test_unclosed_quotes_cost_linear_time():
    """Openings without their closing mark: the regex tried each one to the end (20,000 chars: ~0.1 s)."""
    from emorl.prosody.claims import _masked

    for text in ["“a " * 6700, "<transcript>a " * 1430, '"x' * 10_000 + "“y" * 100]:
        best = min(_timed(lambda: _masked(text)) for _ in range(5))
        assert best < 0.02, (text[:20], best)


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start
