"""timm's RandAugment ops on RGB uint8 arrays: the same matrices and tables as timm's PIL functions of the same
names (timm/data/auto_augment.py) and the Pillow code they call, run by OpenCV and numpy.

- rotate, shear, translate: OpenCV's ``warpAffine`` with PIL's matrix, interpolation mode and fill. The pixels
  are close to PIL's, not equal: OpenCV's bicubic kernel is a = -0.75 where PIL's is a = -1, and it blends the
  fill into the edge pixels PIL leaves hard (tests/test_fast_pipeline.py bounds the difference).
- every tone and colour op (auto-contrast, equalize, invert, posterize, solarize, solarize-add, colour,
  brightness, contrast, sharpness) reproduces Pillow's arithmetic (its tables, its float32 blend, the SMOOTH
  filter's rounding and untouched border; the grey image is Pillow's own conversion), so the result is
  identical to Pillow's, pixel for pixel. Pillow builds each lookup table in Python and ``Image.point`` rounds
  all 768 entries again in Python; here a table is a few numpy operations and one ``cv2.LUT``.

docs/benchmarks.md has each op's time against PIL's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

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


def warp_affine(array: np.ndarray, matrix: tuple[float, ...], fillcolor: Any = None,
                resample: Any = Image.Resampling.BICUBIC) -> np.ndarray:
    """PIL's ``img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor)`` done by OpenCV.

    PIL maps the centre of output pixel (x, y), at (x + 0.5, y + 0.5), through ``matrix`` to input coordinates
    and samples there; OpenCV puts pixel centres on integers, hence the half-pixel shifts.
    """
    cv2 = _cv2()
    a, b, c, d, e, f = matrix
    inverse_map = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]], dtype=np.float64)
    if fillcolor is None:
        fill: tuple[int, ...] = (0, 0, 0)
    elif isinstance(fillcolor, int):
        fill = (fillcolor,) * 3
    else:
        fill = tuple(fillcolor)
    return cv2.warpAffine(array, inverse_map, (array.shape[1], array.shape[0]),
                          flags=_cv2_interpolation(resample) | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


# Each takes timm's level argument and keyword arguments (fillcolor, resample) and builds the same matrix or
# table as timm's function of the same name (timm/data/auto_augment.py) and the Pillow 11 code it calls.
def shear_x(array: np.ndarray, factor: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, factor, 0, 0, 1, 0), **kwargs)


def shear_y(array: np.ndarray, factor: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, 0, 0, factor, 1, 0), **kwargs)


def translate_x_rel(array: np.ndarray, pct: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, 0, pct * array.shape[1], 0, 1, 0), **kwargs)


def translate_y_rel(array: np.ndarray, pct: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, 0, 0, 0, 1, pct * array.shape[0]), **kwargs)


def translate_x_abs(array: np.ndarray, pixels: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, 0, pixels, 0, 1, 0), **kwargs)


def translate_y_abs(array: np.ndarray, pixels: float, **kwargs: Any) -> np.ndarray:
    return warp_affine(array, (1, 0, 0, 0, 1, pixels), **kwargs)


def rotate(array: np.ndarray, degrees: float, **kwargs: Any) -> np.ndarray:
    """PIL's ``img.rotate(degrees)``: counter-clockwise about the image centre, same size."""
    h, w = array.shape[:2]
    angle = -math.radians(degrees)
    a, b, d, e = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
    cx, cy = w / 2.0, h / 2.0
    return warp_affine(array, (a, b, cx - (a * cx + b * cy), d, e, cy - (d * cx + e * cy)), **kwargs)


_VALUES = np.arange(256)
SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32)  # ImageFilter.SMOOTH, over 13


