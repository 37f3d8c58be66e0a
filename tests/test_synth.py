"""The demo corpus: RAVDESS layout, deterministic, emotion in prosody and in the words."""

import json
import re
import stat
from collections import defaultdict

import numpy as np
import pytest

from emorl.audio import load_audio
from emorl.data.corpora import prepare_ravdess
from emorl.data.corpora.ravdess import ACTOR_FOLD
from emorl.data.synth import (
    ACTORS,
    DEFAULT_ACTORS,
    EMOTIONS,
    SENTENCES,
    SHARED_SENTENCES,
    SynthError,
    statement_texts,
    synthesize,
)
from emorl.features.acoustic import acoustic_features, feature_names

NAME = re.compile(r"^03-01-(\d\d)-(0[12])-(\d\d)-01-(\d\d)$")
SHARED = {"01", "02"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, espeak):
    out = tmp_path_factory.mktemp("synth") / "raw"
    return out, synthesize(out, actors=2, sentences_per_emotion=1)


@pytest.fixture(scope="module")
def features(corpus):
    """(emotion, intensity, statement) -> feature vectors, over both actors."""
    out, _ = corpus
    table = defaultdict(list)
    for path in out.rglob("*.wav"):
        emotion, intensity, statement, _ = NAME.match(path.stem).groups()
        table[emotion, intensity, statement].append(acoustic_features(load_audio(path)))
    return table


def _mean(features, name, emotion, statements=None, intensity=None):
    index = feature_names().index(name)
    rows = [
        vector[index]
        for (e, i, s), vectors in features.items()
        for vector in vectors
        if e == emotion and (statements is None or s in statements) and (intensity is None or i == intensity)
    ]
    return float(np.mean(rows))


@pytest.mark.espeak
def test_layout_names_and_transcripts(corpus):
    out, summary = corpus
    files = sorted(out.rglob("*.wav"))
    # per actor: neutral (normal only) + 7 emotions x 2 intensities, each 1 typical + 2 shared sentences
    assert summary.clips == len(files) == 2 * (1 + 7 * 2) * 3
    assert summary.actors == [1, 20] and summary.seconds > 60
    assert {f.parent.name for f in files} == {"Actor_01", "Actor_20"}
    texts = statement_texts()
    for f in files:
        match = NAME.match(f.stem)
        assert match, f.name
        emotion, intensity, statement, actor = match.groups()
        assert emotion in EMOTIONS and actor == f.parent.name[-2:]
        assert not (emotion == "01" and intensity == "02")  # RAVDESS has no strong neutral
        typical = f"{3 + 4 * (int(emotion) - 1):02d}"
        assert statement in SHARED | {typical}
        assert texts[statement] == (SENTENCES[EMOTIONS[emotion]][0] if statement == typical
                                    else SHARED_SENTENCES[int(statement) - 1])  # fmt: skip
    lines = (out / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "statement\ttext"
    table = dict(line.split("\t") for line in lines[1:])
    assert len(table) == len(lines) - 1 == 2 + 8
    assert table == {s: texts[s] for s in {f.stem.split("-")[4] for f in files}}
    assert table["01"] == "Kids are talking by the door." and table["03"] == SENTENCES["neutral"][0]


@pytest.mark.espeak
def test_rendering_is_deterministic_and_rerendering_rewrites_the_same_files(corpus, tmp_path):
    out, summary = corpus
    again = tmp_path / "again"
    synthesize(again, actors=2, sentences_per_emotion=1)
    files = sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(again) for f in again.rglob("*") if f.is_file())
    for f in files:
        assert (again / f).read_bytes() == (out / f).read_bytes(), f
    assert synthesize(again, actors=2, sentences_per_emotion=1).clips == summary.clips  # same folder
    with pytest.raises(SynthError, match="render into an empty folder"):
        synthesize(again, actors=1, sentences_per_emotion=1)  # would leave actor 20's clips behind


@pytest.mark.espeak
def test_seed_changes_the_jitter_only(tmp_path, espeak):
    a = synthesize(tmp_path / "a", actors=1, sentences_per_emotion=1, seed=0)
    b = synthesize(tmp_path / "b", actors=1, sentences_per_emotion=1, seed=1)
    names_a = sorted(p.name for p in (tmp_path / "a").rglob("*.wav"))
    assert names_a == sorted(p.name for p in (tmp_path / "b").rglob("*.wav")) and a.clips == b.clips
    differ = sum((tmp_path / "a/Actor_01" / n).read_bytes() != (tmp_path / "b/Actor_01" / n).read_bytes()
                 for n in names_a)  # fmt: skip
    assert differ > len(names_a) // 2


@pytest.mark.espeak
def test_prepared_as_ravdess_with_fold_1_holding_out_both_actors(corpus, tmp_path):
    out, summary = corpus
    prepared = prepare_ravdess(out, tmp_path / "prepared")
    rows = prepared.rows()
    assert len(rows) == summary.clips
    assert len(prepared.split(1, "test")) == summary.clips  # actors 1 and 20 are fold-1 test actors
    assert {r["gender"] for r in rows} == {"M", "F"}
    angry = next(r for r in rows if r["label"] == "angry" and r["statement"] not in SHARED)
    assert angry["transcript"] == SENTENCES["angry"][0]
    shared = {r["transcript"] for r in rows if r["statement"] in SHARED}
    assert shared == set(SHARED_SENTENCES)


