"""Clips that are broken in the ways real downloads are: `emorl data check` names each, loading never crashes.

A wav cut in half, a 60-byte wav, a float wav scaled by 1e6, a 1-sample clip, digital silence,
a stereo clip whose selected channel is silent, an empty manifest (issue 14, item 3).
"""

import json

import numpy as np
import pytest
import soundfile as sf

from emorl.audio import (
    CHANNEL_POLICY,
    DurationPolicy,
    ShortAudioError,
    load_audio,
    silent_selected_channel,
    wav_declared_frames,
)
from emorl.commands import run_command
from emorl.data.check import check_corpus, main_check
from emorl.data.dataset import EmotionDataset
from emorl.data.manifest import write_prepared_corpus
from emorl.labels import LabelSet
from tests.corpus_factory import tone

LABELS = LabelSet("t", ("happy", "sad"), {"happy": "happy", "sad": "sad"})


def _good(path):
    sf.write(path, tone(220, 1.0), 16000, subtype="PCM_16")


def _cut_in_half(path):
    _good(path)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # the header still says 16000 frames


def _sixty_bytes(path):
    sf.write(path, tone(220, 1.0)[:8] + 0.2, 16000, subtype="PCM_16")
    assert path.stat().st_size == 60


def _scaled_by_1e6(path):
    sf.write(path, tone(220, 1.0) * 1e6, 16000, subtype="FLOAT")


def _one_sample(path):
    sf.write(path, np.array([0.5], np.float32), 16000, subtype="PCM_16")


def _digital_silence(path):
    sf.write(path, np.zeros(16000, np.float32), 16000, subtype="PCM_16")


def _speech_on_the_right(path):
    sf.write(path, np.stack([np.zeros(16000, np.float32), tone(220, 1.0)], axis=1), 16000, subtype="PCM_16")


BAD = {"good": _good, "cut": _cut_in_half, "sixty": _sixty_bytes, "loud": _scaled_by_1e6,
       "one": _one_sample, "zeros": _digital_silence}


def _corpus(tmp_path, writers, channel=None):
    rows = []
    for i, (key, writer) in enumerate(writers.items()):
        path = tmp_path / "audio" / f"{key}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        label = ("happy", "sad")[i % 2]
        rows.append({"key": key, "wav": str(path), "emo": label, "label": label, "sample_rate": 16000,
                     "channel": channel})
    keys = [row["key"] for row in rows]
    return write_prepared_corpus(tmp_path / "prep", "t", rows, LABELS, {1: {"train": keys, "test": keys}})


def test_each_broken_clip_gets_its_category_and_count(tmp_path, capsys):
    corpus = _corpus(tmp_path, BAD)
    report = check_corpus(corpus.root)
    assert report.counts() == {"too-short": 2, "silent": 1, "truncated": 1, "clipping": 1}
    assert report.problems["truncated"] == ["cut"]
    assert report.problems["too-short"] == ["sixty", "one"]
    assert report.problems["clipping"] == ["loud"]
    assert report.problems["silent"] == ["zeros"]
    assert main_check(corpus.root) == 1  # too-short and silent clips are errors
    out = capsys.readouterr().out
    assert "summary: too-short 2, silent 1, truncated 1, clipping 1" in out
    assert "warning truncated: 1 clip(s)" in out and "ERROR too-short: 2 clip(s)" in out


def test_warnings_pass_unless_strict(tmp_path, capsys):
    corpus = _corpus(tmp_path, {"good": _good, "cut": _cut_in_half, "loud": _scaled_by_1e6})
    assert main_check(corpus.root) == 0
    assert "result: ok" in capsys.readouterr().out
    assert main_check(corpus.root, strict=True) == 1
    out = capsys.readouterr().out
    assert "ERROR truncated: 1 clip(s)" in out and "ERROR clipping: 1 clip(s)" in out and "BROKEN" in out
    assert run_command(["data", "check", str(corpus.root), "--strict"]) == 1
    assert run_command(["data", "check", str(corpus.root)]) == 0


def test_a_clean_corpus_passes_strict(tmp_path, capsys):
    corpus = _corpus(tmp_path, {"a": _good, "b": _good})
    assert main_check(corpus.root, strict=True) == 0
    assert "summary: no problems" in capsys.readouterr().out


