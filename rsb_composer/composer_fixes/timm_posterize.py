"""RandAugment's posterize with 0 bits on Pillow >= 13 (timm 1.0.x).

timm's ``PosterizeIncreasing`` (the recipes' ``rand-m7-mstd0.5-inc1``) keeps ``4 - int(magnitude / 10 * 4)`` bits,
and the magnitude noise (mstd 0.5) reaches 10, so it asks ``ImageOps.posterize`` for 0 bits. Pillow up to 12.3
returned a black image (every bit masked off, what the TensorFlow original does); Pillow 13 raises "bits must be
between or equal to 1 and 8", so a sample's augmentation fails at random. :func:`posterize` keeps the earlier result
for 0 bits and calls timm's own op otherwise (Composer 0.32.1 pins Pillow < 12; the "Keeping your PyTorch" install
lifts that). :func:`apply` is idempotent; the data pipelines call it (through
``rsb_composer.composer_fixes.apply_timm``) before they build a timm transform, and their worker processes unpickle
the patched function by name, so spawned workers get it too.
"""

from __future__ import annotations

from typing import Any

from PIL import Image


def posterize(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's posterize, with Pillow 12's answer for 0 bits (an image of zeros, in the same mode and size)."""
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    from timm.data import auto_augment

    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def apply() -> None:
    from timm.data import auto_augment

    for name, op in auto_augment.NAME_TO_OP.items():
        if op is auto_augment.posterize:
            auto_augment.NAME_TO_OP[name] = posterize
