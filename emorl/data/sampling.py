"""Seeded validation splits, length-bucketed sampling and mid-epoch resumable training loaders."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def split_train_valid(
    rows: Sequence[dict],
    val_fraction: float,
    group_by: Literal["utterance", "speaker"] = "utterance",
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Carve a validation split from training rows, deterministically for a seed.

    ``utterance``: stratified by ``label`` — each label gives ``round(n * val_fraction)`` of its
    rows (at least one when it has two or more). ``speaker``: whole speakers are moved to
    validation until it holds about ``val_fraction`` of the rows, so validation speakers are
    unseen in training (rows without a speaker count as one speaker each).
    Row order inside each split follows the input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    if group_by == "utterance":
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_label[row["label"]].append(i)
        for label in sorted(by_label):
            idx = by_label[label]
            take = int(round(len(idx) * val_fraction))
            if take == 0 and len(idx) >= 2:
                take = 1
            chosen.update(rng.permutation(idx)[:take].tolist())
    elif group_by == "speaker":
        by_speaker: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_speaker[str(row.get("speaker") or f"__row{i}")].append(i)
        target = val_fraction * len(rows)
        for speaker in rng.permutation(sorted(by_speaker)).tolist():
            if len(chosen) >= target:
                break
            chosen.update(by_speaker[speaker])
        if len(chosen) == len(rows):
            raise ValueError("val_group_by=speaker left no training speaker; lower val_fraction")
    else:
        raise ValueError(f"group_by must be 'utterance' or 'speaker', got {group_by!r}")
    train = [row for i, row in enumerate(rows) if i not in chosen]
    valid = [row for i, row in enumerate(rows) if i in chosen]
    return train, valid


class LengthBucketSampler(Sampler[int]):
    """Yields indices so that each run of ``batch_size`` consecutive indices has similar lengths.

    Each epoch: shuffle, cut into pools of ``pool_batches * batch_size`` items, sort each pool by
    length, cut it into batches and shuffle the batches. Padding shrinks while batches stay
    random. Under DDP, Lightning wraps this sampler and deals its indices out to ranks in turn,
    so each rank's batches still come from one sorted window. Deterministic for a seed and epoch.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.epoch = 0
        self.skip = 0  #: indices to drop at the start of the next epoch (a mid-epoch resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        n = len(self.lengths)
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.pool_batches * self.batch_size
        batches: list[np.ndarray] = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        order = [i for batch in batches for i in batch.tolist()]
        skip, self.skip = self.skip, 0
        yield from order[skip:]


class EpochShuffleSampler(DistributedSampler):
    """A shuffle seeded by ``(seed, epoch)``, dealt out to the DDP ranks, that can resume mid-epoch.

    Outside DDP it is one replica; under DDP every rank takes its share of the same permutation
    (as :class:`~torch.utils.data.DistributedSampler`, which Lightning then leaves in place).
    ``skip`` drops that many of this rank's indices at the start of the next epoch: a run resumed
    from a mid-epoch checkpoint sees exactly the batches the interrupted run had not yet seen.
    """

    def __init__(self, dataset, seed: int = 0) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset, num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed,
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(order[skip:])


class EvaluationShardSampler(DistributedSampler):
    """An evaluation set dealt out to the DDP ranks in order (rank r takes clips r, r + W, ...), unpadded.

    Lightning's DistributedSampler pads ranks with repeated clips, which UA / WA / F1 would count
    twice; its UnrepeatedDistributedSampler refuses (a bare AssertionError) a set with fewer clips
    than ranks. Here a rank may get no clip of a set; the metrics still sync over every rank.
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position Lightning saves in checkpoints (its ``_Stateful`` hook).

    ``progress`` returns ``(epoch, batches done in that epoch)``; the DataModule reads it from the
    trainer's own loop counters, which count the batches trained on (the loader itself has already
    fetched one more: Lightning prefetches). On load, the sampler (:class:`EpochShuffleSampler` or
    :class:`LengthBucketSampler`) is set to that epoch and skips the batches already done, without
    decoding them. A sampler without ``skip`` (Lightning's DDP wrapper around a bucket sampler)
    restarts the epoch instead.
    """

    progress: Callable[[], tuple[int, int]] | None = None

    def state_dict(self) -> dict:
        if self.progress is None or not hasattr(self.sampler, "skip"):
            return {}
        epoch, batches = self.progress()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict) -> None:
        if not state or not hasattr(self.sampler, "skip"):
            return
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip = batches * int(self.batch_size or 1)


def padding_ratio(lengths: Sequence[float], batch_size: int, order: Sequence[int]) -> float:
    """Share of padded samples when ``order`` is cut into batches (for tests and benchmarks)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    order = list(order)
    total = padded = 0.0
    for start in range(0, len(order), batch_size):
        batch = lengths[order[start : start + batch_size]]
        total += batch.max() * len(batch)
        padded += batch.max() * len(batch) - batch.sum()
    return padded / total if total else 0.0
