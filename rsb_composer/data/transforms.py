"""Train and eval image transforms (torchvision), shaped like torchvision's classification presets."""

from __future__ import annotations

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
    """The short side images are resized to before the centre crop: eval_resolution / crop_pct."""
    return int(round(cfg.eval_resolution / cfg.crop_pct))


def train_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(cfg.train_resolution, scale=tuple(cfg.crop_scale),
                            interpolation=_INTERPOLATION[cfg.interpolation], antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([
        T.Resize(eval_resize_size(cfg), interpolation=_INTERPOLATION[cfg.interpolation], antialias=True),
        T.CenterCrop(cfg.eval_resolution),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