@pytest.mark.espeak
def test_emotions_differ_in_prosody_as_designed(features):
    pitch = {e: _mean(features, "f0_st_mean", e) for e in EMOTIONS}
    loudness = {e: _mean(features, "rms_db_mean", e) for e in EMOTIONS}
    rate = {e: _mean(features, "peak_rate", e) for e in EMOTIONS}
    neutral, happy, sad, angry, fearful, surprised, calm = "01", "03", "04", "05", "06", "08", "02"
    for aroused in (happy, angry, fearful, surprised):
        assert pitch[aroused] > pitch[neutral] + 2 > pitch[sad] + 4  # semitones
        assert rate[aroused] > rate[sad]
    for loud in (happy, angry, surprised):
        assert loudness[loud] > loudness[neutral] + 2 > loudness[sad] + 4  # dB
    assert loudness[calm] < loudness[neutral] and rate[calm] < rate[neutral]
    assert rate[sad] < 0.8 * rate[neutral]
    # strong intensity goes further than normal
    assert _mean(features, "f0_st_mean", happy, intensity="02") > _mean(features, "f0_st_mean", happy, intensity="01")
    assert _mean(features, "rms_db_mean", sad, intensity="02") < _mean(features, "rms_db_mean", sad, intensity="01")


@pytest.mark.espeak
def test_prosody_alone_separates_emotions_on_the_same_words(corpus, features):
    """Shared RAVDESS statements (01, 02): sad is slower and lower than angry on the same words."""
    out, _ = corpus

    def seconds(code):
        return np.mean([len(load_audio(f)) / 16000 for s in SHARED for f in out.rglob(f"03-01-{code}-*-{s}-01-*.wav")])

    assert seconds("04") > 1.3 * seconds("05")
    assert _mean(features, "f0_st_mean", "05", SHARED) > _mean(features, "f0_st_mean", "04", SHARED) + 4


def test_sentences_are_emotion_typical():
    cues = {
        "angry": r"!|\b(dare|outrageous|sick of)\b", "sad": r"\b(miss|never see|failed|alone)\b",
        "happy": r"\b(wonderful|happy|great|love|best)\b", "fearful": r"\b(scared|hurt|terrified|help)\b",
        "disgust": r"\b(ugh|revolting|disgusting|gross|yuck)\b", "surprised": r"\?|\b(wow|no way|expect)\b",
        "calm": r"\b(fine|relax|peaceful|no hurry)\b",
    }  # fmt: skip
    assert set(SENTENCES) == set(EMOTIONS.values())
    for emotion, sentences in SENTENCES.items():
        assert len(sentences) == 4 and len(set(sentences)) == 4
        for sentence in sentences:
            if emotion in cues:
                assert re.search(cues[emotion], sentence, re.IGNORECASE), (emotion, sentence)
            for other, pattern in cues.items():  # no sentence carries another emotion's words
                if other != emotion and other not in ("angry", "surprised"):  # "!" / "?" are shared
                    assert not re.search(pattern, sentence, re.IGNORECASE), (emotion, sentence, other)
    texts = statement_texts()
    assert len(texts) == len(set(texts.values())) == 2 + 8 * 4
    assert [texts[s] for s in ("01", "02")] == list(SHARED_SENTENCES)


def test_default_actors_hold_out_two_fold_1_test_actors_and_balance_gender():
    assert len(DEFAULT_ACTORS) == len(set(DEFAULT_ACTORS)) == 8 and set(DEFAULT_ACTORS) == set(ACTORS)
    assert sum(a % 2 for a in DEFAULT_ACTORS) == 4
    for actor, spec in ACTORS.items():
        assert ("+m" if actor % 2 else "+f") in spec.voice, (actor, spec.voice)  # odd = male voice
    fold1_test = {a for a, fold in ACTOR_FOLD.items() if fold == 1}
    assert set(DEFAULT_ACTORS[:2]) <= fold1_test and DEFAULT_ACTORS[0] % 2 != DEFAULT_ACTORS[1] % 2
    assert not set(DEFAULT_ACTORS[2:]) & fold1_test


@pytest.mark.shared_data
def test_fold_1_test_actors_agree_with_emobox(shared_data_dir):
    path = shared_data_dir / "emobox" / "ravdess" / "fold_1" / "ravdess_test_fold_1.jsonl"
    actors = {int(json.loads(line)["key"][-2:]) for line in path.read_text().splitlines() if line.strip()}
    assert set(DEFAULT_ACTORS[:2]) <= actors and not set(DEFAULT_ACTORS[2:]) & actors


def test_missing_espeak_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="apt-get install espeak-ng"):
        synthesize(tmp_path, espeak="no-such-espeak")


def test_a_failed_render_names_its_command_line(tmp_path):
    fake = tmp_path / "fake-espeak"
    fake.write_text("#!/bin/sh\necho 'voice not found' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(SynthError, match=r"exit code 3(.|\n)*fake-espeak -m -v en-us\+m3(.|\n)*voice not found"):
        synthesize(tmp_path / "out", actors=1, sentences_per_emotion=1, espeak=str(fake))
    assert not list((tmp_path / "out").rglob("*.wav")) and not list((tmp_path / "out").rglob(".*.tmp"))
