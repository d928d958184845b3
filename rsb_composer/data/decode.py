"""Image decoding: what each pipeline (``data.pipeline``) reads files and stored bytes with.

The reference pipeline decodes with PIL into PIL images, as torchvision's ImageFolder does. The fast pipeline
decodes to an RGB uint8 array (height, width, 3).

simplejpeg (libjpeg-turbo 3) reads and decodes an ImageNet-like JPEG faster than PIL's
``Image.open(...).convert("RGB")`` (docs/benchmarks.md), and hands back a numpy array that the array transforms
use without a copy. Whatever it cannot decode (CMYK JPEGs, the PNG files ImageNet has under .JPEG
names, other formats in an image folder) goes to PIL, so the fast pipeline reads every file the reference one
reads; a file neither can read raises as PIL does, and the dataset skips it.

Reduced-size decoding (libjpeg's DCT scaling) was measured and left out: it saved nothing over a full
simplejpeg decode, and few of RandomResizedCrop's crops are large enough to allow even a 1/2 reduction
(docs/benchmarks.md).
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

JPEG_MAGIC = b"\xff\xd8"


def decode_rgb(data: bytes) -> np.ndarray:
    if data[:2] == JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # CMYK and other JPEG flavours libjpeg-turbo will not turn into RGB: PIL can
            pass
    return np.array(decode_pil(data))  # a writable copy, as simplejpeg's arrays are


def load_rgb(path: str) -> np.ndarray:
    """An ImageFolder ``loader``: the file at ``path`` as an RGB uint8 array."""
    with open(path, "rb") as handle:
        return decode_rgb(handle.read())


def decode_pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
