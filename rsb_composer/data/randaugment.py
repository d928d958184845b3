"""timm's RandAugment (the paper's), built from its config string, and the fast pipeline's version of it.

timm samples the ops, their probabilities and magnitudes; the fast version (:class:`ArrayRandAugment`) keeps
timm's ops and draws and swaps only the functions that then change the pixels (each op's ``aug_fn``) for the
array versions in :mod:`rsb_composer.data.array_ops`, so the augmentation keeps its distribution and the fast
pipeline passes arrays from step to step without PIL round trips. An op without an array version (timm's
``Desaturate`` and ``GaussianBlur`` from its "3a" sets) runs timm's PIL function on a PIL copy.
tests/test_fast_pipeline.py compares each op with timm's; docs/benchmarks.md has what each costs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from rsb_composer import composer_fixes
from rsb_composer.config import ConfigError
from rsb_composer.data.array_ops import ARRAY_OPS
from rsb_composer.data.normalization import IMAGENET_MEAN

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment


def randaugment_hparams(resolution: int, interpolation: str) -> dict[str, Any]:
    """The hyper-parameters timm's create_transform gives RandAugment (translate 45% of the image, the ImageNet
    mean as fill colour, the train interpolation): the one place they are made, for training and for checks."""
    from timm.data.transforms import str_to_pil_interp

    return {
        "translate_const": int(resolution * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
        "interpolation": str_to_pil_interp(interpolation),
    }


def randaugment(spec: str, resolution: int, interpolation: str) -> RandAugment:
    """timm's RandAugment for the config string ``spec`` (``data.auto_augment``), as create_transform builds it."""
    from timm.data.auto_augment import rand_augment_transform

    composer_fixes.apply_timm()
    return rand_augment_transform(spec, randaugment_hparams(resolution, interpolation))


def check_auto_augment(spec: str, resolution: int, interpolation: str) -> None:
    """Refuse a ``data.auto_augment`` string timm cannot build, in one line."""
    if not spec.startswith("rand"):
        raise ConfigError(f"data.auto_augment={spec!r}: expected a timm RandAugment string such as "
                          "rand-m7-mstd0.5-inc1")
    try:
        randaugment(spec, resolution, interpolation)
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"data.auto_augment={spec!r}: not a valid timm RandAugment string ({err})") from None


class ArrayRandAugment:
    """timm's RandAugment on (H, W, 3) uint8 arrays: timm's ops, probabilities and magnitudes, array functions.

    timm picks the ops with ``np.random.choice``, slow for one small draw; uniform picks with replacement, what
    timm does without weights, are drawn with Python's ``random.choices`` instead, weighted ones as timm does.
    """

    takes_arrays = True  # see transforms.ArrayCompose

    def __init__(self, spec: str, resolution: int, interpolation: str):
        self.timm = randaugment(spec, resolution, interpolation)
        for op in self.timm.ops:
            op.aug_fn = ARRAY_OPS.get(op.name) or ViaPIL(op.aug_fn)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        timm = self.timm
        if timm.choice_weights is None:
            ops = random.choices(timm.ops, k=timm.num_layers)
        else:
            ops = np.random.choice(timm.ops, timm.num_layers, replace=False, p=timm.choice_weights)
        for op in ops:
            array = op(array)
        return array

    def __repr__(self) -> str:
        return f"Array{self.timm!r}"


class ViaPIL:
    """A timm op function on a PIL copy of the array. A class, not a closure, so the transform pickles into
    DataLoader workers started by spawn or forkserver."""

    def __init__(self, aug_fn: Callable[..., Image.Image]):
        self.aug_fn = aug_fn

    def __call__(self, array: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.array(self.aug_fn(Image.fromarray(array), *args, **kwargs))
