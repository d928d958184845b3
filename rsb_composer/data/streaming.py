"""MosaicML streaming (MDS) shards: conversion from an ImageFolder tree, and the dataset that reads them.

Shards hold each image's original JPEG bytes (no re-encoding, so training sees exactly the source files) and
its label; ``classes.txt`` beside the splits keeps the class names. ``data.source: streaming`` reads
``data.remote`` (``s3://...``, ``gs://...`` or a plain folder) through the local cache ``data.local``. Streaming
shards the samples over ranks and workers itself and records its position in Composer's checkpoints, so a
mid-epoch resume continues at the right sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streaming import MDSWriter, StreamingDataset
from tqdm import tqdm

from rsb_composer.data.datasets import ImageFolderSplit, list_classes
from rsb_composer.data.decode import decode_pil

log = logging.getLogger(__name__)

COLUMNS = {"image": "bytes", "label": "int"}
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val")


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


class StreamingImages(StreamingDataset):
    """Decodes the stored JPEG bytes with ``decode`` (the pipeline's; PIL by default) and applies the split's
    transform."""

    def __init__(self, remote: str | None, local: str | None, split: str, shuffle: bool, batch_size: int,
                 transform: Callable | None, seed: int, decode: Callable[[bytes], Any] = decode_pil):
        super().__init__(
            remote=f"{remote.rstrip('/')}/{split}" if remote else None,
            local=f"{local.rstrip('/')}/{split}" if local else None,
            shuffle=shuffle, batch_size=batch_size, shuffle_seed=seed,
        )
        self.transform = transform
        self.decode = decode

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = super().__getitem__(index)
        image = self.decode(sample["image"])
        return (self.transform(image) if self.transform else image), int(sample["label"])
