"""The data sources ``data.source`` picks from, each with the checks of its keys, its class names and how it
builds one split.

- ``imagefolder``: ImageNet's layout at ``data.path`` (``train/<class>/*``, ``val/<class>/*``).
- ``toy``: the generated toy set (:mod:`rsb_composer.data.toy`), read as an ImageFolder.
- ``synthetic``: random normalised tensors, for speed tests.
- ``streaming``: MosaicML MDS shards at ``data.remote`` through the cache ``data.local``; the dataset splits the
  samples over ranks and workers itself.

The class list always comes from the train split's folder names (or the shards' ``classes.txt``), never from a
listing of the train images, so an evaluation needs no train images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from rsb_composer.config import Choices, ConfigError, DataConfig, check
from rsb_composer.data.datasets import ImageFolderSplit, SyntheticImages, list_classes
from rsb_composer.data.pipelines import Pipeline


@dataclass(frozen=True)
class Source:
    # (data section, model.num_classes, check_paths): refuse what cannot work, before any data work
    check: Callable[[DataConfig, int | None, bool], None]
    # (data section, model.num_classes) -> the class names, in label order
    classes: Callable[[DataConfig, int | None], list[str]]
    # (data section, split, class names, transform, pipeline, run seed, bad-image log) -> the split's dataset
    split: Callable[[DataConfig, str, list[str], Callable, Pipeline, int, Path | None], Dataset]
    decoded_images: bool = True  # images go through the pipeline (Composer's RandAugment, AugMix can act)
    shards_itself: bool = False  # splits samples over ranks and workers itself: no sampler


# --- imagefolder and toy ---------------------------------------------------------------------------------------

def _check_imagefolder(cfg: DataConfig, num_classes: int | None, check_paths: bool) -> None:
    if not check_paths:
        return
    if cfg.path is None:
        raise ConfigError("data.path is not set: point it at an ImageNet-style folder with train/ and val/ "
                          "(e.g. data.path=/fsx/imagenet), or use data.source=toy")
    for split in ("train", "val"):
        folder = Path(cfg.path) / split
        check(folder.is_dir(), "data.path", cfg.path, f"no '{split}' folder at {folder}")
    train_classes = list_classes(Path(cfg.path) / "train")
    check(bool(train_classes), "data.path", cfg.path, "train/ holds no class folders")
    empty = [name for name in train_classes if not any(True for _ in os.scandir(Path(cfg.path) / "train" / name))]
    check(not empty, "data.path", cfg.path,
          f"{len(empty)} class folders in train/ are empty (first: {empty[0] if empty else ''})")
    extra = sorted(set(list_classes(Path(cfg.path) / "val")) - set(train_classes))
    check(not extra, "data.path", cfg.path,
          f"val/ has {len(extra)} classes that train/ lacks (first: {extra[0] if extra else ''})")


def _folder_root(cfg: DataConfig) -> Path:
    if cfg.source == "toy":
        from rsb_composer.data.toy import ensure_toy_dataset

        return ensure_toy_dataset(cfg.toy, cfg.path)
    return Path(cfg.path)


def _folder_classes(cfg: DataConfig, num_classes: int | None) -> list[str]:
    return list_classes(_folder_root(cfg) / "train")


def _folder_split(cfg: DataConfig, split: str, classes: list[str], transform: Callable, pipeline: Pipeline,
                  seed: int, bad_log: Path | None) -> Dataset:
    root = _folder_root(cfg)
    try:
        # A val split may lack some of train's classes (a subset for quick checks); train may not. Unreadable val
        # images are skipped and logged too, but not counted against the train limit (no bad_log). Only train
        # samples draw random numbers: each from its own stream, seeded by the run seed and the sample's key.
        train = split == "train"
        return ImageFolderSplit(root / split, classes, transform=transform, allow_empty=not train,
                                bad_log=bad_log if train else None, loader=pipeline.load_file,
                                use_index=cfg.index_cache, seed=seed if train else None)
    except FileNotFoundError as err:  # torchvision: a class folder without a single image file
        raise ConfigError(f"data.path={str(root)!r}: {str(err).splitlines()[0].strip()}") from None


def _check_toy(cfg: DataConfig, num_classes: int | None, check_paths: bool) -> None:
    from rsb_composer.data.toy import check_toy

    check_toy(cfg.toy)


# --- synthetic -------------------------------------------------------------------------------------------------

def _check_synthetic(cfg: DataConfig, num_classes: int | None, check_paths: bool) -> None:
    s = cfg.synthetic
    check(s.num_classes >= 2, "data.synthetic.num_classes", s.num_classes, "need at least 2 classes")
    check(s.train_samples >= 1, "data.synthetic.train_samples", s.train_samples, "must be at least 1")
    check(s.val_samples >= 1, "data.synthetic.val_samples", s.val_samples, "must be at least 1")


def _synthetic_classes(cfg: DataConfig, num_classes: int | None) -> list[str]:
    return [str(i) for i in range(cfg.synthetic.num_classes)]


def _synthetic_split(cfg: DataConfig, split: str, classes: list[str], transform: Callable, pipeline: Pipeline,
                     seed: int, bad_log: Path | None) -> Dataset:
    train = split == "train"
    return SyntheticImages(cfg.synthetic.train_samples if train else cfg.synthetic.val_samples, len(classes),
                           cfg.train_resolution if train else cfg.eval_resolution, seed=seed if train else seed + 1)


# --- streaming -------------------------------------------------------------------------------------------------

def _check_streaming(cfg: DataConfig, num_classes: int | None, check_paths: bool) -> None:
    from rsb_composer.data.streaming import local_classes

    if not (cfg.remote or cfg.local):
        raise ConfigError("data.source=streaming needs data.remote (s3://..., gs://... or a folder of MDS shards "
                          "from `rsb-composer convert-mds`) and/or data.local (the local cache)")
    if num_classes is None and local_classes(cfg.remote, cfg.local) is None:
        raise ConfigError("model.num_classes is not set and data.remote is not a local folder to read "
                          "classes.txt from; set model.num_classes (1000 for ImageNet)")
    if check_paths and cfg.remote and "://" not in cfg.remote:
        index = Path(cfg.remote) / "train" / "index.json"
        check(index.is_file(), "data.remote", cfg.remote, f"no MDS shards at {index.parent} (no index.json)")


def _streaming_classes(cfg: DataConfig, num_classes: int | None) -> list[str]:
    from rsb_composer.data.streaming import local_classes

    return local_classes(cfg.remote, cfg.local) or [str(i) for i in range(num_classes or 0)]


def _streaming_split(cfg: DataConfig, split: str, classes: list[str], transform: Callable, pipeline: Pipeline,
                     seed: int, bad_log: Path | None) -> Dataset:
    from rsb_composer.data.streaming import StreamingImages

    train = split == "train"
    return StreamingImages(cfg.remote, cfg.local, split, shuffle=train,
                           batch_size=cfg.batch_size if train else cfg.eval_batch_size,
                           transform=transform, seed=seed, decode=pipeline.decode_bytes,
                           augment_seed=seed if train else None)


def add_source(name: str, source: Source, doc: str) -> None:
    """Register ``source`` as ``data.source=NAME``; its check is the registry's check."""
    SOURCES.add(name, source, doc=doc, check=source.check)


SOURCES: Choices[Source] = Choices("data.source")
add_source("imagefolder", Source(_check_imagefolder, _folder_classes, _folder_split),
           "ImageNet's layout at data.path (train/<class>/*, val/<class>/*), read as an ImageFolder.")
add_source("toy", Source(_check_toy, _folder_classes, _folder_split),
           "The generated toy set (data.toy.*; generated once into data.path or a cache), read as an ImageFolder.")
add_source("synthetic", Source(_check_synthetic, _synthetic_classes, _synthetic_split, decoded_images=False),
           "Random normalised tensors (data.synthetic.*), for speed tests: no files, no decoding.")
add_source("streaming", Source(_check_streaming, _streaming_classes, _streaming_split, shards_itself=True),
           "MosaicML MDS shards at data.remote through the local cache data.local; the dataset splits the samples "
           "over ranks and workers itself.")