def _apply_table(array: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``Image.point``: a (256,) table for every channel, or a (256, 1, 3) table, one column per channel."""
    return _cv2().LUT(array, table.astype(np.uint8, copy=False))


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow's ``Image.blend(degenerate, image, factor)``: float32 arithmetic, clipped, truncated (Blend.c)."""
    base = degenerate.astype(np.float32)
    out = base + np.float32(factor) * (image.astype(np.float32) - base)
    return np.clip(out, 0, 255).astype(np.uint8)


def _histograms(array: np.ndarray) -> np.ndarray:
    """``Image.histogram()`` as a (3, 256) array: one row per channel."""
    cv2 = _cv2()
    return np.stack([cv2.calcHist([array], [channel], None, [256], [0, 256]).reshape(256)
                     for channel in range(3)]).astype(np.int64)


def auto_contrast(array: np.ndarray, **_: Any) -> np.ndarray:
    """``ImageOps.autocontrast``: each channel's lowest..highest value stretched to 0..255."""
    table = np.empty((256, 1, 3), np.int64)
    # OpenCV's per-plane min/max: far cheaper than numpy's min/max over two axes (docs/benchmarks.md)
    for channel, plane in enumerate(_cv2().split(array)):
        low, high = _cv2().minMaxLoc(plane)[:2]
        lo, hi = int(low), int(high)
        if hi <= lo:
            table[:, 0, channel] = _VALUES
        else:
            scale = 255.0 / (hi - lo)
            table[:, 0, channel] = np.clip(np.trunc(_VALUES * scale + (-lo * scale)), 0, 255)
    return _apply_table(array, table)


def equalize(array: np.ndarray, **_: Any) -> np.ndarray:
    """``ImageOps.equalize``: each channel's histogram flattened, with Pillow's integer steps."""
    table = np.empty((256, 1, 3), np.int64)
    for channel, hist in enumerate(_histograms(array)):
        used = hist[hist > 0]
        step = (int(used.sum()) - int(used[-1])) // 255 if len(used) > 1 else 0
        if not step:
            table[:, 0, channel] = _VALUES
        else:
            before = np.concatenate(([0], np.cumsum(hist)[:-1]))  # pixels below each value
            table[:, 0, channel] = (step // 2 + before) // step
    return _apply_table(array, np.clip(table, 0, 255))


def invert(array: np.ndarray, **_: Any) -> np.ndarray:
    return 255 - array


def posterize(array: np.ndarray, bits_to_keep: int, **_: Any) -> np.ndarray:
    if bits_to_keep >= 8:
        return array
    return np.bitwise_and(array, np.uint8(~(2 ** (8 - bits_to_keep) - 1) & 0xFF))


def solarize(array: np.ndarray, thresh: int, **_: Any) -> np.ndarray:
    return _apply_table(array, np.where(thresh > _VALUES, _VALUES, 255 - _VALUES))


def solarize_add(array: np.ndarray, add: int, thresh: int = 128, **_: Any) -> np.ndarray:
    return _apply_table(array, np.where(thresh > _VALUES, np.minimum(255, _VALUES + add), _VALUES))


def color(array: np.ndarray, factor: float, **_: Any) -> np.ndarray:
    """``ImageEnhance.Color``: a blend with the image's grey version, converted to L and back by Pillow, as there
    (exact by construction, and faster than the same sums in numpy)."""
    return _blend(np.asarray(Image.fromarray(array).convert("L").convert("RGB")), array, factor)


def brightness(array: np.ndarray, factor: float, **_: Any) -> np.ndarray:
    """``ImageEnhance.Brightness``: a blend with black, so one table for every pixel."""
    return _apply_table(array, _blend(np.zeros(256, np.uint8), _VALUES, factor))


def contrast(array: np.ndarray, factor: float, **_: Any) -> np.ndarray:
    """``ImageEnhance.Contrast``: a blend with the mean grey level (ImageStat's mean of the L image, rounded)."""
    hist = Image.fromarray(array).convert("L").histogram()
    mean = int(float(np.dot(_VALUES, hist)) / sum(hist) + 0.5)
    return _apply_table(array, _blend(np.full(256, mean, np.uint8), _VALUES, factor))


def sharpness(array: np.ndarray, factor: float, **_: Any) -> np.ndarray:
    """``ImageEnhance.Sharpness``: a blend with ``ImageFilter.SMOOTH``, whose sums Pillow divides by 13 and rounds,
    leaving the outermost pixels as they are."""
    sums = _cv2().filter2D(array, _cv2().CV_16S, SMOOTH_KERNEL)  # exact: at most 13 x 255
    smooth = array.copy()
    smooth[1:-1, 1:-1] = (sums[1:-1, 1:-1] + 6) // 13
    return _blend(smooth, array, factor)


ARRAY_OPS: dict[str, Callable[..., np.ndarray]] = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "PosterizeIncreasing": posterize,
    "PosterizeOriginal": posterize,
    "Solarize": solarize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "ColorIncreasing": color,
    "Contrast": contrast,
    "ContrastIncreasing": contrast,
    "Brightness": brightness,
    "BrightnessIncreasing": brightness,
    "Sharpness": sharpness,
    "SharpnessIncreasing": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x_abs,
    "TranslateY": translate_y_abs,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}
