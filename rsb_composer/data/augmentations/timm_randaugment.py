"""RandAugment as timm (the paper's code) builds it from ``data.auto_augment``, e.g. ``rand-m7-mstd0.5-inc1``;
the fast pipeline runs it on arrays (:class:`rsb_composer.data.randaugment.ArrayRandAugment`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsb_composer.config import DataConfig
from rsb_composer.data.augmentations.registry import AUGMENTATIONS, Augmentation
from rsb_composer.data.randaugment import ArrayRandAugment, check_auto_augment, randaugment

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment


def _check(spec: str, data: DataConfig) -> None:
    check_auto_augment(spec, data.train_resolution, data.interpolation)


def _fast(spec: str, data: DataConfig) -> ArrayRandAugment:
    return ArrayRandAugment(spec, data.train_resolution, data.interpolation)


def _reference(spec: str, data: DataConfig) -> RandAugment:
    return randaugment(spec, data.train_resolution, data.interpolation)


AUGMENTATIONS.add(
    "randaugment", Augmentation(str, _fast, _reference, data_key="auto_augment"),
    doc="RandAugment, timm's (the paper's): data.auto_augment is timm's config string (rand-m7-mstd0.5-inc1 for A1 "
        "and A2, rand-m6-mstd0.5-inc1 for A3), run after the crop and flip with timm's ops, probabilities and "
        "magnitudes; the fast pipeline's ops work on arrays (docs/benchmarks.md has what each costs).",
    check=_check,
)
