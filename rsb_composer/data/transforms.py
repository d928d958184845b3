"""Train and eval image transforms (torchvision), shaped like torchvision's classification presets."""

from __future__ import annotations

import math

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from rsb_composer.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def eval_resize_size(cfg: DataConfig) -> int:
    """The short side images are resized to before the centre crop: floor(eval_resolution / crop_pct), as timm.

    The epsilon keeps a crop_pct written as a rounded ratio (224/232 = 0.9655172) from flooring to 231.
    """
    return math.floor(cfg.eval_resolution / cfg.crop_pct + 1e-6)


def randaugment(cfg: DataConfig):
    """timm's RandAugment from its config string, with the hyper-parameters timm's create_transform gives it."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {
        "translate_const": int(cfg.train_resolution * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
        "interpolation": str_to_pil_interp(cfg.interpolation),
    }
    return rand_augment_transform(cfg.auto_augment, hparams)


def train_transform(cfg: DataConfig) -> T.Compose:
    """RandomResizedCrop + flip, then RandAugment if configured (timm's order), then tensor + normalise."""
    steps = [
        T.RandomResizedCrop(cfg.train_resolution, scale=tuple(cfg.crop_scale),
                            interpolation=_INTERPOLATION[cfg.interpolation], antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if cfg.auto_augment:
        steps.append(randaugment(cfg))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def eval_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([
        T.Resize(eval_resize_size(cfg), interpolation=_INTERPOLATION[cfg.interpolation], antialias=True),
        T.CenterCrop(cfg.eval_resolution),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
