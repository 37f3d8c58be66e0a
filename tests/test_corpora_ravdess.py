import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from emorl.data.corpora import PREPARERS, make_track2, prepare_ravdess
from emorl.data.corpora.ravdess import ACTOR_FOLD
from emorl.labels import UnknownLabelError
from tests.test_corpora_common import (
    assert_same_folds_as_emobox,
    assert_track2,
    emobox_folds,
    emobox_rows,
    wav_bytes,
    write_clips,
)

SPEECH_DIR = "Audio_Speech_Actors_01-24"
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@pytest.fixture(scope="module")
def ravdess_root(shared_data_dir, tmp_path_factory) -> Path:
    """RAVDESS as downloaded: speech and song folders, plus Kaggle's duplicate copy of two actors."""
    root = tmp_path_factory.mktemp("ravdess_raw")
    stems = [Path(row["wav"]).stem for row in emobox_rows(shared_data_dir, "ravdess")]
    speech = [root / SPEECH_DIR / f"Actor_{stem[-2:]}" / f"{stem}.wav" for stem in stems]
    duplicates = [root / "audio_speech_actors_01-24" / p.parent.name / p.name for p in speech
                  if p.parent.name in ("Actor_01", "Actor_02")]
    songs = [root / "Audio_Song_Actors_01-24" / "Actor_01" / f"03-02-0{e}-01-01-01-01.wav" for e in (1, 3, 4)]
    others = [root / SPEECH_DIR / "Actor_01" / "01-01-01-01-01-01-01.wav"]  # audio-video: not selected
    write_clips(speech + duplicates + songs + others, wav_bytes(48000))
    (root / SPEECH_DIR / "Actor_01" / "notes.wav").write_bytes(b"")  # not a RAVDESS name: ignored
    return root


@pytest.fixture(scope="module")
def ravdess_prepared(ravdess_root, tmp_path_factory):
    return prepare_ravdess(ravdess_root, tmp_path_factory.mktemp("ravdess_out"))


@pytest.mark.shared_data
def test_gives_emobox_keys_and_folds(ravdess_prepared, shared_data_dir):
    assert PREPARERS["ravdess"] is prepare_ravdess
    rows = ravdess_prepared.rows()
    assert len(rows) == 1440
    assert_same_folds_as_emobox(ravdess_prepared, shared_data_dir, "ravdess")
    emobox = {row["key"]: row["emo"] for row in emobox_rows(shared_data_dir, "ravdess")}
    assert all(row["emo"] == emobox[row["key"]] for row in rows)
    assert Counter(row["label"] for row in rows)["neutral"] == 96
    assert Counter(row["label"] for row in rows)["calm"] == 192
    for row in rows:
        actor = int(row["key"][-2:])
        assert row["speaker"] == f"{actor:02d}"
        assert row["gender"] == ("M" if actor % 2 else "F")
        statement = row["key"].split("-")[5]
        assert row["transcript"] == STATEMENTS[statement]
    assert rows[0]["sample_rate"] == 48000 and rows[0]["channel"] is None
    summary = ravdess_prepared.extra["summary"]
    assert summary["not_selected"] == {"modality 01": 1, "song": 3}
    assert summary["skipped"] == {"missing": 0, "unreadable": 0}


@pytest.mark.shared_data
def test_embedded_actor_table_is_emobox_s(shared_data_dir):
    folds = emobox_folds(shared_data_dir, "ravdess")
    table = {int(key[-2:]): k for k, splits in folds.items() for key in splits["test"]}
    assert table == ACTOR_FOLD


def test_demo_like_corpus_with_few_actors_and_transcripts(tmp_path, caplog):
    """Fewer actors than 24: all 6 folds are still written; folds with none of their actors have an
    empty test file and train on everything. transcripts.tsv fills the transcripts."""
    root = tmp_path / "raw"
    names = [f"03-01-{emo}-01-{st}-01-{actor:02d}.wav" for actor in (1, 2, 3, 4)
             for emo in ("01", "05") for st in ("01", "02", "03")]
    write_clips((root / f"Actor_{n[-6:-4]}" / n for n in names), wav_bytes(16000))
    (root / "transcripts.tsv").write_text("statement\ttext\n01\tHello there.\n02\tGood bye.\n3\tAgain.\n")
    with caplog.at_level(logging.WARNING, logger="emorl.data.corpora"):
        prepared = prepare_ravdess(root, tmp_path / "out")
    assert len(prepared.rows()) == 24
    assert prepared.folds == [1, 2, 3, 4, 5, 6]
    assert {row["transcript"] for row in prepared.rows()} == {"Hello there.", "Good bye.", "Again."}
    # actor 1 -> fold 1, 4 -> 2, 3 -> 4, 2 -> 5; folds 3 and 6 have none of these actors
    for k, actor in ((1, "01"), (2, "04"), (4, "03"), (5, "02")):
        assert {row["speaker"] for row in prepared.split(k, "test")} == {actor}
        assert len(prepared.split(k, "train")) == 18
    for k in (3, 6):
        assert (prepared.root / f"fold_{k}" / f"ravdess_test_fold_{k}.jsonl").read_text() == ""
        assert prepared.split(k, "test") == [] and len(prepared.split(k, "train")) == 24
        assert f"fold {k} has an empty test set" in caplog.text
    meta = json.loads((prepared.root / "corpus.json").read_text())
    assert meta["summary"]["splits"]["fold_3"] == {"train": 24, "test": 0}


def test_unknown_emotion_code_names_the_file(tmp_path):
    write_clips([tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav"], wav_bytes(16000))
    with pytest.raises(UnknownLabelError, match=r"03-01-09-01-01-01-01\.wav.*'09'"):
        prepare_ravdess(tmp_path, tmp_path / "out")


def test_actor_outside_the_table_is_a_clear_error(tmp_path):
    write_clips([tmp_path / "Actor_25" / "03-01-01-01-01-01-25.wav"], wav_bytes(16000))
    with pytest.raises(ValueError, match="actor 25"):
        prepare_ravdess(tmp_path, tmp_path / "out")


@pytest.mark.shared_data
def test_track2(ravdess_prepared, shared_data_dir, tmp_path):
    selection = shared_data_dir / "emobox" / "track2" / "RAVDESS_selected_balenced.jsonl"
    track2 = make_track2(ravdess_prepared.root, selection, tmp_path / "track2")
    test = assert_track2(track2, "ravdess_track2")
    assert test[0]["key"] == "ravdess-03-01-03-01-01-02-15"
    assert all(row["speaker"] == row["track2_speaker"] for row in test)
    assert {row["corpus_emo"] for row in test} == {"Happy", "Angry", "Neutral", "Sad"}
