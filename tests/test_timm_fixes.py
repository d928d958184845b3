"""rsb_composer.timm_fixes: each workaround does its job, and a test of the upstream behaviour it works around says
when it can go."""

from __future__ import annotations

import numpy as np
import PIL
import pytest
from packaging.version import Version
from PIL import Image, ImageOps
from timm.data import auto_augment

from rsb_composer import timm_fixes
from rsb_composer.data import array_ops
from rsb_composer.data.randaugment import randaugment_hparams


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))


def test_upstream_posterize_with_zero_bits():
    """If this fails, Pillow accepts 0 bits again or timm stopped asking for them: timm_fixes item 1 can go."""
    if Version(PIL.__version__) >= Version("13"):
        with pytest.raises(ValueError, match="bits must be between"):
            auto_augment.posterize(_image(), 0)
    else:
        assert not np.asarray(auto_augment.posterize(_image(), 0)).any()
    # timm's level-to-argument rule asks for 0 bits at magnitude 10 (reached with mstd noise).
    assert auto_augment.LEVEL_TO_ARG["PosterizeIncreasing"](10, {}) == (0,)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_posterize_keeps_zero_bits_a_black_image(mode):
    image = _image().convert(mode)
    out = timm_fixes.posterize(image, 0)
    assert out.mode == mode and out.size == image.size
    assert not np.asarray(out).any()
    # Other bit counts are timm's own op, unchanged, and the fast pipeline's array op agrees at every count.
    for bits in range(0, 9):
        expected = np.asarray(ImageOps.posterize(image, bits)) if bits else np.zeros_like(np.asarray(image))
        assert np.array_equal(np.asarray(timm_fixes.posterize(image, bits)), expected)
        assert np.array_equal(array_ops.posterize(np.asarray(image), bits), expected)


def test_randaugment_posterize_at_full_magnitude():
    """The recipes' RandAugment op at the magnitude the noise reaches: a black image, no exception."""
    timm_fixes.apply()
    hparams = randaugment_hparams(32, "bicubic")
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10, hparams=hparams)
    assert op.aug_fn is timm_fixes.posterize
    assert not np.asarray(op(_image())).any()
