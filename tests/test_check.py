"""`emorl data check` names every kind of broken clip and fails only on real breakage."""

import json

import numpy as np
import pytest
import soundfile as sf

from emorl.data.check import check_corpus, main_check
from emorl.data.manifest import ManifestError, write_prepared_corpus
from emorl.labels import LabelSet
from tests.corpus_factory import tone


def _corpus(tmp_path, clips):
    rows = []
    for key, (writer, label) in clips.items():
        path = tmp_path / "audio" / f"{key}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        if writer is not None:
            writer(path)
        rows.append({"key": key, "wav": str(path), "emo": label, "label": label, "length": 1.0,
                     "sample_rate": 16000})
    labels = LabelSet("t", ("happy", "sad"), {"happy": "happy", "sad": "sad"})
    keys = list(clips)
    return write_prepared_corpus(tmp_path / "prep", "t", rows, labels,
                                 {1: {"train": keys[: len(keys) // 2], "test": keys[len(keys) // 2 :]}})


def _good(path):
    sf.write(path, tone(220, 1.0), 16000)


BROKEN = {
    "good": (_good, "happy"),
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage"), "sad"),
    "empty": (lambda p: p.write_bytes(b""), "happy"),
    "silent": (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "sad"),
    "nan": (lambda p: sf.write(p, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT"), "happy"),
    "long": (lambda p: sf.write(p, tone(220, 3.0), 16000), "sad"),
    "missing": (None, "happy"),
    "badlabel": (_good, "bored"),
    "rate": (lambda p: sf.write(p, tone(220, 1.0, sr=8000), 8000), "happy"),  # manifest says 16 kHz
}


def test_every_problem_is_reported_by_name(tmp_path, capsys):
    corpus = _corpus(tmp_path, BROKEN)
    report = check_corpus(corpus.root, max_seconds=2.0)
    assert report.problems["unreadable"] == ["corrupt"]
    assert report.problems["empty"] == ["empty"]
    assert report.problems["silent"] == ["silent"]
    assert report.problems["nan"] == ["nan"]
    assert report.problems["too-long"] == ["long"]
    assert report.problems["missing"] == ["missing"]
    assert report.problems["unknown-label"] == ["badlabel"]
    assert report.problems["rate-mismatch"] == ["rate"]
    assert not report.ok
    assert report.label_counts[1]["train"] == {"happy": 2, "sad": 2}
    assert main_check(corpus.root, max_seconds=2.0) == 1
    text = capsys.readouterr().out
    for name in ("unreadable", "empty", "silent", "nan", "too-long", "missing", "unknown-label",
                 "rate-mismatch", "BROKEN"):
        assert name in text
    assert str(tmp_path / "audio" / "corrupt.wav") in text


def test_a_clean_corpus_passes_and_too_long_alone_is_a_warning(tmp_path):
    corpus = _corpus(tmp_path, {"a": (_good, "happy"), "b": BROKEN["long"], "c": BROKEN["rate"]})
    assert check_corpus(corpus.root, max_seconds=2.0).ok
    assert main_check(corpus.root, max_seconds=30.0) == 0


def test_a_malformed_manifest_line_is_named(tmp_path):
    corpus = _corpus(tmp_path, {"a": (_good, "happy"), "b": (_good, "sad")})
    manifest = corpus.root / "t.jsonl"
    manifest.write_text(manifest.read_text() + '{"key": "c", "wav": \n')
    with pytest.raises(ManifestError, match=r"t.jsonl:3: not valid JSON"):
        check_corpus(corpus.root)
    manifest.write_text('{"key": "x", "wav": "a.wav"}\n')
    with pytest.raises(ManifestError, match=r"t.jsonl:1: missing field\(s\) \['emo', 'label'\]"):
        check_corpus(corpus.root)


def test_the_rows_channel_is_the_one_checked(tmp_path):
    def stereo_with_silent_right(path):
        sf.write(path, np.stack([tone(220, 1.0), np.zeros(16000, np.float32)], axis=1), 16000)

    corpus = _corpus(tmp_path, {"left": (stereo_with_silent_right, "happy"),
                                "right": (stereo_with_silent_right, "sad")})  # fmt: skip
    rows = [json.loads(line) for line in (corpus.root / "t.jsonl").read_text().splitlines()]
    rows[0]["channel"], rows[1]["channel"] = 1, 2
    (corpus.root / "t.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = check_corpus(corpus.root)
    assert report.problems["silent"] == ["right"] and not report.ok


def test_the_report_reads_well(tmp_path):
    corpus = _corpus(tmp_path, {f"k{i}": BROKEN["missing"] for i in range(12)} | {"ok": (_good, "sad")})
    report = check_corpus(corpus.root)
    text = report.format()
    assert "ERROR missing: 12 clip(s)" in text and "... and 2 more" in text
    assert sum(line.strip().startswith("k") for line in text.splitlines()) == 10  # 10 examples
    assert str(tmp_path / "audio" / "k0.wav") in text
    train = next(line for line in text.splitlines() if line.strip().startswith("1/train"))
    assert train.split()[1:] == ["6", "0"]  # happy, sad
    assert report.label_counts[1]["test"] == {"happy": 6, "sad": 1}
    assert "result: BROKEN" in text


def test_a_corrupt_fold_file_is_named(tmp_path):
    corpus = _corpus(tmp_path, {"a": (_good, "happy"), "b": (_good, "sad")})
    fold = corpus.root / "fold_1" / "t_test_fold_1.jsonl"
    fold.write_text("[1, 2]\n")
    with pytest.raises(ManifestError, match=r"t_test_fold_1.jsonl:1: expected a JSON object"):
        check_corpus(corpus.root)
