"""Data loaders for the configured source and pipeline, sharded across ranks with Composer's distributed
sampler; the one place, with :mod:`rsb_composer.data.sources`, that reads the ``data:`` section."""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset

from rsb_composer.config import ConfigError, DataConfig, check, check_choice
from rsb_composer.data.normalization import ChannelsLastCollate, DeviceNormalize
from rsb_composer.data.pipelines import PIPELINES, Pipeline
from rsb_composer.data.randaugment import check_auto_augment
from rsb_composer.data.samplers import TrainSampler, eval_sampler, train_sampler
from rsb_composer.data.sources import SOURCES
from rsb_composer.data.transforms import INTERPOLATION

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    train: DataLoader | None  # None for an evaluation: no train images are listed
    eval: DataLoader
    classes: list[str]
    # Applied by the trainer to every batch before the algorithms see it (the fast pipeline's normalisation).
    batch_transform: Callable[[Any], Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def spec(self, loader: DataLoader) -> DataSpec | DataLoader:
        """``loader`` as the trainer should get it: in a DataSpec carrying the batch transform, if any."""
        return DataSpec(loader, batch_transforms=self.batch_transform) if self.batch_transform else loader


def check_data(cfg: DataConfig, num_classes: int | None, check_paths: bool = True) -> None:
    """The ``data:`` section, with its source's own checks (``check_paths``: the folders exist and hold data)."""
    source = SOURCES.pick(cfg.source)
    PIPELINES.pick(cfg.pipeline)
    check_choice("data.interpolation", cfg.interpolation, INTERPOLATION)
    for key in ("train_resolution", "eval_resolution"):
        check(getattr(cfg, key) >= 16, f"data.{key}", getattr(cfg, key), "must be at least 16 pixels")
    check(len(cfg.crop_scale) == 2 and 0.0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1.0, "data.crop_scale",
          cfg.crop_scale, "must be [min, max] with 0 < min <= max <= 1")
    check(0.0 < cfg.crop_pct <= 1.0, "data.crop_pct", cfg.crop_pct, "must be in (0, 1]")
    check(cfg.batch_size >= 1, "data.batch_size", cfg.batch_size, "must be at least 1")
    if cfg.eval_batch_size is not None:
        check(cfg.eval_batch_size >= 1, "data.eval_batch_size", cfg.eval_batch_size, "must be at least 1")
    check(cfg.num_workers >= 0, "data.num_workers", cfg.num_workers, "must be 0 or more")
    check(cfg.prefetch_factor >= 1, "data.prefetch_factor", cfg.prefetch_factor, "must be at least 1")
    check(0 <= cfg.max_bad_fraction <= 1, "data.max_bad_fraction", cfg.max_bad_fraction, "must be in [0, 1]")
    check(cfg.repeated_augmentation >= 0, "data.repeated_augmentation", cfg.repeated_augmentation, "must be >= 0")
    if cfg.auto_augment is not None:
        check_auto_augment(cfg.auto_augment, cfg.train_resolution, cfg.interpolation)
    source.check(cfg, num_classes, check_paths)


def decodes_images(cfg: DataConfig) -> bool:
    """Whether the source's images are decoded by the pipeline (image-editing algorithms can act on them)."""
    return SOURCES.pick(cfg.source).decoded_images


def shard_digest(sampler: TrainSampler, epoch: int = 0) -> str:
    """A short hash of the sample order a rank reads in ``epoch``: equal on two ranks means a sharding bug."""
    sampler.set_epoch(epoch)
    order = np.fromiter((index for index, _, _ in sampler), dtype=np.int64)
    sampler.set_epoch(0)
    return hashlib.sha1(order.tobytes()).hexdigest()[:12]


def freeze_inherited_objects(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: exclude every object inherited from the training process from the
    worker's garbage collections.

    A worker is a fork that shares the training process's memory until it writes to it. A full collection writes
    to the header of every object it examines, half a million objects for torch, Composer and the rest, so the
    first one in a worker (its timing depends on the parent's allocation counts) made 135 MiB of shared pages
    private in each worker at once (docs/benchmarks.md). Frozen objects are never examined; objects the worker
    makes itself are collected as usual.
    """
    gc.freeze()


def _loader(dataset: Dataset, cfg: DataConfig, batch_size: int, train: bool, seed: int) -> DataLoader:
    if SOURCES.pick(cfg.source).shards_itself:
        sampler = None
    else:
        sampler = train_sampler(dataset, cfg.repeated_augmentation, seed) if train else eval_sampler(dataset)
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=cfg.persistent_workers and workers > 0,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        drop_last=train,
        collate_fn=ChannelsLastCollate() if _uint8_batches(cfg) else None,
        # Each new iterator draws its workers' base seed from this generator, not from torch's global one: the
        # samples draw from their own streams anyway (sample_rng), and the trainer's random state (mixup,
        # stochastic depth) then does not depend on when iterators are made, which differs after a resume.
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=freeze_inherited_objects,
    )


def _uint8_batches(cfg: DataConfig) -> bool:
    """The fast pipeline's images stay uint8 until the device; the reference pipeline and synthetic data come
    normalised already."""
    return PIPELINES.pick(cfg.pipeline).uint8_batches and SOURCES.pick(cfg.source).decoded_images


def _batch_transform(cfg: DataConfig, channels_last: bool) -> Callable[[Any], Any] | None:
    """The normalisation of uint8 batches on the training device, if the loader gives uint8 batches."""
    if not _uint8_batches(cfg):
        return None
    from rsb_composer.devices import resolve_device

    return DeviceNormalize(resolve_device(), channels_last=channels_last)


def _classes(cfg: DataConfig, num_classes: int | None) -> list[str]:
    classes = SOURCES.pick(cfg.source).classes(cfg, num_classes)
    if num_classes is not None and num_classes < len(classes):
        raise ConfigError(f"model.num_classes={num_classes}: the data has {len(classes)} classes")
    return classes


def _eval_split(cfg: DataConfig, classes: list[str], pipeline: Pipeline, seed: int) -> Dataset:
    transform = pipeline.eval_transform(cfg.eval_resolution, cfg.crop_pct, cfg.interpolation)
    return SOURCES.pick(cfg.source).split(cfg, "val", classes, transform, pipeline, seed, None)


def build_loaders(cfg: DataConfig, seed: int, num_classes: int | None = None, channels_last: bool = False,
                  bad_log: Path | None = None) -> Loaders:
    """Train and val loaders for this rank; unreadable train images are recorded in ``bad_log``."""
    source, pipeline = SOURCES.pick(cfg.source), PIPELINES.pick(cfg.pipeline)
    classes = _classes(cfg, num_classes)
    train_transform = pipeline.train_transform(cfg.train_resolution, cfg.crop_scale, cfg.interpolation,
                                               cfg.auto_augment)
    train_set = source.split(cfg, "train", classes, train_transform, pipeline, seed, bad_log)
    val_set = _eval_split(cfg, classes, pipeline, seed)
    train = _loader(train_set, cfg, cfg.batch_size, train=True, seed=seed)
    val = _loader(val_set, cfg, cfg.eval_batch_size or cfg.batch_size, train=False, seed=seed)
    if source.shards_itself:  # an IterableDataset: its len() is already this rank's share; size is the total
        shares = (len(train_set), train_set.size, "chosen by streaming", len(val_set), val_set.size)
    else:
        shares = (len(train.sampler), len(train_set), shard_digest(train.sampler), len(val.sampler), len(val_set))
    log.info(
        "data: %s, %d classes; rank %d of %d reads %d of %d train images per epoch (epoch-1 order %s), "
        "%d of %d val images", cfg.source, len(classes), dist.get_global_rank(), dist.get_world_size(), *shares,
    )
    if len(train) == 0:
        raise ConfigError(
            f"data.batch_size={cfg.batch_size}: larger than this rank's share of the train split "
            f"({len(train_set)} images over {dist.get_world_size()} ranks); lower it"
        )
    return Loaders(train=train, eval=val, classes=classes, batch_transform=_batch_transform(cfg, channels_last))


def build_eval_loader(cfg: DataConfig, seed: int, num_classes: int | None = None,
                      channels_last: bool = False) -> Loaders:
    """The val loader alone, for evaluating a checkpoint: the class names come from the train split's folder
    names, and no train image is listed or read."""
    pipeline = PIPELINES.pick(cfg.pipeline)
    classes = _classes(cfg, num_classes)
    val = _loader(_eval_split(cfg, classes, pipeline, seed), cfg, cfg.eval_batch_size or cfg.batch_size,
                  train=False, seed=seed)
    return Loaders(train=None, eval=val, classes=classes, batch_transform=_batch_transform(cfg, channels_last))
