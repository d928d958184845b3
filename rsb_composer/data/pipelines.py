"""The input pipelines ``data.pipeline`` picks from: how files are decoded, how train and eval images are
transformed, and whether batches leave the workers as uint8 (normalised on the device) or as floats.

``fast`` (the default): JPEGs decoded to RGB arrays by simplejpeg, timm's augmentations on arrays, uint8 batches
normalised on the training device (see :mod:`rsb_composer.data.transforms`). ``reference``: torchvision's
ImageFolder loading with timm's ``create_transform`` (PIL throughout), float batches normalised in the workers,
kept to compare against (``rsb-composer bench-data --reference``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rsb_composer.config import Choices
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


@dataclass(frozen=True)
class Pipeline:
    # (resolution, crop_scale, interpolation, auto_augment) -> the train transform of one decoded image
    train_transform: Callable[[int, Sequence[float], str, str | None], Callable]
    # (resolution, crop_pct, interpolation) -> the eval transform
    eval_transform: Callable[[int, float, str], Callable]
    load_file: Callable[[str], Any]  # what ImageFolder datasets read a file with
    decode_bytes: Callable[[bytes], Any]  # what the streaming dataset decodes stored JPEG bytes with
    uint8_batches: bool  # batches stay uint8 until DeviceNormalize on the training device


PIPELINES: Choices[Pipeline] = Choices("data.pipeline")
PIPELINES.add("fast", Pipeline(fast_train_transform, fast_eval_transform, load_rgb, decode_rgb,
                               uint8_batches=True))
PIPELINES.add("reference", Pipeline(reference_train_transform, reference_eval_transform, _pil_loader,
                                    decode_pil, uint8_batches=False))
