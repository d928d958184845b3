"""torch's, timm's and Pillow's workarounds (rsb_composer/composer_fixes/): for each, the test of the upstream
behaviour it works around on the installed versions (``test_upstream_<name>``: the upgrade check, see
tests/test_composer_fixes.py) and the tests of its own job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageOps
from timm.data import auto_augment

from rsb_composer import composer_fixes
from rsb_composer.composer_fixes import (
    inductor_inplace_buffers,
    timm_posterize,
)
from rsb_composer.data import array_ops
from rsb_composer.data.randaugment import randaugment_hparams
from tests.helpers import upstream_verdict

# --- inductor_inplace_buffers ------------------------------------------------------------------------------------

INDUCTOR_PROBE = textwrap.dedent("""
    import torch, torchvision
    import torch._inductor.config as inductor
    inductor.inplace_buffers = {inplace}
    model = torch.compile(torchvision.models.resnet18(num_classes=10))
    try:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    except Exception as err:
        print("failed:", type(err).__name__, str(err).splitlines()[0])
    else:
        print("compiled")
""")


def _compile_resnet18_backward(tmp_path, inplace: bool) -> str:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{inplace}")}
    done = subprocess.run([sys.executable, "-c", INDUCTOR_PROBE.format(inplace=inplace)], env=env, timeout=900,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_upstream_inductor_inplace_buffers(tmp_path):
    outcome = _compile_resnet18_backward(tmp_path, inplace=True)
    upstream_verdict("inductor_inplace_buffers", outcome.startswith("failed:"),
                     f"fails compiling ResNet-18's backward with inplace_buffers on ({outcome})")


def test_inductor_compiles_without_inplace_buffers():
    import torch._inductor.config as inductor

    with inductor.patch(inplace_buffers=True, allow_buffer_reuse=True):
        inductor_inplace_buffers.apply()
        assert inductor.inplace_buffers is False and inductor.allow_buffer_reuse  # freed buffers still reused


# --- timm_posterize ----------------------------------------------------------------------------------------------

def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))


def test_upstream_timm_posterize():
    asks_zero = auto_augment.LEVEL_TO_ARG["PosterizeIncreasing"](10, {}) == (0,)  # magnitude 10: mstd noise
    if not asks_zero:  # whatever Pillow does, nothing asks it for 0 bits any more
        pytest.fail(f"timm_posterize can go: upstream fixed it in timm {composer_fixes.installed_version('timm')} "
                    "(PosterizeIncreasing no longer asks for 0 bits at magnitude 10)")
    try:
        black = not np.asarray(auto_augment.posterize(_image(), 0)).any()
    except ValueError as err:
        assert "bits must be between" in str(err)
        black = False
    upstream_verdict("timm_posterize", not black, "refuses 0 bits (Pillow 12 gave a black image)")


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_posterize_keeps_zero_bits_a_black_image(mode):
    image = _image().convert(mode)
    out = timm_posterize.posterize(image, 0)
    assert out.mode == mode and out.size == image.size
    assert not np.asarray(out).any()
    # Other bit counts are timm's own op, unchanged, and the fast pipeline's array op agrees at every count.
    for bits in range(0, 9):
        expected = np.asarray(ImageOps.posterize(image, bits)) if bits else np.zeros_like(np.asarray(image))
        assert np.array_equal(np.asarray(timm_posterize.posterize(image, bits)), expected)
        assert np.array_equal(array_ops.posterize(np.asarray(image), bits), expected)


def test_randaugment_posterize_at_full_magnitude_on_this_pillow():
    """The recipes' RandAugment op at the magnitude the noise reaches, as the pipelines set timm up: a black image,
    no exception, on any Pillow (the workaround's op where the installed Pillow needs it, timm's own elsewhere)."""
    composer_fixes.apply_timm()
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10,
                                hparams=randaugment_hparams(32, "bicubic"))
    if composer_fixes.applies("timm_posterize"):
        assert op.aug_fn is timm_posterize.posterize
    assert not np.asarray(op(_image())).any()
