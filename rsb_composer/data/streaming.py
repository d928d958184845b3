"""MosaicML streaming (MDS) shards: conversion from an ImageFolder tree, and the dataset that reads them.

Shards hold each image's original JPEG bytes (no re-encoding, so training sees exactly the source files) and
its label; ``classes.txt`` beside the splits keeps the class names. ``data.source: streaming`` reads
``data.remote`` (``s3://...``, ``gs://...`` or a plain folder) through the local cache ``data.local``. Streaming
shards the samples over ranks and workers itself and records its position in Composer's checkpoints, so a
mid-epoch resume continues at the right sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.utils import dist
from streaming import MDSWriter, StreamingDataset
from streaming.base.constant import LOCALS
from streaming.base.shared.prefix import _unpack_locals
from tqdm import tqdm

from rsb_composer.config import ConfigError
from rsb_composer.data.datasets import ImageFolderSplit, list_classes
from rsb_composer.data.decode import decode_pil
from rsb_composer.data.sample_rng import sample_stream
from rsb_composer.node_lock import node_lock, node_wide_dir

log = logging.getLogger(__name__)

COLUMNS = {"image": "bytes", "label": "int"}
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val")
SHM_LOCK = node_wide_dir() / "rsb-composer-streaming.lock"  # beside the shared memory it guards
LOCK_TIMEOUT_S = 120.0


def convert_imagefolder(root: str | Path, out: str | Path, shard_size: str = "256mb",
                        progress: bool = True) -> dict[str, int]:
    """Write ``root/{train,val}`` as MDS shards under ``out/{train,val}``; returns images written per split."""
    root, out = Path(root), Path(out)
    classes = list_classes(root / "train")
    out.mkdir(parents=True, exist_ok=True)
    (out / CLASSES_FILE).write_text("\n".join(classes) + "\n")
    written = {}
    for split in SPLITS:
        samples = ImageFolderSplit(root / split, classes, allow_empty=split == "val").samples
        with MDSWriter(out=str(out / split), columns=COLUMNS, size_limit=shard_size) as writer:
            for path, label in tqdm(samples, desc=f"{split} -> MDS", unit="img", disable=not progress):
                writer.write({"image": Path(path).read_bytes(), "label": label})
        written[split] = len(samples)
    return written


def local_classes(remote: str | None, local: str | None) -> list[str] | None:
    """The class names when the shards are on a local path (remote folder or already-filled cache)."""
    for base in (remote, local):
        if base and "://" not in base and (Path(base) / CLASSES_FILE).is_file():
            return (Path(base) / CLASSES_FILE).read_text().split()
    return None


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _registrations(local_dir: str) -> list[str]:
    """Streaming's shared-memory registrations (``/dev/shm/<prefix>_locals``) that name ``local_dir``."""
    found = []
    for path in Path("/dev/shm").glob(f"*_{LOCALS}"):
        with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
            if local_dir in _unpack_locals(path.read_bytes())[0]:  # streaming 0.13's private layout
                found.append(path.name.split("_")[0])
    return found


class StreamingImages(StreamingDataset):
    """Decodes the stored JPEG bytes with ``decode`` (the pipeline's; PIL by default) and applies the split's
    transform.

    With ``augment_seed`` (the train split), each sample is transformed inside its own random stream, keyed by
    (seed, epoch, sample id) (:mod:`rsb_composer.data.sample_rng`), so a mid-epoch resume through streaming's own
    resumption draws the same augmentations as an uninterrupted run. The epoch is the one streaming's iteration
    is in, noted in the worker that iterates.
    """

    def __init__(self, remote: str | None, local: str | None, split: str, shuffle: bool, batch_size: int,
                 transform: Callable | None, seed: int, decode: Callable[[bytes], Any] = decode_pil,
                 augment_seed: int | None = None):
        if remote and not local:  # streaming's default cache, named here so errors can name it
            local = str(Path(tempfile.gettempdir()) / "rsb-composer-mds" / _digest(remote.rstrip("/")))
        local_dir = os.path.abspath(f"{local.rstrip('/')}/{split}")
        # Streaming 0.13 registers a dataset's shared memory by looking for a free name, then creating it: two
        # runs starting together on one node can pick the same name, and one dies with FileExistsError. So the
        # local leaders of this node take turns. Streaming initialises torch.distributed itself if it is not
        # yet, and its other local ranks then wait in that rendezvous for their leader, which holds the lock by
        # then; if it is initialised already, the barrier below makes them wait. The wait is bounded: two
        # multi-node runs starting together on the same nodes could otherwise each hold one node's lock while
        # waiting for the other's rendezvous.
        leader = dist.get_local_rank() == 0
        with node_lock(SHM_LOCK, timeout=LOCK_TIMEOUT_S) if leader else contextlib.nullcontext():
            if dist.is_initialized():
                dist.barrier()
            try:
                super().__init__(
                    remote=f"{remote.rstrip('/')}/{split}" if remote else None, local=local_dir,
                    shuffle=shuffle, batch_size=batch_size, shuffle_seed=seed,
                )
            except ValueError as error:
                if "Reused local directory" not in str(error):
                    raise
                prefixes = " ".join(f"/dev/shm/{p}_*" for p in _registrations(local_dir)) or (
                    "the /dev/shm/<prefix>_locals file naming it and the other /dev/shm/<prefix>_* files")
                raise ConfigError(
                    f"data.local: another streaming dataset on this node reads shards through {local_dir}; give "
                    f"each run at the same time its own data.local (if none is running, one killed while starting "
                    f"left its registration: remove {prefixes})"
                ) from None
        self.transform = transform
        self.decode = decode
        self.augment_seed = augment_seed
        self._iterating_epoch = 0

    def _resume_incr_epoch(self) -> tuple[int, int]:
        epoch, sample_in_epoch = super()._resume_incr_epoch()  # called by __iter__, in the iterating process
        self._iterating_epoch = epoch
        return epoch, sample_in_epoch

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = super().__getitem__(index)
        image, label = self.decode(sample["image"]), int(sample["label"])
        if self.transform is None:
            return image, label
        if self.augment_seed is None:
            return self.transform(image), label
        # Streaming pads an epoch that does not divide evenly with repeats of a few samples; those repeats share
        # their sample's stream (the same augmentation twice), the only place two draws of an epoch coincide.
        with sample_stream(self.augment_seed, (index, self._iterating_epoch, 0)):
            return self.transform(image), label
