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
from streaming.base.constant import LOCALS, SHM_TO_CLEAN
from streaming.base.shared.prefix import _unpack_locals
from tqdm import tqdm

from rsb_composer.config import ConfigError
from rsb_composer.data.datasets import ImageFolderSplit, list_classes
from rsb_composer.data.decode import decode_pil
from rsb_composer.node_lock import hold_for_process, node_lock

log = logging.getLogger(__name__)

COLUMNS = {"image": "bytes", "label": "int"}
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val")
SHM_LOCK = Path(tempfile.gettempdir()) / "rsb-composer-streaming-shm.lock"  # where streaming keeps its own locks


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


_claimed: set[str] = set()


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _claim_cache(local_dir: str) -> None:
    """Mark ``local_dir`` as read through by this run for as long as it lives, then free what a killed run left.

    Streaming refuses a cache another dataset on this node has registered ('Reused local directory'), and a run
    killed together with its whole process group (SIGKILL at a scheduler's time limit) never unregisters, so
    rerunning the same command would fail on the dead run's registration. The claim tells the two apart: a live
    run holds its claim, so once this run holds it, any registration of ``local_dir`` belongs to a dead run.
    """
    if local_dir in _claimed:  # claimed by this process: a registration may be one of its own live datasets
        return
    if not hold_for_process(Path(tempfile.gettempdir()) / f"rsb-composer-mds-{_digest(local_dir)}.lock"):
        raise ConfigError(f"data.local: another run on this node is reading shards through {local_dir}; "
                          "give each run that runs at the same time its own data.local")
    shm = Path("/dev/shm")  # where Linux keeps POSIX shared memory; streaming's names are <prefix>_<name>
    for registration in shm.glob(f"*_{LOCALS}") if shm.is_dir() else ():
        try:
            their_locals, _ = _unpack_locals(registration.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if local_dir in their_locals:
            prefix = registration.name.split("_")[0]
            for name in SHM_TO_CLEAN:
                with contextlib.suppress(OSError):
                    (shm / f"{prefix}_{name}").unlink()
            log.warning("freed streaming's shared memory %s_* left behind by a killed run that read through %s",
                        prefix, local_dir)
    _claimed.add(local_dir)


class StreamingImages(StreamingDataset):
    """Decodes the stored JPEG bytes with ``decode`` (the pipeline's; PIL by default) and applies the split's
    transform."""

    def __init__(self, remote: str | None, local: str | None, split: str, shuffle: bool, batch_size: int,
                 transform: Callable | None, seed: int, decode: Callable[[bytes], Any] = decode_pil):
        if remote and not local:  # streaming's default cache, but named here so it can be claimed
            local = str(Path(tempfile.gettempdir()) / "rsb-composer-mds" / _digest(remote.rstrip("/")))
        local_dir = os.path.abspath(f"{local.rstrip('/')}/{split}")
        # Streaming 0.13 registers a dataset's shared memory by looking for a free name and then creating it:
        # two runs starting together on one node can pick the same name, and one dies with FileExistsError.
        # Local leaders take turns here; the other local ranks only attach to what their leader registered.
        leader = dist.get_local_rank() == 0
        with node_lock(SHM_LOCK) if leader else contextlib.nullcontext():
            if leader and remote:
                _claim_cache(local_dir)
            super().__init__(
                remote=f"{remote.rstrip('/')}/{split}" if remote else None, local=local_dir,
                shuffle=shuffle, batch_size=batch_size, shuffle_seed=seed,
            )
        self.transform = transform
        self.decode = decode

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = super().__getitem__(index)
        image = self.decode(sample["image"])
        return (self.transform(image) if self.transform else image), int(sample["label"])
