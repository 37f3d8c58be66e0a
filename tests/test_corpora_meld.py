import csv
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emorl.data.corpora import PREPARERS, make_track2, prepare_meld
from emorl.labels import UnknownLabelError
from tests.test_corpora_common import (
    assert_same_folds_as_emobox,
    assert_track2,
    wav_bytes,
    write_clips,
)

CLIP_DIRS = {
    "train": "train/train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
MISSING = {("train", 125, 3), ("dev", 110, 7)}  # absent from the real release


def read_ids(csv_path: Path) -> list[tuple[int, int]]:
    with open(csv_path, encoding="utf-8", newline="") as handle:
        return [(int(r["Dialogue_ID"]), int(r["Utterance_ID"])) for r in csv.DictReader(handle)]


def copy_csvs(shared: Path, root: Path) -> None:
    """The release's layout: train/train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    shutil.copy(shared / "meld" / "train_sent_emo.csv", root / "train" / "train_sent_emo.csv")
    for split in ("dev", "test"):
        shutil.copy(shared / "meld" / f"{split}_sent_emo.csv", root / f"{split}_sent_emo.csv")


def write_small_csv(shared: Path, path: Path, split: str, rows: int, emotion: str | None = None) -> None:
    """The first ``rows`` rows of a real CSV, written back as MELD writes them (CRLF, quoted times)."""
    with open(shared / "meld" / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\r\n")
    body = lines[1 : rows + 1]
    if emotion is not None:
        body[0] = body[0].replace(",neutral,", f",{emotion},", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join([lines[0], *body]) + "\r\n").encode("utf-8"))


def make_mp4(path: Path, layout: str, frames: int = 4800, rate: int = 48000) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        channels = len(av.AudioLayout(layout).channels)
        data = (np.random.default_rng(0).standard_normal((channels, frames)) * 0.01).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="module")
def meld_build(shared_data_dir, tmp_path_factory):
    """The full MELD release layout with the real CSVs and a tiny extracted .wav per clip."""
    root = tmp_path_factory.mktemp("meld_raw") / "MELD.Raw"
    copy_csvs(shared_data_dir, root)
    clips = []
    for split, sub in CLIP_DIRS.items():
        csv_path = root / ("train" if split == "train" else "") / f"{split}_sent_emo.csv"
        ids = [(d, u) for d, u in read_ids(csv_path) if (split, d, u) not in MISSING]
        clips += [root / sub / f"dia{d}_utt{u}.wav" for d, u in ids]
    write_clips(clips, wav_bytes(48000, frames=240))
    out = tmp_path_factory.mktemp("meld_out")
    logger = logging.getLogger("emorl.data.corpora")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        prepared = prepare_meld(root, out)
    finally:
        logger.removeHandler(handler)
    return prepared, "\n".join(r.getMessage() for r in records)


@pytest.mark.shared_data
def test_real_csvs_give_emobox_keys_and_folds(meld_build, shared_data_dir):
    prepared, warnings = meld_build
    assert PREPARERS["meld"] is prepare_meld
    rows = prepared.rows()
    assert len(rows) == 13706
    assert [len(prepared.split(1, s)) for s in ("train", "valid", "test")] == [9988, 1108, 2610]
    assert_same_folds_as_emobox(prepared, shared_data_dir, "meld")
    summary = prepared.extra["summary"]
    assert summary["skipped"] == {"missing": 2, "unreadable": 0}
    assert sorted(summary["skipped_clips"]["missing"]) == ["meld-dia110_utt7-dev", "meld-dia125_utt3-train"]
    assert "meld-dia125_utt3-train" in warnings and "meld-dia110_utt7-dev" in warnings
    by_key = {row["key"]: row for row in rows}
    first = by_key["meld-dia0_utt0-train"]
    assert first["speaker"] == "Chandler" and first["emo"] == "neutral" and first["label"] == "neutral"
    assert first["transcript"].startswith("also I was the point person on my company\u2019s transition")
    assert first["sample_rate"] == 48000 and first["num_frame"] == 240 and first["channel"] is None
    assert by_key["meld-dia0_utt0-test"]["emo"] == "surprise"
    assert Counter(row["emo"] for row in rows)["joy"] == Counter(row["label"] for row in rows)["happy"]
    assert prepared.label_set.classes == ("neutral", "happy", "sad", "surprise", "disgust", "angry", "fear")


@pytest.mark.shared_data
def test_track2_takes_each_utterance_from_the_split_that_fits(meld_build, shared_data_dir, tmp_path):
    selection = shared_data_dir / "emobox" / "track2" / "MELD_selected_balenced.jsonl"
    track2 = make_track2(meld_build[0].root, selection, tmp_path / "track2")
    test = assert_track2(track2, "meld_track2")
    assert test[0]["key"] == "meld-dia933_utt6-train"
    assert Counter(row["key"].rsplit("-", 1)[1] for row in test) == {"train": 185, "dev": 16, "test": 39}
    assert all(row["speaker"] == row["track2_speaker"] for row in test)
    prefixed = [row for row in test if "final_videos_test" in row["track2_wav"]]
    assert {row["key"] for row in prefixed} == {"meld-dia100_utt5-test", "meld-dia12_utt3-test"}
    assert sorted(track2.extra["ambiguous"]) == ["audio/dia208_utt1.wav", "audio/dia252_utt15.wav"]


@pytest.fixture
def small_release(shared_data_dir, tmp_path):
    """Two rows per split; CSVs under data/MELD/ (as in the MELD GitHub repository)."""
    root = tmp_path / "raw"
    for split in ("train", "dev", "test"):
        write_small_csv(shared_data_dir, root / "data" / "MELD" / f"{split}_sent_emo.csv", split, 2)
    return root


@pytest.mark.shared_data
def test_mp4_clips_channels_and_test_prefix(small_release, tmp_path, caplog):
    make_mp4(small_release / "train" / "train_splits" / "dia0_utt0.mp4", "5.1")
    make_mp4(small_release / "train" / "train_splits" / "dia0_utt1.mp4", "stereo")
    make_mp4(small_release / "dev_splits_complete" / "dia0_utt0.mp4", "5.1")
    corrupt = small_release / "dev_splits_complete" / "dia0_utt1.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 200)
    make_mp4(small_release / "output_repeated_splits_test" / "final_videos_testdia0_utt0.mp4", "stereo")
    # dia0_utt1 of test has no clip
    with caplog.at_level(logging.WARNING, logger="emorl.data.corpora"):
        prepared = prepare_meld(small_release, tmp_path / "out", workers=2)
    by_key = {row["key"]: row for row in prepared.rows()}
    assert sorted(by_key) == [
        "meld-dia0_utt0-dev", "meld-dia0_utt0-test", "meld-dia0_utt0-train", "meld-dia0_utt1-train"
    ]  # fmt: skip
    assert by_key["meld-dia0_utt0-train"]["channel"] == 3
    assert by_key["meld-dia0_utt1-train"]["channel"] is None  # stereo: averaged
    assert by_key["meld-dia0_utt0-dev"]["channel"] == 3
    assert by_key["meld-dia0_utt0-test"]["channel"] is None
    assert by_key["meld-dia0_utt0-test"]["wav"].endswith("final_videos_testdia0_utt0.mp4")
    for row in by_key.values():
        assert row["sample_rate"] == 48000 and 0.09 < row["length"] < 0.2
    summary = prepared.extra["summary"]
    assert summary["skipped"] == {"missing": 1, "unreadable": 1}
    assert summary["skipped_clips"] == {
        "missing": ["meld-dia0_utt1-test"], "unreadable": ["meld-dia0_utt1-dev"]
    }  # fmt: skip
    assert "meld-dia0_utt1-test" in caplog.text and "meld-dia0_utt1-dev" in caplog.text
    assert [len(prepared.split(1, s)) for s in ("train", "valid", "test")] == [2, 1, 1]


@pytest.mark.shared_data
def test_extracted_wavs_in_their_own_folder(small_release, tmp_path):
    wavs = tmp_path / "wavs"
    write_clips([wavs / split / f"dia0_utt{u}.wav" for split in ("train", "dev", "test") for u in (0, 1)],
                wav_bytes(16000, channels=2))
    prepared = prepare_meld(small_release, tmp_path / "out", wav_dir=wavs)
    rows = prepared.rows()
    assert len(rows) == 6
    for row in rows:
        assert row["wav"].startswith(str(wavs)) and row["sample_rate"] == 16000 and row["channel"] is None


@pytest.mark.shared_data
def test_a_wav_beats_the_mp4_of_the_same_clip(small_release, tmp_path):
    for sub in CLIP_DIRS.values():
        write_clips([small_release / sub / f"dia0_utt{u}.wav" for u in (0, 1)], wav_bytes(16000))
    (small_release / "train" / "train_splits" / "dia0_utt0.mp4").write_bytes(b"not read")
    prepared = prepare_meld(small_release, tmp_path / "out")
    assert len(prepared.rows()) == 6 and prepared.extra["summary"]["skipped"]["unreadable"] == 0


@pytest.mark.shared_data
def test_unknown_emotion_names_csv_and_label(shared_data_dir, tmp_path):
    root = tmp_path / "raw"
    write_small_csv(shared_data_dir, root / "train" / "train_sent_emo.csv", "train", 2, emotion="happiness")
    for split in ("dev", "test"):
        write_small_csv(shared_data_dir, root / f"{split}_sent_emo.csv", split, 2)
    for sub in CLIP_DIRS.values():
        (root / sub).mkdir(parents=True)
    with pytest.raises(UnknownLabelError, match=r"train_sent_emo\.csv:2 \(dia0_utt0\).*'happiness'"):
        prepare_meld(root, tmp_path / "out")


def test_missing_csv_lists_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_meld(tmp_path, tmp_path / "out")
    message = str(err.value)
    assert "train_sent_emo.csv" in message
    assert str(tmp_path / "train" / "train_sent_emo.csv") in message
    assert str(tmp_path / "data" / "MELD" / "train_sent_emo.csv") in message


@pytest.mark.shared_data
def test_missing_clip_folder_lists_where_it_looked(small_release, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MELD's train clips.*\n.*train_splits"):
        prepare_meld(small_release, tmp_path / "out")
