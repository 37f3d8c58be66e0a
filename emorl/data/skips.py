"""Training clips that could not be loaded, counted per epoch: a run never trains on nothing in silence.

A clip that fails to decode is skipped (logged once per clip with its reason; ``strict_audio``
raises instead). The training loader's collate function is wrapped in :class:`CountingCollate`,
which counts the skipped items of every batch, in the worker processes too, and hands the count to
the main process inside the batch (:data:`SKIPPED_KEY`) or, when no clip of a batch loaded, as a
:class:`SkippedBatch`. :class:`emorl.data.datamodule.EmoDataModule` takes the counts out before the
model sees the batch (a :class:`SkippedBatch` becomes ``None``, what modules skip) and, at the end of
each training epoch, :func:`epoch_verdict` decides:

- no clip of the epoch loaded: :class:`AllClipsSkippedError` (a fit would otherwise loop forever
  without an optimiser step), naming the corpus, the count and the first reasons;
- more than ``max_skip_share`` of its clips skipped: one warning with the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emorl.errors import EmorlError

#: where :class:`CountingCollate` puts a batch's count of skipped clips
SKIPPED_KEY = "clips_skipped"


class AllClipsSkippedError(EmorlError):
    """A whole training epoch without one clip that could be loaded."""


@dataclass(frozen=True)
class SkippedBatch:
    """What the training loader yields for a batch none of whose ``clips`` loaded."""

    clips: int


class CountingCollate:
    """``collate`` with the count of ``None`` items (skipped clips) carried along (picklable for workers)."""

    def __init__(self, collate: Callable[[Sequence], object]) -> None:
        self.collate = collate

    def __call__(self, items: Sequence) -> object:
        skipped = sum(item is None for item in items)
        batch = self.collate(items)
        if batch is None:
            return SkippedBatch(len(items))
        if isinstance(batch, dict):
            batch[SKIPPED_KEY] = skipped
        return batch


@dataclass
class EpochSkips:
    """Clips and batches of one training epoch (on this rank), and how many were skipped."""

    epoch: int = -1
    clips: int = 0
    skipped: int = 0
    batches: int = 0
    batches_loaded: int = 0

    def add(self, clips: int, skipped: int) -> None:
        self.clips += clips
        self.skipped += skipped
        self.batches += 1
        self.batches_loaded += int(skipped < clips)


def take_count(batch: object) -> tuple[object, int, int] | None:
    """``(batch for the model, clips, skipped)`` of a training batch from :class:`CountingCollate`,
    ``None`` for a batch that did not pass through it (left as it is)."""
    if isinstance(batch, SkippedBatch):
        return None, batch.clips, batch.clips
    if isinstance(batch, dict) and SKIPPED_KEY in batch:
        skipped = int(batch.pop(SKIPPED_KEY))
        loaded = len(batch["key"]) if "key" in batch else len(batch.get("label", ()))
        return batch, loaded + skipped, skipped
    return None


def epoch_verdict(skips: EpochSkips, corpus: str, max_share: float,
                  reasons: Callable[[], list[str]]) -> str | None:
    """At the end of a training epoch: raise :class:`AllClipsSkippedError` when no clip loaded;
    a warning's text when more than ``max_share`` of the clips were skipped; else ``None``.

    ``reasons()`` gives the first clips' failure reasons (only called when needed).
    """
    if skips.clips and skips.batches_loaded == 0:
        found = reasons()
        raise AllClipsSkippedError(
            f"no training clip of {corpus} could be loaded in epoch {skips.epoch} ({skips.skipped} of "
            f"{skips.clips} skipped" + (f"; e.g. {'; '.join(found)}" if found else "") + "), run "
            f"`emorl data check {corpus}` and fix or re-prepare the corpus")
    if skips.clips and skips.skipped / skips.clips > max_share:
        return (f"epoch {skips.epoch}: {skips.skipped} of {skips.clips} training clips of {corpus} "
                f"({100 * skips.skipped / skips.clips:.0f} %) could not be loaded and were skipped "
                f"(more than data.max_skip_share {max_share:g}); `emorl data check {corpus}` lists them")
    return None
