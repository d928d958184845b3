"""The fast input pipeline against the reference one (timm's create_transform on PIL images).

The two may differ in pixels by a resampling kernel's rounding, never in what they do: the crop boxes, flips and
RandAugment's ops and magnitudes must come from the same distributions. Distributions are compared with a
two-sample Kolmogorov-Smirnov test at a 0.1% level on fixed seeds, so each test is deterministic.
"""

from __future__ import annotations

import io
import math
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from rsb_composer import composer_fixes
from rsb_composer.config import DataConfig
from rsb_composer.data import array_ops, decode, randaugment
from rsb_composer.data.datasets import BAD_IMAGE_ERRORS
from rsb_composer.data.normalization import IMAGENET_MEAN, IMAGENET_STD, ChannelsLastCollate, DeviceNormalize
from rsb_composer.data.pipelines import PIPELINES
from rsb_composer.data.toy import draw_example
from rsb_composer.data.transforms import (
    RandomResizedCropFlip,
    fast_eval_transform,
    fast_train_transform,
    reference_eval_transform,
    reference_train_transform,
)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def assert_same_distribution(a, b, what: str) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    critical = 1.95 * math.sqrt((len(a) + len(b)) / (len(a) * len(b)))  # alpha = 0.001
    d = ks_statistic(a, b)
    assert d < critical, f"{what}: KS statistic {d:.3f} >= {critical:.3f} (fast {a.mean():.3f}, ref {b.mean():.3f})"


