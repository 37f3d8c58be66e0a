import json
import logging
import shutil
from pathlib import Path

import pytest

from emorl.data.corpora import import_emobox, make_track2
from emorl.data.manifest import ManifestError, load_prepared_corpus
from emorl.labels import UnknownLabelError
from tests.test_corpora_common import (
    assert_same_folds_as_emobox,
    assert_track2,
    emobox_folds,
    emobox_rows,
    prepared_folds,
    read_jsonl,
    wav_bytes,
    write_clips,
)

pytestmark = pytest.mark.shared_data


def audio_for(shared: Path, corpus: str, audio_root: Path, rate: int) -> list[dict]:
    rows = emobox_rows(shared, corpus)
    write_clips((audio_root / row["wav"] for row in rows), wav_bytes(rate))
    return rows


def test_import_savee_with_its_folds(shared_data_dir, tmp_path):
    audio_root = tmp_path / "emobox"
    rows = audio_for(shared_data_dir, "savee", audio_root, 44100)
    manifest = shared_data_dir / "emobox" / "savee" / "savee.jsonl"
    prepared = import_emobox(manifest, audio_root, tmp_path / "out")  # label map and folds beside it
    assert prepared.name == "savee" and prepared.folds == [1, 2, 3, 4]
    assert_same_folds_as_emobox(prepared, shared_data_dir, "savee")
    got = {row["key"]: row for row in prepared.rows()}
    for row in rows:
        mine = got[row["key"]]
        assert mine["wav"] == str((audio_root / row["wav"]).absolute())
        assert mine["emo"] == row["emo"] and mine["length"] == row["length"]
        assert isinstance(mine["num_frame"], int) and mine["num_frame"] == round(row["num_frame"])
    assert got["savee-JE-n23"]["label"] == "neutral" and got["savee-JE-sa01"]["label"] == "sad"
    assert prepared.label_set.classes == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_import_ravdess_with_explicit_map_and_folds_skips_missing_clips(shared_data_dir, tmp_path, caplog):
    audio_root = tmp_path / "emobox"
    rows = audio_for(shared_data_dir, "ravdess", audio_root, 48000)
    lost = rows[5]
    (audio_root / lost["wav"]).unlink()
    manifest = tmp_path / "meta" / "ravdess.jsonl"  # alone: nothing beside it
    manifest.parent.mkdir()
    shutil.copy(shared_data_dir / "emobox" / "ravdess" / "ravdess.jsonl", manifest)
    src = shared_data_dir / "emobox" / "ravdess"
    with caplog.at_level(logging.WARNING, logger="emorl.data.corpora"):
        prepared = import_emobox(manifest, audio_root, tmp_path / "out", name="ravdess_eb",
                                 label_map=src / "label_map.json", folds_dir=src)
    assert lost["key"] in caplog.text
    assert prepared.name == "ravdess_eb" and len(prepared.rows()) == 1439
    assert prepared.extra["summary"]["skipped"]["missing"] == 1
    expected = emobox_folds(shared_data_dir, "ravdess")
    got = prepared_folds(prepared)
    for k, splits in expected.items():
        for split, keys in splits.items():
            assert got[k][split] == keys - {lost["key"]}
    assert {row["label"] for row in prepared.rows()} == {
        "angry", "surprise", "sad", "disgust", "happy", "calm", "neutral", "fear"
    }  # fmt: skip


def test_import_without_folds_is_one_test_fold(shared_data_dir, tmp_path):
    audio_root = tmp_path / "emobox"
    audio_for(shared_data_dir, "savee", audio_root, 44100)
    manifest = tmp_path / "meta" / "savee.jsonl"
    manifest.parent.mkdir()
    shutil.copy(shared_data_dir / "emobox" / "savee" / "savee.jsonl", manifest)
    prepared = import_emobox(manifest, audio_root, tmp_path / "out")
    assert prepared.folds == [1]
    assert len(prepared.split(1, "test")) == 480 and prepared.split(1, "train") == []


def test_import_unknown_raw_label_is_named(shared_data_dir, tmp_path):
    audio_root = tmp_path / "emobox"
    rows = audio_for(shared_data_dir, "savee", audio_root, 44100)
    rows[3]["emo"] = "bored"
    manifest = tmp_path / "savee.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UnknownLabelError, match=r"savee\.jsonl row 4 \(key savee-.*'bored'"):
        import_emobox(manifest, audio_root, tmp_path / "out",
                      label_map=shared_data_dir / "emobox" / "savee" / "label_map.json")


def test_import_folds_naming_unknown_keys_is_an_error(shared_data_dir, tmp_path):
    audio_root = tmp_path / "emobox"
    rows = audio_for(shared_data_dir, "savee", audio_root, 44100)
    manifest = tmp_path / "savee.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows[1:]))  # fold files still name rows[0]
    with pytest.raises(ManifestError, match=rows[0]["key"]):
        import_emobox(manifest, audio_root, tmp_path / "out", folds_dir=shared_data_dir / "emobox" / "savee")


@pytest.mark.parametrize("corpus,rate", [("iemocap", 16000), ("meld", 48000)])
def test_track2_from_imported_corpora(shared_data_dir, tmp_path, corpus, rate):
    """An imported EmoBox corpus works too (MELD without speakers: split picked by label, then train).

    Only the clips a selection could name (every split of a MELD dia/utt) are written; the others
    are skipped as missing."""
    selection = shared_data_dir / "emobox" / "track2" / f"{corpus.upper()}_selected_balenced.jsonl"
    stems = {Path(r["wav_filename"]).stem.removeprefix("final_videos_test") for r in read_jsonl(selection)}
    audio_root = tmp_path / "emobox"
    rows = emobox_rows(shared_data_dir, corpus)
    wanted = [row for row in rows if row["key"].split("-")[1] in stems]
    write_clips((audio_root / row["wav"] for row in wanted), wav_bytes(rate))
    manifest = shared_data_dir / "emobox" / corpus / f"{corpus}.jsonl"
    prepared = import_emobox(manifest, audio_root, tmp_path / "out")
    assert prepared.extra["summary"]["skipped"]["missing"] == len(rows) - len(wanted)
    track2 = make_track2(prepared.root, selection, tmp_path / "track2")
    assert_track2(track2, f"{corpus}_track2")
    reread = load_prepared_corpus(tmp_path / "track2")
    assert json.loads((reread.root / "label_map.json").read_text()) == {
        "angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad"
    }  # fmt: skip
    assert len(read_jsonl(reread.root / f"{corpus}_track2.jsonl")) == 240


def test_track2_rejects_an_unknown_corpus(shared_data_dir, tmp_path):
    audio_root = tmp_path / "emobox"
    audio_for(shared_data_dir, "savee", audio_root, 44100)
    manifest = shared_data_dir / "emobox" / "savee" / "savee.jsonl"
    prepared = import_emobox(manifest, audio_root, tmp_path / "out", name="mycorpus")
    selection = tmp_path / "X_selected_balenced.jsonl"
    selection.write_text('{"wav_filename": "a.wav", "label": "sad", "speaker": "x"}\n')
    with pytest.raises(ValueError, match="cannot tell which corpus"):
        make_track2(prepared.root, selection, tmp_path / "track2")
