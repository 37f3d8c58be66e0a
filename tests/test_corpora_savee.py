from collections import Counter
from pathlib import Path

import pytest

from emorl.data.corpora import PREPARERS, make_track2, prepare_savee
from emorl.data.manifest import ManifestError
from emorl.labels import UnknownLabelError
from tests.test_corpora_common import (
    assert_same_folds_as_emobox,
    assert_track2,
    emobox_rows,
    wav_bytes,
    write_clips,
)


def _clip_names(shared: Path) -> list[tuple[str, str]]:
    """(speaker, 'sa09') of every SAVEE clip, from EmoBox's manifest (wav downloads/savee/JK_sa09.wav)."""
    names = []
    for row in emobox_rows(shared, "savee"):
        speaker, stem = Path(row["wav"]).stem.split("_")
        names.append((speaker, stem))
    return names


@pytest.fixture(scope="module")
def original_layout(shared_data_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("savee_original")
    paths = [root / "AudioData" / spk / f"{stem}.wav" for spk, stem in _clip_names(shared_data_dir)]
    write_clips(paths, wav_bytes(44100))
    (root / "AudioData" / "Info.txt").write_text("SAVEE\n")
    return root


@pytest.fixture(scope="module")
def savee_prepared(original_layout, tmp_path_factory):
    return prepare_savee(original_layout, tmp_path_factory.mktemp("savee_out"))


@pytest.mark.shared_data
def test_original_layout_gives_emobox_keys_and_folds(savee_prepared, shared_data_dir):
    assert PREPARERS["savee"] is prepare_savee
    rows = savee_prepared.rows()
    assert len(rows) == 480
    assert_same_folds_as_emobox(savee_prepared, shared_data_dir, "savee")
    assert Counter(row["label"] for row in rows) == {
        "neutral": 120, "angry": 60, "disgust": 60, "fear": 60, "happy": 60, "sad": 60, "surprise": 60
    }  # fmt: skip
    emobox = {row["key"]: row["emo"] for row in emobox_rows(shared_data_dir, "savee")}
    assert all(row["emo"] == emobox[row["key"]] for row in rows)
    row = rows[0]
    assert row["sample_rate"] == 44100 and row["num_frame"] == 320 and row["channel"] is None
    assert row["gender"] == "M" and row["speaker"] in ("DC", "JE", "JK", "KL")
    assert Path(row["wav"]).is_absolute()
    assert list(savee_prepared.label_set.classes) == [
        "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"
    ]  # fmt: skip
    # EmoBox's fold order: JE, KL, DC, JK
    for k, speaker in enumerate(("JE", "KL", "DC", "JK"), start=1):
        assert {r["speaker"] for r in savee_prepared.split(k, "test")} == {speaker}


@pytest.mark.shared_data
def test_flat_layout_gives_the_same(shared_data_dir, tmp_path):
    root = tmp_path / "raw"
    write_clips((root / "ALL" / f"{spk}_{stem}.wav" for spk, stem in _clip_names(shared_data_dir)),
                wav_bytes(44100))
    prepared = prepare_savee(root, tmp_path / "out")
    assert len(prepared.rows()) == 480
    assert_same_folds_as_emobox(prepared, shared_data_dir, "savee")


def test_unknown_emotion_code_names_the_file(tmp_path):
    write_clips([tmp_path / "AudioData" / "DC" / "a01.wav", tmp_path / "AudioData" / "DC" / "x01.wav"],
                wav_bytes(44100))
    with pytest.raises(UnknownLabelError, match=r"x01\.wav.*'x'"):
        prepare_savee(tmp_path, tmp_path / "out")


def test_no_clip_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SAVEE clip"):
        prepare_savee(tmp_path, tmp_path / "out")


@pytest.mark.shared_data
def test_track2(savee_prepared, shared_data_dir, tmp_path):
    selection = shared_data_dir / "emobox" / "track2" / "SAVEE_selected_balenced.jsonl"
    track2 = make_track2(savee_prepared.root, selection, tmp_path / "track2")
    test = assert_track2(track2, "savee_track2")
    assert test[0]["key"] == "savee-JK-sa09" and test[0]["corpus_emo"] == "sa"
    assert Counter(row["speaker"] for row in test) == {"JK": 60, "JE": 60, "DC": 60, "KL": 60}


@pytest.mark.shared_data
def test_track2_names_missing_utterances(shared_data_dir, tmp_path):
    root = tmp_path / "raw"
    write_clips((root / "AudioData" / spk / f"{stem}.wav" for spk, stem in _clip_names(shared_data_dir)
                 if (spk, stem) != ("JK", "sa09")), wav_bytes(44100))
    prepared = prepare_savee(root, tmp_path / "out")
    selection = shared_data_dir / "emobox" / "track2" / "SAVEE_selected_balenced.jsonl"
    with pytest.raises(ManifestError, match=r"1 utterance.*JK/sa09\.wav"):
        make_track2(prepared.root, selection, tmp_path / "track2")
