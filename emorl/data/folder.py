"""Unlabelled audio for ``emorl predict``: a folder of audio files, a manifest, or a list of paths.

    emorl predict --config configs/lalm/qwen2_audio_zeroshot_cot.yaml --data.predict_path my_clips/

``predict_path`` may be

- a **folder**: every audio file under it (``.wav .flac .ogg .mp3 .m4a .mp4 .aiff``, recursively,
  sorted), keyed by its path relative to the folder without the suffix;
- a **JSONL manifest** (``.jsonl``): one object per line with ``wav`` (absolute, or relative to the
  manifest's folder), optional ``key`` (default: the file name) and ``channel``; a prepared
  corpus's manifest works as it is;
- a **text file** (``.txt`` / ``.lst``): one audio path per line.

Clips that cannot be decoded are logged, counted (``failed_keys``) and left out of the
predictions; they never stop the run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from emorl.audio import AudioError, DurationPolicy, load_audio

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".mp4", ".aiff", ".aif")


class PredictInputError(ValueError):
    """``predict_path`` is missing, empty or malformed."""


def list_clips(path: str | Path) -> list[dict]:
    """Rows ``{"key", "wav", "channel"?}`` for a folder, a JSONL manifest or a path list."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PredictInputError(f"predict_path {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        rows = [{"key": str(p.relative_to(path).with_suffix("")), "wav": str(p)} for p in files]
    elif path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PredictInputError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or "wav" not in row:
                raise PredictInputError(f"{path}:{number}: each line needs a 'wav' field")
            wav = Path(row["wav"]).expanduser()
            wav = wav if wav.is_absolute() else path.parent / wav
            rows.append({**row, "key": str(row.get("key") or wav.stem), "wav": str(wav)})
    elif path.suffix in (".txt", ".lst"):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        wavs = [Path(line).expanduser() if Path(line).is_absolute() else path.parent / line for line in lines]
        rows = [{"key": wav.stem, "wav": str(wav)} for wav in wavs]
    else:
        raise PredictInputError(f"predict_path {path}: give a folder, a .jsonl manifest or a .txt list of paths")
    if not rows:
        raise PredictInputError(f"predict_path {path} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    dupes = sorted(key for key, count in Counter(row["key"] for row in rows).items() if count > 1)
    if dupes:
        raise PredictInputError(f"predict_path {path}: repeated keys {dupes[:5]}")
    return rows


class AudioFolderDataset(Dataset):
    """Decoded clips of :func:`list_clips`, as the DataModule's items (label -1: unknown)."""

    def __init__(self, path: str | Path, sample_rate: int = 16_000, duration: DurationPolicy | None = None) -> None:
        self.name = Path(path).stem or "predict"
        self.rows = list_clips(path)
        self.sample_rate = sample_rate
        self.duration = duration or DurationPolicy(None, "keep")
        self.failed_keys: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict | None:
        row = self.rows[index]
        try:
            wave = load_audio(row["wav"], self.sample_rate, channel=row.get("channel"))
            if not np.isfinite(wave).all():
                raise AudioError(f"{row['wav']} holds NaN or infinite samples")
        except AudioError as err:
            self.failed_keys.append(row["key"])
            log.warning("skipping clip %s: %s", row["key"], err)
            return None
        wave = self.duration.apply(wave, self.sample_rate)
        if wave is None:
            self.failed_keys.append(row["key"])
            log.warning("skipping clip %s: longer than the duration limit", row["key"])
            return None
        return {"key": row["key"], "wave": wave, "label": -1, "row": row}
