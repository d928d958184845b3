"""timm's RandAugment (the paper's), built from its config string, optionally with faster geometric ops.

timm samples the ops, their probabilities and magnitudes; its geometric ops (rotate, shear, translate) then
warp the image with PIL's affine transform, which takes 2 to 3 ms at 224 px and bicubic interpolation, the
largest single cost of the augmentation. ``fast_geometry`` swaps only those functions for OpenCV's
``warpAffine`` with the same matrix, interpolation and fill, about 3x faster: timm still draws which ops run
and how strongly, so the augmentation keeps its distribution (tests/test_fast_pipeline.py compares both).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from rsb_composer.config import DataConfig
from rsb_composer.data.normalization import IMAGENET_MEAN

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment


def randaugment(cfg: DataConfig, fast_geometry: bool = False) -> RandAugment:
    """timm's RandAugment for ``data.auto_augment``, with the hyper-parameters timm's create_transform gives it."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.transforms import str_to_pil_interp


    hparams = {
        "translate_const": int(cfg.train_resolution * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
        "interpolation": str_to_pil_interp(cfg.interpolation),
    }
    transform = rand_augment_transform(cfg.auto_augment, hparams)
    if fast_geometry:
        for op in transform.ops:
            op.aug_fn = FAST_OPS.get(op.name, op.aug_fn)
    return transform


_cv2_module = None


def _cv2() -> Any:
    global _cv2_module
    if _cv2_module is None:
        import cv2

        # One thread: the pipeline runs in DataLoader workers, one per core already.
        cv2.setNumThreads(1)
        _cv2_module = cv2
    return _cv2_module


def _cv2_interpolation(resample: Any) -> int:
    cv2 = _cv2()
    if isinstance(resample, (list, tuple)):  # timm's "random" interpolation: one of them per call, as timm does
        resample = random.choice(resample)
    return {Image.Resampling.NEAREST: cv2.INTER_NEAREST, Image.Resampling.BILINEAR: cv2.INTER_LINEAR,
            Image.Resampling.BICUBIC: cv2.INTER_CUBIC}[Image.Resampling(resample)]


def warp_affine(img: Image.Image, matrix: tuple[float, ...], fillcolor: Any = None,
                resample: Any = Image.Resampling.BICUBIC) -> Image.Image:
    """PIL's ``img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor)`` done by OpenCV.

    PIL maps the centre of output pixel (x, y), at (x + 0.5, y + 0.5), through ``matrix`` to input coordinates
    and samples there; OpenCV puts pixel centres on integers, hence the half-pixel shifts.
    """
    cv2 = _cv2()
    a, b, c, d, e, f = matrix
    inverse_map = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]], dtype=np.float64)
    array = np.asarray(img)
    if fillcolor is None:
        fill: tuple[int, ...] = (0, 0, 0)
    elif isinstance(fillcolor, int):
        fill = (fillcolor,) * 3
    else:
        fill = tuple(fillcolor)
    out = cv2.warpAffine(array, inverse_map, (array.shape[1], array.shape[0]),
                         flags=_cv2_interpolation(resample) | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return Image.fromarray(out)


# Each takes timm's level argument and keyword arguments (fillcolor, resample) and builds the same matrix as
# timm's function of the same name (timm/data/auto_augment.py).
def shear_x(img: Image.Image, factor: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, factor, 0, 0, 1, 0), **kwargs)


def shear_y(img: Image.Image, factor: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, 0, 0, factor, 1, 0), **kwargs)


def translate_x_rel(img: Image.Image, pct: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, 0, pct * img.size[0], 0, 1, 0), **kwargs)


def translate_y_rel(img: Image.Image, pct: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), **kwargs)


def translate_x_abs(img: Image.Image, pixels: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, 0, pixels, 0, 1, 0), **kwargs)


def translate_y_abs(img: Image.Image, pixels: float, **kwargs: Any) -> Image.Image:
    return warp_affine(img, (1, 0, 0, 0, 1, pixels), **kwargs)


def rotate(img: Image.Image, degrees: float, **kwargs: Any) -> Image.Image:
    """PIL's ``img.rotate(degrees)``: counter-clockwise about the image centre, same size."""
    w, h = img.size
    angle = -math.radians(degrees)
    a, b, d, e = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
    cx, cy = w / 2.0, h / 2.0
    return warp_affine(img, (a, b, cx - (a * cx + b * cy), d, e, cy - (d * cx + e * cy)), **kwargs)


FAST_OPS = {
    "Rotate": rotate,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x_abs,
    "TranslateY": translate_y_abs,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}