def test_the_header_of_a_cut_wav_says_more_than_the_file_holds(tmp_path):
    _cut_in_half(tmp_path / "cut.wav")
    _good(tmp_path / "good.wav")
    assert wav_declared_frames(tmp_path / "cut.wav") == 16000
    assert sf.info(str(tmp_path / "cut.wav")).frames == 8000  # libsndfile shortens it without a word
    assert wav_declared_frames(tmp_path / "good.wav") == 16000
    (tmp_path / "x.flac").write_bytes(b"fLaC")
    assert wav_declared_frames(tmp_path / "x.flac") is None


def test_loading_never_crashes_and_keeps_samples_in_range(tmp_path):
    for key, writer in BAD.items():
        writer(tmp_path / f"{key}.wav")
    with pytest.raises(ShortAudioError, match=r"one.wav holds 1 sample\(s\) \(0.062 ms\), under the 25 ms minimum"):
        load_audio(tmp_path / "one.wav")
    with pytest.raises(ShortAudioError, match="sixty.wav holds 8 sample"):
        load_audio(tmp_path / "sixty.wav")
    loud = load_audio(tmp_path / "loud.wav")
    assert float(np.abs(loud).max()) == 1.0  # clipped to full scale, as an integer wav would be
    assert len(load_audio(tmp_path / "cut.wav")) == 8000  # what is there
    assert not load_audio(tmp_path / "zeros.wav").any()


def test_a_dataset_of_broken_clips_yields_items_or_counted_skips(tmp_path):
    corpus = _corpus(tmp_path, BAD)
    rows = corpus.rows()
    dataset = EmotionDataset(rows, [LABELS.index(r["label"]) for r in rows], corpus, DurationPolicy())
    items = [dataset[i] for i in range(len(dataset))]
    kept = {item["key"] for item in items if item is not None}
    assert kept == {"good", "cut", "loud", "zeros"}
    assert dataset.failed_keys == ["sixty", "one"]
    assert all(np.abs(item["wave"]).max() <= 1.0 for item in items if item is not None)


def test_a_silent_selected_channel_is_flagged_and_the_default_averages(tmp_path):
    corpus = _corpus(tmp_path, {"right": _speech_on_the_right, "good": _good}, channel=1)
    report = check_corpus(corpus.root)
    assert report.problems["silent-channel"] == ["right"] and report.problems["silent"] == ["right"]
    averaged = _corpus(tmp_path / "avg", {"right": _speech_on_the_right, "good": _good})
    assert check_corpus(averaged.root).counts() == {}
    stereo = np.stack([np.zeros(100), np.ones(100) * 0.1])
    assert silent_selected_channel(stereo, 1) and not silent_selected_channel(stereo, 2)
    assert not silent_selected_channel(stereo, None) and not silent_selected_channel(stereo[:1], 1)
    assert CHANNEL_POLICY  # the feature cache keys on it


def test_an_empty_manifest_fails_the_check(tmp_path, capsys):
    corpus = _corpus(tmp_path, {"a": _good})
    corpus.manifest_path.write_text("")
    report = check_corpus(corpus.root)
    assert report.counts() == {"no-clips": 1} and not report.ok
    assert main_check(corpus.root) == 1
    out = capsys.readouterr().out
    assert f"ERROR no-clips: {corpus.manifest_path} holds no clip; prepare the corpus again" in out
    assert "summary: no-clips 1" in out


@pytest.mark.parametrize("value", ["-5", "0", "nan"])
def test_a_bad_max_seconds_is_a_one_line_error(tmp_path, capsys, value):
    corpus = _corpus(tmp_path, {"a": _good})
    assert run_command(["data", "check", str(corpus.root), "--max-seconds", value]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"--max-seconds must be a positive number of seconds, not {float(value)}" in err


def test_the_summary_is_in_the_json_free_report(tmp_path):
    corpus = _corpus(tmp_path, {"a": _good, "z": _digital_silence})
    assert check_corpus(corpus.root).summary() == "summary: silent 1"
    assert json.loads(json.dumps(check_corpus(corpus.root).counts())) == {"silent": 1}


def test_the_feature_cache_key_changes_with_the_channel_and_its_policy(tmp_path, monkeypatch):
    from emorl import audio
    from emorl.upstreams.cache import file_clip_id

    _speech_on_the_right(tmp_path / "s.wav")
    averaged, left = file_clip_id("k", tmp_path / "s.wav", None), file_clip_id("k", tmp_path / "s.wav", 1)
    assert averaged != left
    monkeypatch.setattr(audio, "CHANNEL_POLICY", "some-older-policy")
    assert file_clip_id("k", tmp_path / "s.wav", None) != averaged  # old caches are not reused silently
