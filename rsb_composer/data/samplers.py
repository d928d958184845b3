"""Train/eval samplers: each rank's order from Composer's distributed sampler or timm's repeated-augmentation
sampler, handed to the train dataset as per-sample keys, startable mid-epoch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sized

from composer.utils import dist
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DistributedSampler, Sampler

from rsb_composer.data.sample_rng import SampleKey


class TrainSampler(DistributedSampler):
    """This rank's train order as keys ``(index, epoch, copy)`` (:mod:`rsb_composer.data.sample_rng`): the epoch
    travels with each key to the workers (persistent workers never see ``set_epoch``), and ``copy`` numbers the
    repeated-augmentation copies of an image, each with its own random stream.

    ``start_at(position)`` makes the next pass over the epoch begin at that position of this rank's order, without
    reading anything before it: a mid-epoch resume (callbacks.sampler_resume) costs the same early or late in the
    epoch. The pass after it starts at the beginning again.

    The order itself is ``order``'s, Composer's DistributedSampler or timm's RepeatAugSampler, unchanged. This class
    is a DistributedSampler because Composer requires one on more than one rank, and calls its ``set_epoch`` at
    every epoch (it would not call timm's); it does not use DistributedSampler's own state.
    """

    def __init__(self, order: DistributedSampler | RepeatAugSampler):
        self.order = order
        self.dataset = order.dataset
        self.num_replicas = order.num_replicas
        self.rank = order.rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def start_at(self, position: int) -> None:
        self.start = position

    def __len__(self) -> int:
        return len(self.order)

    def copy_at(self, position: int) -> int:
        """Which copy of its image the sample at ``position`` of this rank's order is.

        timm's RepeatAugSampler lists each image ``num_repeats`` times in a row (n entries in all), hands entry
        ``rank + k * num_replicas`` (wrapping past n) to position k of this rank: its copy number is its place in
        the run of repeats, plus ``num_repeats`` for every wrap, so no two entries of an epoch share a key.
        """
        if not isinstance(self.order, RepeatAugSampler):
            return 0  # Composer's sampler drops the tail (drop_last): every image at most once per epoch
        repeats = int(self.order.num_repeats)
        entry = self.rank + position * self.num_replicas
        return entry % repeats + repeats * (entry // (len(self.dataset) * repeats))

    def __iter__(self) -> Iterator[SampleKey]:
        start, self.start = self.start, 0
        epoch = self.epoch
        for position, index in enumerate(itertools.islice(iter(self.order), start, None), start):
            yield index, epoch, self.copy_at(position)


def train_sampler(dataset: Sized, repeated_augmentation: int, seed: int, world_size: int | None = None,
                  rank: int | None = None) -> TrainSampler:
    """Each rank's share of the train split.

    With ``repeated_augmentation`` R > 1, timm's RepeatAugSampler (DeiT's, used by the paper): every image is
    repeated R times and consecutive copies go to different ranks, so each rank sees a differently augmented
    copy; an epoch keeps the length of a plain epoch (the copies replace other images). Its order depends on
    the epoch only (timm seeds it with the epoch number).
    """
    world_size = dist.get_world_size() if world_size is None else world_size
    rank = dist.get_global_rank() if rank is None else rank
    if repeated_augmentation > 1:
        return TrainSampler(RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                             num_repeats=repeated_augmentation))
    return TrainSampler(dist.get_sampler(dataset, shuffle=True, drop_last=True, num_replicas=world_size, rank=rank,
                                         seed=seed))


def eval_sampler(dataset: Sized) -> Sampler:
    return dist.get_sampler(dataset, shuffle=False, drop_last=False)


def steps_per_epoch(num_images: int, batch_size: int, repeated_augmentation: int, world_size: int) -> int:
    """Optimizer steps in one epoch for ``num_images`` train images, without building a dataset."""
    sampler = train_sampler(range(num_images), repeated_augmentation, seed=0, world_size=world_size, rank=0)
    return len(sampler) // batch_size
