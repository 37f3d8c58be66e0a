"""`emorl data prosody`: bins and captions land in the manifests, bad clips are counted, reruns are no-ops."""

import json
import multiprocessing
import os

import numpy as np
import pytest
import soundfile as sf

from emorl.cli import main
from emorl.data.manifest import fold_path, load_prepared_corpus, write_prepared_corpus
from emorl.labels import LabelSet
from emorl.prosody import BINNED, ProsodyMeasures, measure_prosody
from emorl.prosody import corpus as prosody_corpus
from emorl.prosody.corpus import annotate_corpus, load_thresholds
from emorl.reasoning import prosody_text

SR = 16_000


def _voice(f0, seconds=0.6, amplitude=0.3):
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.5**k * np.sin(2 * np.pi * (k + 1) * f0 * t) for k in range(4))
    return (amplitude * y / np.abs(y).max()).astype(np.float32)


MALE_HZ = (95, 100, 105, 110, 118, 125)
FEMALE_HZ = (190, 200, 210, 220, 235, 250)
AMPLITUDES = (0.1, 0.3, 0.5)
TEXTS = ("Kids are talking by the door.", None)


def _corpus(tmp_path):
    """Six male and six female voices (pitch rising with the index), a silent, a corrupt, a missing clip."""
    audio = tmp_path / "audio"
    audio.mkdir()
    clips = {}
    for gender, pitches in (("M", MALE_HZ), ("F", FEMALE_HZ)):
        for i, f0 in enumerate(pitches):
            clips[f"{gender.lower()}{i}"] = (_voice(f0, amplitude=AMPLITUDES[i % 3]), gender, TEXTS[i % 2])
    clips["quiet"] = (np.zeros(SR // 2, np.float32), None, None)
    rows = []
    for key, (wave, gender, transcript) in clips.items():
        sf.write(audio / f"{key}.wav", wave, SR)
        row = {"key": key, "wav": str(audio / f"{key}.wav"), "emo": "happy", "label": "happy",
               "speaker": key[0] if gender else None, "gender": gender, "transcript": transcript}
        rows.append({k: v for k, v in row.items() if v is not None})
    (audio / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    rows.append({"key": "corrupt", "wav": str(audio / "corrupt.wav"), "emo": "sad", "label": "sad"})
    rows.append({"key": "missing", "wav": str(audio / "missing.wav"), "emo": "sad", "label": "sad"})
    keys = [r["key"] for r in rows]
    labels = LabelSet("t", ("happy", "sad"), {"happy": "happy", "sad": "sad"})
    return write_prepared_corpus(tmp_path / "prep", "t", rows, labels, {1: {"train": keys[::2], "test": keys[1::2]}})


def _files(corpus):
    paths = [corpus.root / "corpus.json", corpus.manifest_path]
    paths += [fold_path(corpus.root, corpus.name, 1, split) for split in ("train", "test")]
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prosody_cli")
    corpus = _corpus(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["data", "prosody", str(corpus.root)])
    assert done.value.code == 0
    return corpus


def test_the_command_writes_bins_and_captions_that_the_loader_reads(annotated, capsys):
    corpus = load_prepared_corpus(annotated.root)
    rows = {r["key"]: r for r in corpus.rows()}
    for key in [f"{g}{i}" for g in "mf" for i in range(6)]:
        entry = rows[key]["prosody"]
        assert set(entry["bins"]) == set(BINNED) and entry["caption"].startswith("pitch: ")
        assert prosody_text(rows[key]) == entry["caption"]  # what SFT's template reasoning reads
    # pitch is binned within each gender: the two lowest men and the two lowest women are "low"
    pitch = {key: rows[key]["prosody"]["bins"]["pitch"] for key in rows if key[1:].isdigit()}
    expected = ["low"] * 2 + ["normal"] * 2 + ["high"] * 2
    assert [pitch[f"m{i}"] for i in range(6)] == [pitch[f"f{i}"] for i in range(6)] == expected
    assert corpus.prosody["thresholds"]["cuts"]["pitch"].keys() == {"all", "M", "F"}
    energy = {key: rows[key]["prosody"]["bins"]["energy"] for key in ("m0", "m1", "m2")}
    assert energy == {"m0": "low", "m1": "normal", "m2": "high"}  # amplitudes 0.1, 0.3, 0.5
    assert rows["m0"]["prosody"]["measures"]["rate_source"] == "transcript"
    assert rows["m1"]["prosody"]["measures"]["rate_source"] == "audio"
    assert rows["m0"]["prosody"]["pitch_re_speaker_st"] < 0 < rows["m5"]["prosody"]["pitch_re_speaker_st"]
    # the fold files carry the same prosody as the main manifest
    test_rows = {r["key"]: r for r in corpus.split(1, "test")}
    assert test_rows["f5"]["prosody"] == rows["f5"]["prosody"]
    # the silent clip is measured with a fallback; the unreadable ones get no prosody at all
    assert rows["quiet"]["prosody"]["caption"] == "silent"
    assert set(rows["quiet"]["prosody"]["bins"].values()) == {"unknown"}
    assert "prosody" not in rows["corrupt"] and "prosody" not in rows["missing"]
    summary = corpus.prosody["summary"]
    assert summary["failed"] == {"missing": 1, "unreadable": 1} and summary["fallbacks"] == {"silent": 1}
    assert summary["clips"] == 15 and summary["annotated"] == 13


def test_stored_thresholds_bin_a_new_clip(annotated):
    thresholds = load_thresholds(annotated.root)
    new = measure_prosody(_voice(300, amplitude=0.8))
    bins = thresholds.bin(new, "F")
    assert bins["pitch"] == "high" and bins["energy"] == "high"


def test_rerun_is_idempotent_and_reports_what_it_skipped(annotated, capsys):
    before = _files(annotated)
    report = annotate_corpus(annotated.root)
    assert report.reused == 13 and report.measured == 0
    assert report.failed["missing"] == ["missing"] and report.failed["unreadable"] == ["corrupt"]
    assert _files(annotated) == before
    text = report.format()
    assert "could not read missing: 1 clip(s)" in text and "fallback silent: 1 clip(s)" in text
    assert str(annotated.root.parent / "audio" / "corrupt.wav") in text
    with pytest.raises(SystemExit) as done:
        main(["data", "prosody", str(annotated.root), "--overwrite"])
    assert done.value.code == 0 and "(13 measured, 0 reused, 2 failed)" in capsys.readouterr().out
    assert _files(annotated) == before


def test_measures_survive_the_manifest_round_trip(annotated):
    row = next(r for r in load_prepared_corpus(annotated.root).rows() if r["key"] == "f3")
    stored = ProsodyMeasures.from_dict(row["prosody"]["measures"])
    assert stored.pitch_mean_hz == pytest.approx(220, rel=0.02) and stored.fallbacks == ()
    assert json.loads(json.dumps(stored.to_dict())) == row["prosody"]["measures"]


def test_a_corpus_where_nothing_can_be_read_fails(tmp_path, capsys):
    labels = LabelSet("t", ("happy",), {"happy": "happy"})
    rows = [{"key": "x", "wav": str(tmp_path / "nowhere.wav"), "emo": "happy", "label": "happy"}]
    corpus = write_prepared_corpus(tmp_path / "prep", "t", rows, labels, {1: {"test": ["x"]}})
    with pytest.raises(SystemExit) as done:
        main(["data", "prosody", str(corpus.root)])
    assert done.value.code == 1
    with pytest.raises(SystemExit) as done:
        main(["data", "prosody", str(tmp_path / "not_prepared")])
    assert done.value.code == 2 and "not a prepared corpus" in capsys.readouterr().err


def test_worker_processes_give_the_same_files(annotated):
    before = _files(annotated)
    report = annotate_corpus(annotated.root, workers=2, overwrite=True)
    assert report.measured == 13 and report.failed["missing"] == ["missing"]
    assert _files(annotated) == before


_MEASURE_CLIP = prosody_corpus._measure_clip


def _measure_or_die(job):
    """In a worker process: die at once, as a crash in a native library would; in the main one: measure."""
    if multiprocessing.parent_process() is not None:
        os._exit(139)
    return _MEASURE_CLIP(job)


def test_a_dead_worker_process_costs_no_clip(annotated, monkeypatch):
    before = _files(annotated)
    monkeypatch.setattr(prosody_corpus, "_measure_clip", _measure_or_die)
    report = annotate_corpus(annotated.root, workers=2, overwrite=True)
    assert report.measured_after_crash == 15 and report.measured == 13  # + a missing and a corrupt clip
    assert "a worker process died: 15 clip(s) measured in the main process" in report.format()
    assert _files(annotated) == before
