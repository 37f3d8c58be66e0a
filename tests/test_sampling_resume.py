"""Training samplers resume mid-epoch (skipping k indices gives the tail of the same epoch's order);
evaluation shards cover every clip once."""

import pytest
import torch
from torch.utils.data import TensorDataset

from emorl.data.sampling import (
    EpochShuffleSampler,
    EvaluationShardSampler,
    LengthBucketSampler,
    ResumableDataLoader,
)


def test_epoch_shuffle_depends_on_seed_and_epoch_and_skips_into_the_same_order():
    data = TensorDataset(torch.arange(10))
    sampler = EpochShuffleSampler(data, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(full) == list(range(10))
    sampler.set_epoch(2)
    sampler.skip = 4
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip applies to one epoch only
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_length_bucket_sampler_skips_into_the_same_order():
    sampler = LengthBucketSampler([1.0, 3.0, 2.0, 5.0, 4.0, 0.5, 2.5], batch_size=2, seed=1, pool_batches=2)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1)
    sampler.skip = 3
    assert list(sampler) == full[3:]


def test_loader_state_puts_the_sampler_at_the_saved_batch_and_rolls_over_at_epoch_end():
    data = TensorDataset(torch.arange(10))
    loader = ResumableDataLoader(data, batch_size=3, sampler=EpochShuffleSampler(data, seed=0))
    loader.progress = lambda: (4, 2)
    state = loader.state_dict()
    assert state == {"epoch": 4, "batches": 2}
    fresh = ResumableDataLoader(data, batch_size=3, sampler=EpochShuffleSampler(data, seed=0))
    fresh.load_state_dict(state)
    reference = EpochShuffleSampler(data, seed=0)
    reference.set_epoch(4)
    assert torch.cat([b[0] for b in fresh]).tolist() == list(reference)[6:]
    fresh.load_state_dict({"epoch": 4, "batches": 4})  # all 4 batches of epoch 4 were done
    reference.set_epoch(5)
    assert torch.cat([b[0] for b in fresh]).tolist() == list(reference)


@pytest.mark.parametrize("size,world", [(7, 2), (1, 2), (0, 3), (5, 5), (3, 4)])
def test_evaluation_shards_cover_every_clip_once_without_padding(size, world):
    shards = [list(EvaluationShardSampler(range(size), world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(EvaluationShardSampler(range(size), world, rank)) for rank in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
