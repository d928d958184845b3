from collections import Counter
from types import SimpleNamespace

import pytest
from torch.utils.data import DataLoader

from callbacks.sampler_epoch import SamplerEpoch
from rsb_composer.data.samplers import steps_per_epoch, train_sampler

REPEAT = 3  # repeated_augmentation, as the paper's A1/A2


def _epoch(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return list(iter(sampler))


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_repeated_augmentation_keeps_the_epoch_length(world):
    n = 4096
    plain = train_sampler(range(n), 0, seed=0, world_size=world, rank=0)
    repeated = train_sampler(range(n), REPEAT, seed=0, world_size=world, rank=0)
    assert len(repeated) == len(plain) == n // world
    assert len(_epoch(repeated)) == n // world


@pytest.mark.parametrize("world", [3, 4, 8])
def test_copies_of_an_image_land_on_different_ranks(world):
    n = 1000
    shards = [_epoch(train_sampler(range(n), REPEAT, seed=0, world_size=world, rank=r)) for r in range(world)]
    for shard in shards:
        assert max(Counter(shard).values()) == 1  # never two copies on one rank
    seen = Counter(i for shard in shards for i in shard)
    assert max(seen.values()) == 3  # up to 3 copies, each on its own rank
    assert sum(seen.values()) == sum(len(s) for s in shards)


def test_one_process_gets_the_copies_back_to_back():
    order = _epoch(train_sampler(range(100), REPEAT, seed=0, world_size=1, rank=0))
    assert len(order) == 100
    assert order[0] == order[1] == order[2] and order[3] == order[4] == order[5]


def test_sampler_epoch_callback_advances_non_distributed_samplers():
    sampler = train_sampler(range(500), REPEAT, seed=0, world_size=2, rank=1)
    loader = DataLoader(range(500), sampler=sampler, batch_size=10)
    first = _epoch(sampler, 0)
    state = SimpleNamespace(dataloader=loader, timestamp=SimpleNamespace(epoch=3))
    SamplerEpoch().epoch_start(state, logger=None)
    third = list(iter(sampler))
    assert third == _epoch(train_sampler(range(500), REPEAT, seed=0, world_size=2, rank=1), 3)
    assert third != first


def test_steps_per_epoch_follows_the_sampler():
    assert steps_per_epoch(1_281_167, 256, 0, world_size=1) == 5004  # ImageNet-1k, batch 256 (the notes' 5004)
    assert steps_per_epoch(1_281_167, 256, 0, world_size=8) == 625
    assert steps_per_epoch(1_281_167, 256, REPEAT, world_size=8) == 625
