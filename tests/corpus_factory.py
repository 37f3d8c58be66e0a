"""Tiny prepared corpora for tests: tones with per-label pitch, written through the real format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from emorl.data.manifest import PreparedCorpus, write_prepared_corpus
from emorl.labels import LabelSet

TONE_HZ = {"neutral": 150.0, "happy": 300.0, "sad": 110.0, "angry": 400.0, "calm": 130.0}


def tone(freq: float, seconds: float, sr: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_tiny_corpus(
    root: Path,
    name: str = "tiny",
    labels: Sequence[str] = ("neutral", "happy", "sad", "angry"),
    speakers: Sequence[str] = ("s1", "s2", "s3", "s4", "s5"),
    per_speaker_label: int = 2,
    test_speakers: Sequence[str] = ("s5",),
    sample_rate: int = 16_000,
    lengths: Sequence[float] = (0.5, 0.8, 1.1),
    with_valid: bool = False,
) -> PreparedCorpus:
    """A prepared corpus whose clips are tones (pitch per label); one fold, speaker-held-out test."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    i = 0
    for speaker in speakers:
        for label in labels:
            for rep in range(per_speaker_label):
                seconds = lengths[i % len(lengths)]
                wav = audio / f"{speaker}_{label}_{rep}.wav"
                sf.write(wav, tone(TONE_HZ.get(label, 200.0), seconds, sample_rate), sample_rate)
                rows.append(
                    {
                        "key": f"{name}-{speaker}-{label}-{rep}",
                        "dataset": name,
                        "wav": str(wav),
                        "length": seconds,
                        "sample_rate": sample_rate,
                        "emo": label,
                        "label": label,
                        "speaker": speaker,
                    }
                )
                i += 1
    test = [r["key"] for r in rows if r["speaker"] in test_speakers]
    rest = [r for r in rows if r["speaker"] not in test_speakers]
    splits = {"test": test}
    if with_valid:
        splits["valid"] = [r["key"] for r in rest if r["speaker"] == rest[0]["speaker"]]
        splits["train"] = [r["key"] for r in rest if r["speaker"] != rest[0]["speaker"]]
    else:
        splits["train"] = [r["key"] for r in rest]
    label_set = LabelSet(name, tuple(labels), {label: label for label in labels})
    return write_prepared_corpus(root / "prepared", name, rows, label_set, {1: splits})