def unnormalize(tensor: torch.Tensor) -> np.ndarray:
    """A normalised float (3, H, W) tensor back to (H, W, 3) values in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((tensor * std + mean) * 255).permute(1, 2, 0).numpy()


def photo(width: int = 300, height: int = 220, seed: int = 0) -> np.ndarray:
    # A writable array, as decode_rgb's are (the fast pipeline's tensors are views of its arrays).
    return np.array(draw_example(3, 10, (width, height), np.random.default_rng(seed), texture="fractal"))


def jpeg_bytes(image: np.ndarray | Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, format=format, quality=90)
    return buffer.getvalue()


# --- decoding ------------------------------------------------------------------------------------------------

def test_decode_matches_pil_and_reads_what_pil_reads():
    data = jpeg_bytes(photo())
    ours = decode.decode_rgb(data)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.shape == pil.shape == (220, 300, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - pil).mean() < 1.0

    gray = decode.decode_rgb(jpeg_bytes(photo()[..., 0]))
    assert gray.shape == (220, 300, 3) and (gray[..., 0] == gray[..., 2]).all()
    cmyk = decode.decode_rgb(jpeg_bytes(Image.fromarray(photo()).convert("CMYK")))
    assert cmyk.shape == (220, 300, 3)
    png = decode.decode_rgb(jpeg_bytes(photo(), format="PNG"))  # ImageNet has PNGs under .JPEG names
    assert (png == photo()).all()


def test_truncated_jpeg_raises_an_error_the_dataset_skips():
    data = jpeg_bytes(photo())
    with pytest.raises(BAD_IMAGE_ERRORS):
        decode.decode_rgb(data[: len(data) // 2])


# --- RandomResizedCrop and flip ------------------------------------------------------------------------------

def coordinate_image(width: int = 256, height: int = 192) -> np.ndarray:
    """Red is the column (0..255 exactly for width 256), green the row scaled to 0..255: a crop's output
    corners say where the crop was."""
    xs = np.linspace(0, 255, width)
    ys = np.linspace(0, 255, height)
    image = np.zeros((height, width, 3), dtype=np.float64)
    image[..., 0] = xs[None, :]
    image[..., 1] = ys[:, None]
    return image.round().astype(np.uint8)


def crop_geometry(out: np.ndarray, width: int = 256, height: int = 192) -> tuple[float, float, bool]:
    """(area fraction, log aspect ratio, flipped) of the crop behind ``out``, read from its corner values."""
    left, right = out[:, 0, 0].mean(), out[:, -1, 0].mean()
    top, bottom = out[0, :, 1].mean(), out[-1, :, 1].mean()
    flipped = right < left
    crop_w = abs(right - left) / 255 * (width - 1)
    crop_h = abs(bottom - top) / 255 * (height - 1)
    return crop_w * crop_h / (width * height), math.log(crop_w / crop_h), flipped


def test_crop_boxes_and_flips_follow_the_reference_distribution():
    image = coordinate_image()
    torch.manual_seed(0)
    random.seed(0)
    fast = RandomResizedCropFlip(64, [0.08, 1.0], "bicubic")
    reference = reference_train_transform(64, [0.08, 1.0], "bicubic")
    pil = Image.fromarray(image)
    n = 1000
    ours = [crop_geometry(np.asarray(fast(image), dtype=np.float64)) for _ in range(n)]
    theirs = [crop_geometry(unnormalize(reference(pil))) for _ in range(n)]
    for index, what in ((0, "crop area fraction"), (1, "crop log aspect ratio")):
        assert_same_distribution([g[index] for g in ours], [g[index] for g in theirs], what)
    # The ranges themselves: scale [0.08, 1], ratio [3/4, 4/3] (a little slack for reading boxes off pixels).
    areas, ratios = np.array([g[0] for g in ours]), np.array([g[1] for g in ours])
    assert 0.07 < areas.min() < 0.1 and 0.8 < areas.max() <= 1.01
    assert abs(ratios).max() < math.log(4 / 3) + 0.06
    for name, geometry in (("fast", ours), ("reference", theirs)):
        flips = np.mean([g[2] for g in geometry])
        assert abs(flips - 0.5) < 0.06, f"{name} flip rate {flips}"  # 4 standard errors at n = 1000


def test_whole_image_resize_matches_the_reference_pixels():
    """With the crop fixed to the whole image, fast and reference differ only by resampling rounding."""
    settings = (96, [1.0, 1.0], "bicubic")
    image = photo(256, 192)  # 4:3, so the full-area crop is the whole image in both
    torch.manual_seed(0)  # each may still, rarely, draw a box a pixel short of the whole image
    random.seed(0)
    fast = np.asarray(fast_train_transform(*settings)(image).permute(1, 2, 0), dtype=np.float64)
    ref = unnormalize(reference_train_transform(*settings)(Image.fromarray(image)))
    error = min(np.abs(fast - ref).mean(), np.abs(fast - ref[:, ::-1]).mean())  # either may have flipped
    assert error < 1.5


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_eval_transform_matches_the_reference_pixels(interpolation):
    image = photo(300, 220)
    fast = fast_eval_transform(96, 0.875, interpolation)(image)
    ref = reference_eval_transform(96, 0.875, interpolation)(Image.fromarray(image))
    assert fast.shape == ref.shape == (3, 96, 96)
    assert np.abs(np.asarray(fast.permute(1, 2, 0), dtype=np.float64) - unnormalize(ref)).mean() < 1.5


# --- RandAugment ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,level", [("Rotate", 23.0), ("Rotate", -9.5), ("ShearX", 0.2), ("ShearY", -0.25),
                                        ("TranslateXRel", 0.3), ("TranslateYRel", -0.13), ("TranslateX", 40)])
def test_opencv_geometric_ops_match_timms_pil_ops(name, level):
    from timm.data.auto_augment import NAME_TO_OP

    array = photo(224, 160)  # not square, so a swapped width and height would show
    kwargs = {"fillcolor": (124, 116, 104), "resample": Image.Resampling.BICUBIC}
    ours = np.asarray(array_ops.ARRAY_OPS[name](array, level, **kwargs), dtype=np.float64)
    theirs = np.asarray(NAME_TO_OP[name](Image.fromarray(array), level, **dict(kwargs)), dtype=np.float64)
    assert np.abs(ours - theirs).mean() < 2.0  # bicubic kernels differ slightly; a wrong matrix costs 20+


# Each tone and colour op with the arguments timm's level functions give it (magnitudes 0 to 10 and beyond).
TONE_OPS = ([("AutoContrast", ()), ("Equalize", ()), ("Invert", ())]
            + [("PosterizeIncreasing", (bits,)) for bits in (0, 1, 2, 4, 8)]
            + [("SolarizeIncreasing", (thresh,)) for thresh in (0, 51, 128, 230, 256)]
            + [("SolarizeAdd", (add,)) for add in (0, 33, 110)]
            + [(name, (factor,)) for name in ("ColorIncreasing", "BrightnessIncreasing", "ContrastIncreasing",
                                              "SharpnessIncreasing") for factor in (0.1, 0.37, 1.0, 1.55, 1.9)])


def tone_test_images() -> list[np.ndarray]:
    """A photo, noise, one flat value, a narrow range of values, blown highlights, one pixel of another value."""
    dot = np.full((12, 10, 3), 40, np.uint8)
    dot[3, 4] = (250, 7, 128)
    return [photo(61, 47, seed=3), np.random.default_rng(4).integers(0, 256, (33, 40, 3), dtype=np.uint8),
            np.full((9, 7, 3), 77, np.uint8), (photo(30, 20, seed=5) // 64 + 100).astype(np.uint8),
            np.clip(photo(50, 40, seed=6).astype(np.int64) * 2, 0, 255).astype(np.uint8), dot]


@pytest.mark.parametrize("name,args", TONE_OPS)
def test_array_tone_ops_equal_timms_pixel_for_pixel(name, args):
    from timm.data.auto_augment import NAME_TO_OP

    composer_fixes.apply_timm()  # timm's ops as the pipelines run them (posterize keeps 0 bits on any Pillow)

    for array in tone_test_images():
        ours = array_ops.ARRAY_OPS[name](array.copy(), *args)
        theirs = np.asarray(NAME_TO_OP[name](Image.fromarray(array), *args))
        assert ours.dtype == np.uint8 and ours.shape == array.shape
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}{args} on a {array.shape} image")


def test_randaugment_output_distribution_matches_timm():
    """Every op on, timm's draws: brightness, contrast and how much of the fill colour shows match timm's."""
    settings = ("rand-m9-mstd0.5-inc1", 64, "bicubic")
    array = photo(64, 64)
    fill = np.array((124, 116, 104))

    def stats(transform, image, seed: int):
        random.seed(seed)
        np.random.seed(seed)
        rows = []
        for _ in range(500):
            out = np.asarray(transform(image), dtype=np.float64)
            rows.append((out.mean(), out.std(), (np.abs(out - fill).sum(-1) < 3).mean()))
        return np.array(rows)

    ours = stats(randaugment.ArrayRandAugment(*settings), array, seed=1)
    theirs = stats(randaugment.randaugment(*settings), Image.fromarray(array), seed=2)
    for index, what in enumerate(("mean intensity", "contrast", "fill fraction")):
        assert_same_distribution(ours[:, index], theirs[:, index], what)


def test_randaugment_ops_without_an_array_version_run_timms_pil_function():
    """timm's weighted "3a" set has Desaturate and GaussianBlur, which have no array version: they go through
    PIL; its weighted picks are timm's own."""
    from timm.data.auto_augment import NAME_TO_OP

    transform = randaugment.ArrayRandAugment("rand-m9-n3-t3aw", 64, "bicubic")
    assert {op.name for op in transform.timm.ops} >= {"Desaturate", "GaussianBlur"}
    assert transform.timm.choice_weights is not None
    array = photo(64, 48)
    blur = next(op for op in transform.timm.ops if op.name == "GaussianBlur")
    ours = blur.aug_fn(array, 1.5)
    np.testing.assert_array_equal(ours, np.asarray(NAME_TO_OP["GaussianBlur"](Image.fromarray(array), 1.5)))
    random.seed(0)
    outputs = [transform(array) for _ in range(20)]
    assert all(out.shape == array.shape and out.dtype == np.uint8 for out in outputs)
    assert any((out != array).any() for out in outputs)


