"""The input pipelines ``data.pipeline`` picks from: how files are decoded, how train and eval images are
transformed, and whether batches leave the workers as uint8 (normalised on the device) or as floats.

``fast`` (the default): JPEGs decoded to RGB arrays by simplejpeg, timm's augmentations on arrays, uint8 batches
normalised on the training device (see :mod:`rsb_composer.data.transforms`). ``reference``: torchvision's
ImageFolder loading with timm's ``create_transform`` (PIL throughout), float batches normalised in the workers,
kept to compare against (``rsb-composer bench-data --reference``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rsb_composer.config import Choices, DataConfig, nothing_to_check
from rsb_composer.data.augmentations import fast_steps, reference_steps
from rsb_composer.data.decode import decode_pil, decode_rgb, load_rgb
from rsb_composer.data.transforms import (
    fast_eval_transform,
    fast_train_transform,
    reference_eval_transform,
    reference_train_transform,
)


def _pil_loader(path: str) -> Any:
    from torchvision.datasets.folder import default_loader

    return default_loader(path)


def _fast_train(cfg: DataConfig) -> Callable:
    return fast_train_transform(cfg.train_resolution, cfg.crop_scale, cfg.interpolation, fast_steps(cfg))


def _reference_train(cfg: DataConfig) -> Callable:
    return reference_train_transform(cfg.train_resolution, cfg.crop_scale, cfg.interpolation, reference_steps(cfg))


@dataclass(frozen=True)
class Pipeline:
    # the data section -> the train transform of one decoded image: crop and flip, the augmentations switched on
    train_transform: Callable[[DataConfig], Callable]
    # (resolution, crop_pct, interpolation) -> the eval transform
    eval_transform: Callable[[int, float, str], Callable]
    load_file: Callable[[str], Any]  # what ImageFolder datasets read a file with
    decode_bytes: Callable[[bytes], Any]  # what the streaming dataset decodes stored JPEG bytes with
    uint8_batches: bool  # batches stay uint8 until DeviceNormalize on the training device


PIPELINES: Choices[Pipeline] = Choices("data.pipeline")
PIPELINES.add(
    "fast", Pipeline(_fast_train, fast_eval_transform, load_rgb, decode_rgb, uint8_batches=True),
    doc="JPEGs decoded to RGB arrays by simplejpeg, the reference's augmentations drawn from the same distributions "
        "on arrays, batches kept uint8 until they are normalised on the training device: the default, several "
        "times the reference's images per second per worker (docs/benchmarks.md).",
    check=nothing_to_check,  # the data section's own checks cover what it reads
)
PIPELINES.add(
    "reference", Pipeline(_reference_train, reference_eval_transform, _pil_loader, decode_pil, uint8_batches=False),
    doc="torchvision's ImageFolder loading and timm's create_transform, PIL throughout, float batches normalised in "
        "the workers: the paper's code path, kept to compare against (rsb-composer bench-data --reference).",
    check=nothing_to_check,
)
