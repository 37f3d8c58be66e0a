"""Helpers shared by the corpus-preparer tests (imported by the other test_corpora_* files), and
tests of emorl.data.corpora.common."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import pytest
import soundfile as sf

from emorl.data.corpora.common import (
    SkipLog,
    Utterance,
    find_dir,
    finish,
    format_summary,
    leave_one_group_out,
    probe_utterances,
)
from emorl.data.manifest import SPLITS, PreparedCorpus, load_prepared_corpus
from emorl.labels import CORPUS_LABELS


@lru_cache(maxsize=None)
def wav_bytes(sample_rate: int, frames: int = 320, channels: int = 1) -> bytes:
    """A tiny wav file (low noise), made once per format and copied to every path that needs it."""
    rng = np.random.default_rng(sample_rate + channels)
    data = (rng.standard_normal((frames, channels)) * 0.01).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_clips(paths: Iterable[Path], data: bytes) -> int:
    made: set[Path] = set()
    count = 0
    for path in paths:
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        count += 1
    return count


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def emobox_rows(shared: Path, corpus: str) -> list[dict]:
    return read_jsonl(shared / "emobox" / corpus / f"{corpus}.jsonl")


def emobox_folds(shared: Path, corpus: str) -> dict[int, dict[str, set[str]]]:
    """{fold: {split: keys}} of EmoBox's committed fold files (absent splits left out)."""
    folds: dict[int, dict[str, set[str]]] = {}
    for fold_dir in sorted((shared / "emobox" / corpus).glob("fold_*")):
        k = int(fold_dir.name.split("_")[1])
        for split in SPLITS:
            path = fold_dir / f"{corpus}_{split}_fold_{k}.jsonl"
            if path.exists():
                folds.setdefault(k, {})[split] = {row["key"] for row in read_jsonl(path)}
    return folds


def prepared_folds(prepared: PreparedCorpus) -> dict[int, dict[str, set[str]]]:
    folds: dict[int, dict[str, set[str]]] = {}
    for k in prepared.folds:
        for split in SPLITS:
            path = prepared.root / f"fold_{k}" / f"{prepared.name}_{split}_fold_{k}.jsonl"
            if path.exists():
                folds.setdefault(k, {})[split] = {row["key"] for row in read_jsonl(path)}
    return folds


def assert_same_folds_as_emobox(prepared: PreparedCorpus, shared: Path, corpus: str) -> None:
    """Same fold numbers, same split files, and every split's key set equal to EmoBox's."""
    expected, got = emobox_folds(shared, corpus), prepared_folds(prepared)
    assert sorted(got) == sorted(expected)
    for k in expected:
        assert sorted(got[k]) == sorted(expected[k]), f"fold {k}: splits differ"
        for split, keys in expected[k].items():
            assert got[k][split] == keys, (
                f"fold {k} {split}: {len(got[k][split] - keys)} extra, {len(keys - got[k][split])} missing"
            )
    all_keys = {row["key"] for row in emobox_rows(shared, corpus)}
    assert {row["key"] for row in prepared.rows()} == all_keys


def assert_track2(prepared: PreparedCorpus, name: str) -> list[dict]:
    assert prepared.name == name
    assert prepared.folds == [1]
    assert list(prepared.label_set.classes) == ["angry", "happy", "neutral", "sad"]
    test = prepared.split(1, "test")
    assert len(test) == 240
    assert Counter(row["label"] for row in test) == {"angry": 60, "happy": 60, "neutral": 60, "sad": 60}
    assert all(row["emo"] == row["label"] for row in test)
    assert all(Path(row["wav"]).is_absolute() and Path(row["wav"]).is_file() for row in test)
    assert prepared.split(1, "train") == []
    return test


# ---------------------------------------------------------------------------------------------
# emorl.data.corpora.common
# ---------------------------------------------------------------------------------------------


def test_find_dir_lists_every_place_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        find_dir([tmp_path / "a", tmp_path / "b" / "c"], "the clips", "pass --root")
    message = str(err.value)
    assert "the clips" in message and str(tmp_path / "a") in message and str(tmp_path / "b" / "c") in message
    assert "pass --root" in message
    (tmp_path / "b" / "c").mkdir(parents=True)
    assert find_dir([tmp_path / "a", tmp_path / "b" / "c"], "x") == tmp_path / "b" / "c"


def test_probe_skips_missing_corrupt_and_empty_clips_and_counts_them(tmp_path, caplog):
    good, empty, corrupt, zero = (tmp_path / f"{n}.wav" for n in ("good", "empty", "corrupt", "zero"))
    good.write_bytes(wav_bytes(16000))
    empty.write_bytes(b"")
    corrupt.write_bytes(b"RIFF not really a wav file at all" * 10)
    zero.write_bytes(wav_bytes(16000, frames=0))
    utts = [
        Utterance(f"c-{path.stem}", path, "n", "neutral", group=1)
        for path in (good, empty, corrupt, zero, tmp_path / "gone.wav")
    ]
    skips = SkipLog("c")
    with caplog.at_level(logging.WARNING, logger="emorl.data.corpora"):
        rows = probe_utterances("c", utts, skips)
    assert [row["key"] for row in rows] == ["c-good"]
    assert rows[0]["sample_rate"] == 16000 and rows[0]["num_frame"] == 320
    assert rows[0]["length"] == pytest.approx(0.02) and rows[0]["channel"] is None
    assert skips.skipped == {"missing": ["c-gone"], "unreadable": ["c-empty", "c-corrupt", "c-zero"]}
    for name in ("c-gone", "c-empty", "c-corrupt", "c-zero"):
        assert name in caplog.text
    # threads give the same answer
    assert probe_utterances("c", utts, SkipLog("c"), workers=3) == rows


def test_finish_writes_summary_and_empty_test_folds(tmp_path, caplog):
    labels = CORPUS_LABELS["savee"]
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes(44100))
    utts = [Utterance(f"s-{i}", clip, "a", "angry", group="JE", speaker="JE") for i in range(3)]
    skips = SkipLog("s")
    skips.missing("s-lost", tmp_path / "lost.wav")
    rows = probe_utterances("s", utts, skips)
    folds = leave_one_group_out(rows, {row["key"]: "JE" for row in rows}, ("JE", "KL"))
    with caplog.at_level(logging.INFO, logger="emorl.data.corpora"):
        prepared = finish(tmp_path / "out", "s", rows, labels, folds, skips, full_size=480)
    assert "fold 2 has an empty test set" in caplog.text
    reread = load_prepared_corpus(tmp_path / "out")
    summary = reread.extra["summary"]
    assert summary["utterances"] == 3
    assert summary["labels"]["angry"] == 3 and summary["labels"]["sad"] == 0
    assert summary["splits"] == {"fold_1": {"train": 0, "test": 3}, "fold_2": {"train": 3, "test": 0}}
    assert summary["skipped"] == {"missing": 1, "unreadable": 0}
    assert prepared.split(2, "test") == [] and len(prepared.split(2, "train")) == 3
    text = format_summary(summary, "s")
    assert "3 utterances, 0.0 h (the complete corpus gives 480)" in text
    assert "missing 1: s-lost" in text and "fold_2: train 3, test 0" in text


def test_finish_refuses_an_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="no usable utterance"):
        finish(tmp_path / "out", "s", [], CORPUS_LABELS["savee"], {1: {"test": []}}, SkipLog("s"))