@pytest.mark.parametrize("auto_augment", ["rand-m7-mstd0.5-inc1", "rand-m9-n3-t3aw"])
def test_fast_train_transform_pickles_for_spawned_workers(auto_augment):
    """Workers started by spawn or forkserver (macOS's default, Linux's from Python 3.14) get it pickled."""
    data = DataConfig(train_resolution=32, interpolation="bicubic", auto_augment=auto_augment)
    transform = pickle.loads(pickle.dumps(PIPELINES["fast"].train_transform(data)))
    assert "ArrayRandAugment" in repr(transform)
    out = transform(photo(64, 48))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_composer_randaugment_inserts_itself_before_the_uint8_conversion():
    from composer.algorithms.randaugment import RandAugmentTransform
    from composer.utils import add_vision_dataset_transform
    from torchvision.datasets import VisionDataset

    dataset = VisionDataset(root=None, transform=fast_train_transform(48, [0.08, 1.0], "bilinear"))
    add_vision_dataset_transform(dataset, RandAugmentTransform(severity=9, depth=2))
    out = dataset.transform(photo())
    assert out.shape == (3, 48, 48) and out.dtype == torch.uint8


# --- normalisation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("collate", ["stack", "channels_last"])
def test_device_normalize_matches_totensor_and_normalize(channels_last, collate):
    from torchvision import transforms as T

    images = [photo(40, 32, seed) for seed in range(3)]
    samples = [(torch.from_numpy(a).permute(2, 0, 1), label) for label, a in enumerate(images)]
    if collate == "stack":
        batch = torch.stack([image for image, _ in samples])
    else:  # what the fast pipeline's workers hand over: channels-last memory
        batch, _ = ChannelsLastCollate()(samples)
        assert batch.is_contiguous(memory_format=torch.channels_last)
    inputs, labels = DeviceNormalize("cpu", channels_last)((batch, torch.tensor([0, 1, 2])))
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = torch.stack([reference(Image.fromarray(a)) for a in images])
    assert inputs.dtype == torch.float32 and labels.tolist() == [0, 1, 2]
    assert inputs.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(inputs, expected, atol=1e-5, rtol=1e-5)


def test_fast_and_reference_loaders_give_the_same_eval_batches(toy_dir):
    from rsb_composer.config import ToyConfig
    from rsb_composer.data import build_loaders

    def first_eval_batch(pipeline: str):
        data = DataConfig(source="toy", path=str(toy_dir), toy=ToyConfig(4, 16, 6, 40), eval_resolution=32,
                          batch_size=8, num_workers=0, pipeline=pipeline, interpolation="bicubic")
        loaders = build_loaders(data, seed=0)
        batch = next(iter(loaders.eval))
        return loaders.batch_transform(batch) if loaders.batch_transform else batch

    (fast, fast_labels), (ref, ref_labels) = first_eval_batch("fast"), first_eval_batch("reference")
    assert fast.dtype == ref.dtype == torch.float32 and fast.shape == ref.shape == (8, 3, 32, 32)
    assert fast_labels.tolist() == ref_labels.tolist()
    assert (fast - ref).abs().mean() < 0.05  # normalised units: about 2 grey levels
