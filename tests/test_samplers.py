from collections import Counter
from types import SimpleNamespace

import pytest
from composer.utils import dist
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader

from callbacks.sampler_resume import SamplerResume
from rsb_composer.data.samplers import steps_per_epoch, train_sampler

REPEAT = 3  # repeated_augmentation, as the paper's A1/A2


def _epoch(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return list(iter(sampler))


def _indices(keys):
    return [index for index, _, _ in keys]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_repeated_augmentation_keeps_the_epoch_length(world):
    n = 4096
    plain = train_sampler(range(n), 0, seed=0, world_size=world, rank=0)
    repeated = train_sampler(range(n), REPEAT, seed=0, world_size=world, rank=0)
    assert len(repeated) == len(plain) == n // world
    assert len(_epoch(repeated)) == n // world


@pytest.mark.parametrize("world", [3, 4, 8])
def test_copies_of_an_image_land_on_different_ranks_each_with_its_own_key(world):
    n = 1000
    shards = [_epoch(train_sampler(range(n), REPEAT, seed=0, world_size=world, rank=r), 5) for r in range(world)]
    for shard in shards:
        assert max(Counter(_indices(shard)).values()) == 1  # never two copies on one rank
    seen = Counter(i for shard in shards for i in _indices(shard))
    assert max(seen.values()) == 3  # up to 3 copies, each on its own rank
    assert sum(seen.values()) == sum(len(s) for s in shards)
    keys = [key for shard in shards for key in shard]
    assert len(set(keys)) == len(keys)  # so each copy draws its own augmentation
    assert {epoch for _, epoch, _ in keys} == {5} and {copy for _, _, copy in keys} == {0, 1, 2}


def test_one_process_gets_the_copies_back_to_back():
    order = _epoch(train_sampler(range(100), REPEAT, seed=0, world_size=1, rank=0))
    assert len(order) == 100
    assert order[0][0] == order[1][0] == order[2][0] and order[3][0] == order[4][0] == order[5][0]
    assert [copy for _, _, copy in order[:6]] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("repeats", [0, REPEAT])
def test_the_order_is_composers_or_timms_own(repeats):
    sampler = train_sampler(range(500), repeats, seed=7, world_size=4, rank=1)
    if repeats:
        reference = RepeatAugSampler(range(500), num_replicas=4, rank=1, shuffle=True, num_repeats=repeats)
    else:
        reference = dist.get_sampler(range(500), shuffle=True, drop_last=True, num_replicas=4, rank=1, seed=7)
    for epoch in (0, 3):
        assert _indices(_epoch(sampler, epoch)) == _epoch(reference, epoch)


@pytest.mark.parametrize("repeats", [0, REPEAT])
def test_a_pass_can_start_mid_epoch_and_the_next_starts_at_the_beginning(repeats):
    sampler = train_sampler(range(300), repeats, seed=0, world_size=2, rank=0)
    full = _epoch(sampler, 2)
    sampler.start_at(40)
    assert list(sampler) == full[40:]  # the same keys: same images, same epoch, same copies
    assert list(sampler) == full


def test_sampler_resume_starts_the_sampler_at_the_checkpoints_batch_only_with_dataset_resumption():
    sampler = train_sampler(range(500), REPEAT, seed=0, world_size=2, rank=1)
    loader = DataLoader(range(500), sampler=sampler, batch_size=10)
    full = _epoch(sampler, 3)
    for resumption, expected in (({}, full), ({"train": True}, full[70:])):
        state = SimpleNamespace(dataloader=loader, dataset_resumption=resumption,
                                timestamp=SimpleNamespace(epoch=3, batch_in_epoch=7))
        SamplerResume().fit_start(state, logger=None)
        assert list(sampler) == expected


def test_steps_per_epoch_follows_the_sampler():
    assert steps_per_epoch(1_281_167, 256, 0, world_size=1) == 5004  # ImageNet-1k, batch 256 (the notes' 5004)
    assert steps_per_epoch(1_281_167, 256, 0, world_size=8) == 625
    assert steps_per_epoch(1_281_167, 256, REPEAT, world_size=8) == 625
