"""Data loaders for the configured source and pipeline, sharded across ranks with Composer's distributed
sampler; the one place, with :mod:`rsb_composer.data.sources`, that reads the ``data:`` section."""

from __future__ import annotations

import dataclasses
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
from rsb_composer.data.augmentations import check_augmentations
from rsb_composer.data.batching import check_batching, resolve_batching
from rsb_composer.data.datasets import ImageFolderSplit
from rsb_composer.data.normalization import ChannelsLastCollate, DeviceNormalize
from rsb_composer.data.pipelines import PIPELINES, Pipeline
from rsb_composer.data.samplers import TrainSampler, eval_sampler, train_sampler
from rsb_composer.data.sources import SOURCES
from rsb_composer.data.split_dirs import folder_labels
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
    check_batching(cfg)
    check(cfg.num_workers >= 0, "data.num_workers", cfg.num_workers, "must be 0 or more")
    check(cfg.prefetch_factor >= 1, "data.prefetch_factor", cfg.prefetch_factor, "must be at least 1")
    check(0 <= cfg.max_bad_fraction <= 1, "data.max_bad_fraction", cfg.max_bad_fraction, "must be in [0, 1]")
    check(cfg.repeated_augmentation >= 0, "data.repeated_augmentation", cfg.repeated_augmentation, "must be >= 0")
    check_augmentations(cfg)
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
    to the header of every object it examines (torch, Composer and the rest hold hundreds of thousands), so the
    first one in a worker (its timing depends on the parent's allocation counts) made those shared pages private
    in each worker at once (measured in docs/benchmarks.md). Frozen objects are never examined; objects the worker
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


def _per_device(cfg: DataConfig) -> DataConfig:
    if cfg.batch_size is None or cfg.global_batch_size is not None or cfg.eval_batch_size is None:
        cfg, _ = resolve_batching(cfg, dist.get_world_size())
    return cfg


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
    """Train and val loaders for this rank; unreadable train images are recorded in ``bad_log``.

    ``cfg`` as :func:`~rsb_composer.data.batching.resolve_batching` gives it (per-device batch sizes); a recipe
    with a global batch is resolved here for the launched world size.
    """
    cfg = _per_device(cfg)
    source, pipeline = SOURCES.pick(cfg.source), PIPELINES.pick(cfg.pipeline)
    classes = _classes(cfg, num_classes)
    train_transform = pipeline.train_transform(cfg)
    train_set = source.split(cfg, "train", classes, train_transform, pipeline, seed, bad_log)
    val_set = _eval_split(cfg, classes, pipeline, seed)
    train = _loader(train_set, cfg, cfg.batch_size, train=True, seed=seed)
    val = _loader(val_set, cfg, cfg.eval_batch_size, train=False, seed=seed)
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
            f"the per-device batch of {cfg.batch_size} (data.batch_size, or data.global_batch_size / world size) "
            f"is larger than this rank's share of the train split ({len(train_set)} images over "
            f"{dist.get_world_size()} ranks); lower it"
        )
    return Loaders(train=train, eval=val, classes=classes, batch_transform=_batch_transform(cfg, channels_last))


@dataclass
class EvalSplit:
    """The images one evaluation reads (the recipe's val split, or another folder labelled with its classes),
    listed once and read at any test resolution."""

    dataset: Dataset
    classes: list[str]
    name: str  # "val", or the folder given
    cfg: DataConfig
    seed: int
    channels_last: bool
    notice: str | None = None  # how the folder's classes were mapped, when it is worth saying

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_paths(self) -> list[str] | None:
        """Each image's file path, in the dataset's order; None for sources without files (streaming)."""
        samples = getattr(self.dataset, "samples", None)
        return [path for path, _ in samples] if samples is not None else None

    def loader(self, resolution: int) -> DataSpec | DataLoader:
        """The split at ``resolution`` (resized to ``resolution / crop_pct``, centre-cropped), for the trainer."""
        if not SOURCES.pick(self.cfg.source).decoded_images and resolution != self.cfg.eval_resolution:
            raise ConfigError(f"data.source={self.cfg.source}: its images are random tensors of one size "
                              f"(data.eval_resolution={self.cfg.eval_resolution}); test resolutions need image files")
        transform = PIPELINES.pick(self.cfg.pipeline).eval_transform(resolution, self.cfg.crop_pct,
                                                                     self.cfg.interpolation)
        # The dataset is listed once (a second streaming dataset on the same cache would be refused); each
        # loader's workers start with the transform set here, and are not kept between resolutions.
        self.dataset.transform = transform
        cfg = dataclasses.replace(self.cfg, persistent_workers=False)
        loader = _loader(self.dataset, cfg, cfg.eval_batch_size, train=False, seed=self.seed)
        batch_transform = _batch_transform(cfg, self.channels_last)
        return DataSpec(loader, batch_transforms=batch_transform) if batch_transform else loader


def build_eval_split(cfg: DataConfig, seed: int, num_classes: int | None = None, channels_last: bool = False,
                     split_dir: str | Path | None = None) -> EvalSplit:
    """The val split, or the images of ``split_dir`` labelled with the training classes (by name, or by class
    index for folders named ``0`` ... ``N-1``, see :mod:`rsb_composer.data.split_dirs`). No train image is listed:
    the class names come from the train split's folder names."""
    cfg = _per_device(cfg)
    pipeline = PIPELINES.pick(cfg.pipeline)
    classes = _classes(cfg, num_classes)
    if split_dir is None:
        return EvalSplit(_eval_split(cfg, classes, pipeline, seed), classes, "val", cfg, seed, channels_last)
    split_dir = Path(split_dir)
    labels, notice = folder_labels(split_dir, classes)
    dataset = ImageFolderSplit(split_dir, classes, allow_empty=True, loader=pipeline.load_file,
                               use_index=cfg.index_cache, class_to_idx=labels)
    if not len(dataset):
        raise ConfigError(f"--split-dir {split_dir}: its class folders hold no images")
    # Decoded files, whatever the recipe's source: the fast pipeline's uint8 batches are normalised on the device.
    return EvalSplit(dataset, classes, str(split_dir), dataclasses.replace(cfg, source="imagefolder"), seed,
                     channels_last, notice)


def build_eval_loader(cfg: DataConfig, seed: int, num_classes: int | None = None,
                      channels_last: bool = False) -> Loaders:
    """The val loader alone, for evaluating a checkpoint: the class names come from the train split's folder
    names, and no train image is listed or read."""
    cfg = _per_device(cfg)
    pipeline = PIPELINES.pick(cfg.pipeline)
    classes = _classes(cfg, num_classes)
    val = _loader(_eval_split(cfg, classes, pipeline, seed), cfg, cfg.eval_batch_size, train=False, seed=seed)
    return Loaders(train=None, eval=val, classes=classes, batch_transform=_batch_transform(cfg, channels_last))
