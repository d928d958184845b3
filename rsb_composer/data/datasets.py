"""Datasets: ImageNet-style folders (ImageNet itself and the generated toy set) and synthetic tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder


def list_classes(split_dir: Path) -> list[str]:
    """Class folders of one split, sorted as torchvision's ImageFolder sorts them."""
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


class ImageFolderSplit(ImageFolder):
    """An ImageFolder whose label indices come from a given class list (the train split's).

    torchvision numbers the classes of each folder separately, so a val split missing one class would shift
    every label after it; fixing the list to train's keeps train and val labels identical.
    """

    def __init__(self, root: Path, classes: list[str], transform: Callable | None = None,
                 allow_empty: bool = False):
        self._fixed_classes = classes
        super().__init__(str(root), transform=transform, allow_empty=allow_empty)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._fixed_classes, {name: index for index, name in enumerate(self._fixed_classes)}


class SyntheticImages(Dataset):
    """Random normalised images with cycling labels, for throughput tests: no decoding, no disk.

    A small pool of random tensors is reused, so memory stays constant whatever ``num_samples`` is.
    """

    POOL = 64

    def __init__(self, num_samples: int, num_classes: int, resolution: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(min(num_samples, self.POOL), 3, resolution, resolution, generator=generator)
        self.num_samples = num_samples
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index % len(self.images)], index % self.num_classes
