"""Train and eval transforms of the two pipelines (``data.pipeline``).

``reference``: PIL images through timm's ``create_transform`` (the paper's code) for training and torchvision's
resize + centre crop for evaluation, ending in float tensors normalised on the CPU.

``fast`` (the default): the same augmentations in the same order, drawn from the same distributions (timm's
RandomResizedCrop sampling, a 0.5 flip, then those :mod:`rsb_composer.data.augmentations` switches on, such as
timm's RandAugment), on RGB arrays from :mod:`rsb_composer.data.decode`, passed from step to step without PIL
images: crops are resized by torch's antialiased uint8 kernels, RandAugment's
ops run in OpenCV and numpy (:mod:`rsb_composer.data.randaugment`; PIL only for the few ops without an array
version, and for transforms Composer's RandAugment or AugMix insert, see :class:`ArrayCompose`), and batches stay
uint8 (a quarter of the bytes through worker queues, pinned memory and the host-to-device copy) until
:mod:`rsb_composer.data.normalization` turns them into normalised floats on the training device.
docs/benchmarks.md has what each step buys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from rsb_composer import composer_fixes
from rsb_composer.data.normalization import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
# torch's "nearest" picks other pixels than PIL's NEAREST; "nearest-exact" picks the same ones.
TORCH_MODE = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range, torchvision's and timm's default


def eval_resize_size(resolution: int, crop_pct: float) -> int:
    """The short side images are resized to before the centre crop: floor(resolution / crop_pct), as timm.

    The epsilon keeps a crop_pct written as a rounded ratio (224/232 = 0.9655172) from flooring to 231.
    """
    return math.floor(resolution / crop_pct + 1e-6)


# --- reference ---------------------------------------------------------------------------------------------

def reference_train_transform(resolution: int, crop_scale: Sequence[float], interpolation: str,
                              augmentations: Sequence[Callable] = ()) -> T.Compose:
    """timm's create_transform for these settings (RandomResizedCrop, flip, ToTensor, Normalize), with the
    augmentation steps (on PIL images) after the flip, where create_transform puts its RandAugment."""
    from timm.data import create_transform

    composer_fixes.apply_timm()
    transform = create_transform(
        resolution, is_training=True, scale=tuple(crop_scale), ratio=CROP_RATIO,
        interpolation=interpolation, auto_augment=None,
        color_jitter=None,  # the recipes have no colour jitter (timm's default would add 0.4)
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )
    first_tensor = next(i for i, step in enumerate(transform.transforms) if isinstance(step, T.ToTensor))
    transform.transforms[first_tensor:first_tensor] = list(augmentations)
    return transform


def reference_eval_transform(resolution: int, crop_pct: float, interpolation: str) -> T.Compose:
    return T.Compose([
        T.Resize(eval_resize_size(resolution, crop_pct), interpolation=INTERPOLATION[interpolation], antialias=True),
        T.CenterCrop(resolution),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# --- fast --------------------------------------------------------------------------------------------------

def _chw(array: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 array as a (3, H, W) tensor view, no copy."""
    return torch.from_numpy(array).permute(2, 0, 1)


class ArrayCompose(T.Compose):
    """The fast train transform: steps that declare ``takes_arrays`` get (H, W, 3) uint8 arrays; any other step
    gets a PIL image, so the PIL transforms Composer's RandAugment and AugMix insert (before the first ToTensor)
    keep working on the fast pipeline."""

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        for step in self.transforms:
            if isinstance(image, np.ndarray) and not getattr(step, "takes_arrays", False):
                image = Image.fromarray(image)
            image = step(image)
        return image


class RandomResizedCropFlip:
    """RandomResizedCrop then a horizontal flip, from an RGB array to an RGB array.

    The crop box is drawn by the reference's own sampler, timm's ``RandomResizedCropAndInterpolation.get_params``
    (Python's ``random``, far cheaper than torchvision's draw of the same distribution through torch tensors;
    docs/benchmarks.md), and the flip with torch's RNG, as torchvision's RandomHorizontalFlip in the reference does; the
    resize kernel is torch's antialiased uint8 one, close to PIL's.
    """

    takes_arrays = True

    def __init__(self, size: int, scale: Sequence[float], interpolation: str, flip_prob: float = 0.5):
        self.size = [size, size]
        self.scale = tuple(scale)
        self.mode = TORCH_MODE[interpolation]
        self.flip_prob = flip_prob

    def __call__(self, array: np.ndarray) -> np.ndarray:
        image = _chw(array)
        top, left, height, width = RandomResizedCropAndInterpolation.get_params(image, self.scale, CROP_RATIO)
        # A channels-last copy of the crop in, a channels-last result out: torch's fastest uint8 antialiased
        # kernel (faster than resizing the strided view, docs/benchmarks.md), and (H, W, 3) memory without
        # another copy.
        crop = image[None, :, top:top + height, left:left + width].contiguous(memory_format=torch.channels_last)
        out = torch.nn.functional.interpolate(crop, size=self.size, mode=self.mode,
                                              antialias=self.mode != "nearest-exact")[0]
        if torch.rand(1).item() < self.flip_prob:
            out = out.flip(-1)
        return out.permute(1, 2, 0).contiguous().numpy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, interpolation={self.mode})"


class ToUint8Tensor(T.ToTensor):
    """RGB array (or PIL image) -> (3, H, W) uint8 tensor, unscaled: DeviceNormalize does the rest on the device.

    A ToTensor subclass (as timm's MaybeToTensor is) because Composer's RandAugment and AugMix insert
    themselves before the first ToTensor of a dataset's transforms.
    """

    takes_arrays = True

    def __call__(self, pic: np.ndarray | Image.Image) -> torch.Tensor:
        # (3, H, W) over (H, W, 3) memory: the collate's stack copies it once, into the batch. The pipeline's
        # arrays are its own, fresh for each image; a PIL image's pixels are copied out.
        array = pic if isinstance(pic, np.ndarray) else np.array(pic, dtype=np.uint8, copy=True)
        return _chw(array)


class ResizeCenterCrop:
    """The eval transform on an RGB array: resize the short side, centre-crop, with torchvision's size and
    offset rules (as the reference's Resize + CenterCrop)."""

    def __init__(self, resize: int, crop: int, interpolation: str):
        self.resize = resize
        self.crop = crop
        self.mode = TORCH_MODE[interpolation]

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        height, width = array.shape[:2]
        if height <= width:
            size = (self.resize, int(self.resize * width / height))
        else:
            size = (int(self.resize * height / width), self.resize)
        image = _chw(array)[None].contiguous(memory_format=torch.channels_last)
        out = torch.nn.functional.interpolate(image, size=size, mode=self.mode,
                                              antialias=self.mode != "nearest-exact")[0]
        top = int(round((size[0] - self.crop) / 2.0))
        left = int(round((size[1] - self.crop) / 2.0))
        return out[:, top:top + self.crop, left:left + self.crop]


def fast_train_transform(resolution: int, crop_scale: Sequence[float], interpolation: str,
                         augmentations: Sequence[Callable] = ()) -> ArrayCompose:
    """The crop and flip, the augmentation steps (:mod:`rsb_composer.data.augmentations`), a uint8 tensor."""
    return ArrayCompose([RandomResizedCropFlip(resolution, crop_scale, interpolation), *augmentations,
                         ToUint8Tensor()])


def fast_eval_transform(resolution: int, crop_pct: float, interpolation: str) -> Callable:
    return ResizeCenterCrop(eval_resize_size(resolution, crop_pct), resolution, interpolation)
