"""Datasets: ImageNet-style folders (ImageNet itself and the generated toy set) and synthetic tensors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS


def list_classes(split_dir: Path) -> list[str]:
    """Class folders of one split, sorted as torchvision's ImageFolder sorts them."""
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


log = logging.getLogger(__name__)

# What PIL and torchvision raise on a truncated, corrupt or unreadable image (UnidentifiedImageError is an OSError).
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError)
MAX_SUBSTITUTES = 50


class ImageFolderSplit(ImageFolder):
    """An ImageFolder whose label indices come from a given class list (the train split's), and which skips
    images it cannot read.

    torchvision numbers the classes of each folder separately, so a val split missing one class would shift
    every label after it; fixing the list to train's keeps train and val labels identical.

    A corrupt, truncated or unreadable image is replaced by the next readable one (the batch stays full) and its
    path appended to ``bad_log``, one line per occurrence, from whichever worker process met it; the trainer
    counts those lines (callbacks.bad_images) and stops past ``data.max_bad_fraction``.
    """

    def __init__(self, root: Path, classes: list[str], transform: Callable | None = None,
                 allow_empty: bool = False, bad_log: Path | None = None, loader: Callable[[str], Any] | None = None,
                 use_index: bool = True, class_to_idx: dict[str, int] | None = None):
        self._fixed_classes = classes
        # Folder name -> label, for a folder whose class folders are not named by ``classes`` (ImageNet-V2's
        # folders are class indices); by default each of ``classes`` names its own folder.
        self._folder_labels = class_to_idx or {name: index for index, name in enumerate(classes)}
        self.bad_log = bad_log
        self.use_index = use_index
        super().__init__(str(root), transform=transform, allow_empty=allow_empty,
                         **({"loader": loader} if loader is not None else {}))

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._fixed_classes, dict(self._folder_labels)

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions: tuple[str, ...] | None = None,
                     is_valid_file: Callable[[str], bool] | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """torchvision's sample list, read from the kept index when the tree is unchanged (data.index_cache).

        ImageFolder always passes ``extensions`` and never ``is_valid_file``, so the index keys on extensions.
        """
        from rsb_composer.data.index_cache import list_samples

        return list_samples(Path(directory), class_to_idx, extensions or IMG_EXTENSIONS, allow_empty=allow_empty,
                            use_index=self.use_index)

    def __getitem__(self, index: int):
        for attempt in range(MAX_SUBSTITUTES):
            position = (index + attempt) % len(self.samples)
            try:
                return super().__getitem__(position)
            except BAD_IMAGE_ERRORS as err:
                self._record_bad(self.samples[position][0], err)
        raise RuntimeError(f"{MAX_SUBSTITUTES} unreadable images in a row from {self.samples[index][0]} on; "
                           f"is {self.root} readable?")

    def _record_bad(self, path: str, err: Exception) -> None:
        log.warning("skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
        if self.bad_log is not None:
            # O_APPEND writes of one short line are atomic, so worker processes can share the file.
            fd = os.open(self.bad_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{path}\n".encode())
            finally:
                os.close(fd)


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
