"""Data loaders for the configured source, sharded across ranks with Composer's distributed sampler."""

from __future__ import annotations

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

from rsb_composer.config import Config, ConfigError, DataConfig
from rsb_composer.data.datasets import ImageFolderSplit, SyntheticImages, list_classes
from rsb_composer.data.decode import bytes_decoder, file_loader
from rsb_composer.data.normalization import ChannelsLastCollate, DeviceNormalize
from rsb_composer.data.samplers import eval_sampler, train_sampler
from rsb_composer.data.toy import ensure_toy_dataset
from rsb_composer.data.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    train: DataLoader
    eval: DataLoader
    num_classes: int
    # Applied by the trainer to every batch before the algorithms see it (the fast pipeline's normalisation).
    batch_transform: Callable[[Any], Any] | None = None

    def spec(self, loader: DataLoader) -> DataSpec | DataLoader:
        """``loader`` as the trainer should get it: in a DataSpec carrying the batch transform, if any."""
        return DataSpec(loader, batch_transforms=self.batch_transform) if self.batch_transform else loader


def build_datasets(cfg: DataConfig, seed: int, bad_log: Path | None = None,
                   num_classes: int | None = None) -> tuple[Dataset, Dataset, int]:
    """(train, val, num_classes) for ``data.source``; unreadable images are recorded in ``bad_log``."""
    if cfg.source == "streaming":
        from rsb_composer.data.streaming import StreamingImages, local_classes

        classes = local_classes(cfg.remote, cfg.local)
        train = StreamingImages(cfg.remote, cfg.local, "train", shuffle=True, batch_size=cfg.batch_size,
                                transform=train_transform(cfg), seed=seed, decode=bytes_decoder(cfg.pipeline))
        val = StreamingImages(cfg.remote, cfg.local, "val", shuffle=False, batch_size=cfg.eval_batch_size or
                              cfg.batch_size, transform=eval_transform(cfg), seed=seed,
                              decode=bytes_decoder(cfg.pipeline))
        return train, val, num_classes or len(classes or [])
    if cfg.source == "synthetic":
        s = cfg.synthetic
        return (SyntheticImages(s.train_samples, s.num_classes, cfg.train_resolution, seed),
                SyntheticImages(s.val_samples, s.num_classes, cfg.eval_resolution, seed + 1),
                s.num_classes)
    root = ensure_toy_dataset(cfg.toy, cfg.path) if cfg.source == "toy" else Path(cfg.path)
    classes = list_classes(root / "train")
    try:
        loader = file_loader(cfg.pipeline)
        train = ImageFolderSplit(root / "train", classes, transform=train_transform(cfg), bad_log=bad_log,
                                 loader=loader, use_index=cfg.index_cache)
        # A val split may lack some of train's classes (a subset for quick checks); train may not.
        # Unreadable val images are skipped and logged too, but not counted against the train limit.
        val = ImageFolderSplit(root / "val", classes, transform=eval_transform(cfg), allow_empty=True,
                               loader=loader, use_index=cfg.index_cache)
    except FileNotFoundError as err:  # torchvision: a class folder without a single image file
        raise ConfigError(f"data.path={str(root)!r}: {str(err).splitlines()[0].strip()}") from None
    return train, val, len(classes)


def shard_digest(sampler: torch.utils.data.Sampler, epoch: int = 0) -> str:
    """A short hash of the sample order a rank reads in ``epoch``: equal on two ranks means a sharding bug."""
    sampler.set_epoch(epoch)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    return hashlib.sha1(order.tobytes()).hexdigest()[:12]


def _loader(dataset: Dataset, cfg: DataConfig, batch_size: int, train: bool, seed: int) -> DataLoader:
    # Streaming datasets split the samples over ranks and workers (and shuffle) themselves.
    if cfg.source == "streaming":
        sampler = None
    else:
        sampler = train_sampler(dataset, cfg, seed) if train else eval_sampler(dataset)
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
        collate_fn=ChannelsLastCollate() if uint8_batches(cfg) else None,
    )


def uint8_batches(cfg: DataConfig) -> bool:
    """The fast pipeline's images stay uint8 until the device; the reference pipeline and synthetic data come
    normalised already."""
    return cfg.pipeline == "fast" and cfg.source != "synthetic"


def batch_transform(config: Config) -> Callable[[Any], Any] | None:
    """The normalisation of uint8 batches on the training device, if the loader gives uint8 batches."""
    if not uint8_batches(config.data):
        return None
    from rsb_composer.devices import resolve_device

    return DeviceNormalize(resolve_device(), channels_last=config.algorithms.get("channels_last") is not None)


def build_loaders(config: Config, bad_log: Path | None = None) -> Loaders:
    cfg = config.data
    train_set, val_set, num_classes = build_datasets(cfg, config.seed, bad_log, config.model.num_classes)
    train = _loader(train_set, cfg, cfg.batch_size, train=True, seed=config.seed)
    val = _loader(val_set, cfg, config.eval_batch_size, train=False, seed=config.seed)
    if cfg.source == "streaming":  # an IterableDataset: its len() is already this rank's share; size is the total
        shares = (len(train_set), train_set.size, "chosen by streaming", len(val_set), val_set.size)
    else:
        shares = (len(train.sampler), len(train_set), shard_digest(train.sampler), len(val.sampler), len(val_set))
    log.info(
        "data: %s, %d classes; rank %d of %d reads %d of %d train images per epoch (epoch-1 order %s), "
        "%d of %d val images", cfg.source, num_classes, dist.get_global_rank(), dist.get_world_size(), *shares,
    )
    if len(train) == 0:
        raise ConfigError(
            f"data.batch_size={cfg.batch_size}: larger than this rank's share of the train split "
            f"({len(train_set)} images over {dist.get_world_size()} ranks); lower it"
        )
    return Loaders(train=train, eval=val, num_classes=num_classes, batch_transform=batch_transform(config))
