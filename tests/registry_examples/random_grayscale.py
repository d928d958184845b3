"""An augmentation: with probability p, a train image turns grey (``data.augmentations.random_grayscale: {}``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from rsb_composer.config import DataConfig, check
from rsb_composer.data.augmentations.registry import AUGMENTATIONS, Augmentation

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, PIL's convert("L")


@dataclass
class GrayscaleOptions:
    p: float = 0.1


class RandomGrayscale:
    takes_arrays = True  # (H, W, 3) uint8 arrays in and out on the fast pipeline

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if random.random() >= self.p:  # Python's random: reseeded per sample, so a resume draws the same
            return image
        grey = np.rint(image @ LUMA).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)


def build_grayscale(options: GrayscaleOptions, data: DataConfig) -> RandomGrayscale:
    return RandomGrayscale(options.p)


def check_grayscale(options: GrayscaleOptions, data: DataConfig) -> None:
    check(0.0 <= options.p <= 1.0, "data.augmentations.random_grayscale.p", options.p, "must be in [0, 1]")


AUGMENTATIONS.add(
    "random_grayscale", Augmentation(GrayscaleOptions, build_grayscale),
    doc="Random grayscale (data.augmentations.random_grayscale.p, default 0.1): with probability p a train image "
        "becomes its luma in all three channels, after the crop, flip and RandAugment.",
    check=check_grayscale,
)
