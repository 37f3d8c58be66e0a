"""Manifest rows -> waveforms: :class:`EmotionDataset` (undecodable clips skipped, each said once),
the default collate function and the reasons clips failed.

Items are ``{"key", "wave", "label", "row"}``; an undecodable clip is ``None``, which collation
drops (the training loader counts them: :mod:`emorl.data.skips`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emorl.audio import TARGET_SAMPLE_RATE, AudioError, DurationPolicy, load_audio
from emorl.data.manifest import PreparedCorpus

log = logging.getLogger(__name__)


class EmotionDataset(Dataset):
    """Manifest rows -> ``{"key", "wave", "label", "row"}``; undecodable clips become ``None``.

    A clip that fails to decode is logged with its key and path and counted in
    ``failed_keys``; collation drops it, so one bad file never stops a run
    (``strict_audio=True`` raises instead).

    With ``decode_audio = False`` items are not decoded: ``wave`` is ``None`` and ``decode`` is a
    zero-argument callable that returns the decoded item (or ``None``), for collators that read
    features from a cache and decode only what the cache lacks. Keys in ``skip_keys`` (clips that
    a cache fill found undecodable) then yield ``None`` at once.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        label_ids: Sequence[int],
        corpus: PreparedCorpus,
        duration: DurationPolicy,
        sample_rate: int = TARGET_SAMPLE_RATE,
        strict_audio: bool = False,
    ) -> None:
        if len(rows) != len(label_ids):
            raise ValueError("rows and label_ids differ in length")
        self.rows = list(rows)
        self.label_ids = list(label_ids)
        self.corpus = corpus
        self.duration = duration
        self.sample_rate = sample_rate
        self.strict_audio = strict_audio
        self.failed_keys: list[str] = []
        self.decode_audio = True
        self.skip_keys: set[str] = set()
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def _skip(self, key: str, reason: str) -> None:
        """Count a clip that could not be loaded; say so once per clip (each epoch retries it)."""
        if key not in self._reported:
            self._reported.add(key)
            log.warning("skipping clip %s (%s)", key, reason)
        self.failed_keys.append(key)

    def lengths(self) -> list[float]:
        """Clip durations in seconds from the manifest (for bucketing), 0 when unknown."""
        return [float(row.get("length") or 0.0) for row in self.rows]

    def __getitem__(self, index: int) -> dict | None:
        if self.decode_audio:
            return self.load_item(index)
        row = self.rows[index]
        if row["key"] in self.skip_keys:
            return None
        return {"key": row["key"], "wave": None, "label": self.label_ids[index], "row": row,
                "decode": functools.partial(self.load_item, index)}

    def load_item(self, index: int) -> dict | None:
        """The decoded item ``index`` (whatever ``decode_audio`` says), ``None`` if undecodable."""
        row = self.rows[index]
        path = self.corpus.resolve_wav(row["wav"])
        try:
            wave = load_audio(path, self.sample_rate, channel=row.get("channel"))
        except AudioError as err:
            if self.strict_audio:
                raise
            self._skip(row["key"], f"{path}: {err}")
            return None
        if not np.isfinite(wave).all():
            if self.strict_audio:
                raise AudioError(f"{path} holds NaN or infinite samples")
            self._skip(row["key"], f"{path}: NaN or infinite samples")
            return None
        wave = self.duration.apply(wave, self.sample_rate)
        if wave is None:  # longer than the manifest said; the policy drops it
            return None
        return {"key": row["key"], "wave": wave, "label": self.label_ids[index], "row": row}


def ensure_decoded(item: dict | None) -> dict | None:
    """``item`` with its waveform: items made without decoding (``wave`` ``None``) are decoded now."""
    if item is None or item.get("wave") is not None:
        return item
    decode = item.get("decode")
    if decode is None:
        raise RuntimeError(f"clip {item.get('key')} was not decoded and carries no way to decode it")
    return decode()


def failure_reasons(dataset: EmotionDataset, limit: int = 3, tries: int = 50) -> list[str]:
    """Why the first clips of ``dataset`` cannot be loaded (``key: reason``), decoded again here: the
    loader's workers, where they failed, are other processes."""
    reasons = []
    for row in dataset.rows[:tries]:
        path = dataset.corpus.resolve_wav(row["wav"])
        try:
            wave = load_audio(path, dataset.sample_rate, channel=row.get("channel"))
        except AudioError as err:
            reasons.append(f"{row['key']}: {err}")
        else:
            if not np.isfinite(wave).all():
                reasons.append(f"{row['key']}: NaN or infinite samples")
        if len(reasons) >= limit:
            break
    return reasons


def collate_waves(items: Sequence[dict | None]) -> dict | None:
    """Pad waveforms into a batch; ``None`` items (undecodable clips) are dropped.

    Returns ``{"wave": (B, T) float, "wave_lengths": (B,) long, "label": (B,) long,
    "key": [str], "row": [dict]}``, or ``None`` when every item was dropped. Items made without
    decoding are decoded here.
    """
    items = [item for item in map(ensure_decoded, items) if item is not None]
    if not items:
        return None
    lengths = torch.tensor([len(item["wave"]) for item in items], dtype=torch.long)
    wave = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for i, item in enumerate(items):
        wave[i, : len(item["wave"])] = torch.from_numpy(np.asarray(item["wave"], dtype=np.float32))
    return {
        "wave": wave,
        "wave_lengths": lengths,
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "key": [item["key"] for item in items],
        "row": [item["row"] for item in items],
    }
