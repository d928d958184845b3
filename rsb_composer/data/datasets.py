"""Datasets: ImageNet-style folders (ImageNet itself and the generated toy set) and synthetic tensors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from rsb_composer.data.index_cache import list_samples
from rsb_composer.data.sample_rng import sample_stream, split_key


def list_classes(split_dir: Path) -> list[str]:
    """Class folders of one split, sorted as torchvision's ImageFolder sorts them."""
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


log = logging.getLogger(__name__)

# What PIL and torchvision raise on a truncated, corrupt or unreadable image (UnidentifiedImageError is an OSError).
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError)
MAX_SUBSTITUTES = 50


class ImageFolderSplit(VisionDataset):
    """torchvision's ImageFolder (same files, same order, same ``samples[i]``), with label indices from a given class
    list (the train split's), a compact sample index, and unreadable images skipped.

    torchvision numbers the classes of each folder separately, so a val split missing one class would shift
    every label after it; fixing the list to train's keeps train and val labels identical. The samples are a
    :class:`~rsb_composer.data.sample_index.SampleIndex` (numpy arrays, read from the kept index when the tree is
    unchanged, data.index_cache), not a list of Python tuples, so worker processes do not copy them as they read.
    A VisionDataset, as Composer's RandAugment and AugMix require of the datasets they insert themselves into.

    A corrupt, truncated or unreadable image is replaced by the next readable one (the batch stays full) and its
    path appended to ``bad_log``, one line per occurrence, from whichever worker process met it; the trainer
    counts those lines (callbacks.bad_images) and stops past ``data.max_bad_fraction``.

    With a ``seed`` (the train split), items are read by the train sampler's keys ``(index, epoch, copy)``, each
    inside its own random stream (:mod:`rsb_composer.data.sample_rng`), and the dataset takes part in Composer's
    dataset resumption (``state_dict``/``load_state_dict``), which switches off Composer's replay of an epoch's
    earlier batches on a mid-epoch resume: the sampler starts at the checkpoint's position instead.
    """

    def __init__(self, root: Path, classes: list[str], transform: Callable | None = None,
                 allow_empty: bool = False, bad_log: Path | None = None, loader: Callable[[str], Any] | None = None,
                 use_index: bool = True, seed: int | None = None, class_to_idx: dict[str, int] | None = None):
        super().__init__(str(root), transform=transform)
        self.classes = list(classes)
        # Folder name -> label, for a folder whose class folders are not named by ``classes`` (ImageNet-V2's
        # folders are class indices); by default each of ``classes`` names its own folder.
        self.class_to_idx = class_to_idx or {name: index for index, name in enumerate(self.classes)}
        self.loader = loader or default_loader
        self.extensions = IMG_EXTENSIONS
        self.bad_log = bad_log
        self.seed = seed
        self.samples = list_samples(Path(root), self.class_to_idx, IMG_EXTENSIONS, allow_empty=allow_empty,
                                    use_index=use_index)
        self.targets = self.samples.labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Any):
        if self.seed is None:
            return self._read(int(key))
        index, epoch, copy = split_key(key)
        with sample_stream(self.seed, (index, epoch, copy)):
            return self._read(index)

    def _read(self, index: int) -> tuple[Any, int]:
        for attempt in range(MAX_SUBSTITUTES):
            position = (index + attempt) % len(self.samples)
            path = self.samples.path(position)
            try:
                image = self.loader(path)
                return (self.transform(image) if self.transform is not None else image), self.samples.label(position)
            except BAD_IMAGE_ERRORS as err:
                self._record_bad(path, err)
        raise RuntimeError(f"{MAX_SUBSTITUTES} unreadable images in a row from {self.samples.path(index)} on; "
                           f"is {self.root} readable?")

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, int]:
        """What Composer stores of the train dataset in a checkpoint: the samples of the epoch read so far (over
        all ranks)."""
        return {"sample_in_epoch": num_samples}

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        """Composer's dataset resumption: that the dataset has this method is what switches Composer's replay off
        (Composer 0.32.1 would otherwise load and discard every earlier batch of the epoch). The train sampler
        starts at the position the trainer's timestamp gives at FIT_START (callbacks.sampler_resume), exact per
        rank and also right for checkpoints written before this method existed (``state`` None)."""

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

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int]:
        index = split_key(key)[0]  # a train sampler's key or a bare index; nothing random to draw
        return self.images[index % len(self.images)], index % self.num_classes
