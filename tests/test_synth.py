"""The demo corpus: RAVDESS layout, deterministic, emotion in prosody and in the words."""

from collections import defaultdict

import numpy as np
import pytest

from emorl.audio import load_audio
from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import EMOTIONS, SynthError, synthesize
from emorl.features.acoustic import acoustic_features, feature_names

pytestmark = pytest.mark.espeak


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, espeak):
    out = tmp_path_factory.mktemp("synth") / "raw"
    return out, synthesize(out, actors=2, sentences_per_emotion=1)


def test_layout_names_and_transcripts(corpus):
    out, summary = corpus
    files = sorted(out.rglob("*.wav"))
    assert summary.clips == len(files) == 2 * (3 + 7 * 2 * 3)  # neutral has no strong intensity
    assert {f.parent.name for f in files} == {"Actor_01", "Actor_20"}
    for f in files:
        fields = f.stem.split("-")
        assert fields[:2] == ["03", "01"] and fields[2] in EMOTIONS and fields[6] == f.parent.name[-2:]
    lines = (out / "transcripts.tsv").read_text().splitlines()
    assert lines[0] == "statement\ttext" and len(lines) == 1 + 8 + 2


def test_rendering_is_deterministic(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    synthesize(again, actors=2, sentences_per_emotion=1)
    for f in out.rglob("*.wav"):
        assert (again / f.relative_to(out)).read_bytes() == f.read_bytes()


def test_prepared_as_ravdess_with_fold_1_holding_out_both_actors(corpus, tmp_path):
    out, summary = corpus
    prepared = prepare_ravdess(out, tmp_path / "prepared")
    assert len(prepared.rows()) == summary.clips
    assert len(prepared.split(1, "test")) == summary.clips  # actors 1 and 20 are fold-1 test actors
    angry = next(r for r in prepared.rows() if r["label"] == "angry" and r["statement"] != "09")
    assert "!" in angry["transcript"] or "dare" in angry["transcript"]


def test_emotions_differ_in_prosody_as_designed(corpus):
    out, _ = corpus
    names = feature_names()
    by_emotion = defaultdict(list)
    for f in out.rglob("*.wav"):
        by_emotion[f.stem.split("-")[2]].append(acoustic_features(load_audio(f)))
    mean = {code: np.mean(v, axis=0) for code, v in by_emotion.items()}
    pitch, energy = names.index("f0_st_mean"), names.index("rms_db_mean")
    happy, sad, angry, neutral = mean["03"], mean["04"], mean["05"], mean["01"]
    assert happy[pitch] > neutral[pitch] > sad[pitch]
    assert angry[energy] > neutral[energy] > sad[energy]


def test_rate_differs_on_the_same_words(corpus):
    """Shared neutral-content sentence (statement 09): sad is spoken slower than angry."""
    out, _ = corpus

    def seconds(code):
        return np.mean([len(load_audio(f)) / 16000 for f in out.rglob(f"03-01-{code}-*-09-01-*.wav")])

    assert seconds("04") > 1.2 * seconds("05")


def test_missing_espeak_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="apt-get install espeak-ng"):
        synthesize(tmp_path, espeak="no-such-espeak")
