"""timm's RandAugment (the paper's), built from its config string, optionally with faster ops.

timm samples the ops, their probabilities and magnitudes; ``fast_ops`` swaps only the functions that then
change the pixels (each op's ``aug_fn``), so the augmentation keeps its distribution:

- rotate, shear, translate: PIL's affine transform takes 2 to 3 ms at 224 px with bicubic interpolation, the
  largest single cost of the augmentation; OpenCV's ``warpAffine`` with the same matrix, interpolation and fill
  is about 3x faster, its pixels within resampling rounding of PIL's.
- brightness, contrast, sharpness: Pillow's ``ImageEnhance`` blends every pixel with a degenerate image (200,
  240 and 590 us at 160 px); brightness and contrast are one table lookup, and sharpness is a 3x3 filter in
  OpenCV, with Pillow's own arithmetic (float32, truncated; the filter's rounding and untouched border), so the
  result is identical to Pillow's, pixel for pixel, in a third to a half of the time.

tests/test_fast_pipeline.py compares each op with timm's.
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


def randaugment(cfg: DataConfig, fast_ops: bool = False) -> RandAugment:
    """timm's RandAugment for ``data.auto_augment``, with the hyper-parameters timm's create_transform gives it."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.transforms import str_to_pil_interp


    hparams = {
        "translate_const": int(cfg.train_resolution * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
        "interpolation": str_to_pil_interp(cfg.interpolation),
    }
    transform = rand_augment_transform(cfg.auto_augment, hparams)
    if fast_ops:
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


# --- brightness, contrast, sharpness: Pillow's results, computed faster ---------------------------------------
# Each mirrors the Pillow 11 ImageEnhance class timm calls. The other tone and colour ops (auto-contrast,
# equalize, invert, posterize, solarize, colour) were measured the same way and gain 0 to 25 us, or lose: the
# RGB <-> array conversions (35 us at 160 px) eat what a table lookup saves over ``Image.point``.

_VALUES = np.arange(256)
SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32)  # ImageFilter.SMOOTH, over 13


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow's ``Image.blend(degenerate, image, factor)``: float32 arithmetic, clipped, truncated (Blend.c)."""
    base = degenerate.astype(np.float32)
    out = base + np.float32(factor) * (image.astype(np.float32) - base)
    return np.clip(out, 0, 255).astype(np.uint8)


def _apply_table(img: Image.Image, table: np.ndarray) -> Image.Image:
    return Image.fromarray(_cv2().LUT(np.asarray(img), table))


def brightness(img: Image.Image, factor: float, **_: Any) -> Image.Image:
    """``ImageEnhance.Brightness``: a blend with black, so one table for every pixel."""
    return _apply_table(img, _blend(np.zeros(256, np.uint8), _VALUES, factor))


def contrast(img: Image.Image, factor: float, **_: Any) -> Image.Image:
    """``ImageEnhance.Contrast``: a blend with the mean grey level (ImageStat's mean of the L image, rounded)."""
    hist = img.convert("L").histogram()
    mean = int(float(np.dot(_VALUES, hist)) / sum(hist) + 0.5)
    return _apply_table(img, _blend(np.full(256, mean, np.uint8), _VALUES, factor))


def sharpness(img: Image.Image, factor: float, **_: Any) -> Image.Image:
    """``ImageEnhance.Sharpness``: a blend with ``ImageFilter.SMOOTH``, whose sums Pillow divides by 13 and rounds,
    leaving the outermost pixels as they are."""
    array = np.asarray(img)
    sums = _cv2().filter2D(array, _cv2().CV_16S, SMOOTH_KERNEL)  # exact: at most 13 x 255
    smooth = array.copy()
    smooth[1:-1, 1:-1] = (sums[1:-1, 1:-1] + 6) // 13
    return Image.fromarray(_blend(smooth, array, factor))


FAST_OPS.update({
    "Brightness": brightness,
    "BrightnessIncreasing": brightness,
    "Contrast": contrast,
    "ContrastIncreasing": contrast,
    "Sharpness": sharpness,
    "SharpnessIncreasing": sharpness,
})
