"""Train/eval samplers: Composer's distributed sampler, or timm's repeated-augmentation sampler."""

from __future__ import annotations

from collections.abc import Sized

from composer.utils import dist
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import Sampler


def train_sampler(dataset: Sized, repeated_augmentation: int, seed: int, world_size: int | None = None,
                  rank: int | None = None) -> Sampler:
    """Each rank's share of the train split.

    With ``repeated_augmentation`` R > 1, timm's RepeatAugSampler (DeiT's, used by the paper): every image is
    repeated R times and consecutive copies go to different ranks, so each rank sees a differently augmented
    copy; an epoch keeps the length of a plain epoch (the copies replace other images). Its order depends on
    the epoch only (timm seeds it with the epoch number); callbacks.sampler_epoch advances it.
    """
    world_size = dist.get_world_size() if world_size is None else world_size
    rank = dist.get_global_rank() if rank is None else rank
    if repeated_augmentation > 1:
        return RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                num_repeats=repeated_augmentation)
    return dist.get_sampler(dataset, shuffle=True, drop_last=True, num_replicas=world_size, rank=rank, seed=seed)


def eval_sampler(dataset: Sized) -> Sampler:
    return dist.get_sampler(dataset, shuffle=False, drop_last=False)


def steps_per_epoch(num_images: int, batch_size: int, repeated_augmentation: int, world_size: int) -> int:
    """Optimizer steps in one epoch for ``num_images`` train images, without building a dataset."""
    sampler = train_sampler(range(num_images), repeated_augmentation, seed=0, world_size=world_size, rank=0)
    return len(sampler) // batch_size
