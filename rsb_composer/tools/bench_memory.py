"""``rsb-composer bench-memory``: how much a DataLoader worker's private memory grows over one epoch of a large
ImageFolder.

A worker is a fork of the training process and shares its pages until it writes to them; Python writes to every
object it reads (reference counts), so a sample list of Python objects becomes private to each worker page by page
as the epoch reads it. This tool reads one whole epoch of ``ROOT/train`` through the trainer's own loader (the
ImageFolder dataset, the index, the sampler, the fast pipeline at a small resolution, no augmentation beyond crop
and flip) and reports each worker's private memory (``/proc/PID/smaps_rollup``: Private_Clean + Private_Dirty)
after the first batch and at the end of the epoch.

Without ``ROOT/train`` it first makes an ImageNet-shaped tree of ``files`` tiny JPEGs, as hard links to a few
source files (ext4 allows 65,000 links to one file), so 1.28M files take seconds and little disk.
"""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

from PIL import Image

from rsb_composer.tools.bench_index import settle

LINKS_PER_SOURCE = 60_000  # under ext4's 65,000 hard links per file


def generate_jpeg_tree(root: Path, files: int, classes: int = 1000) -> None:
    """``root/train`` with ``files`` tiny JPEGs over ``classes`` folders, and ``root/val`` with one per class."""
    classes = min(classes, files)
    per_class = files // classes
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    count = math.ceil(per_class * classes / LINKS_PER_SOURCE) + 1
    paths = []
    for s in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (24, 20), (s * 37 % 256, s * 91 % 256, s * 53 % 256)).save(buffer, "JPEG", quality=90)
        paths.append(sources / f"{s}.jpg")
        paths[-1].write_bytes(buffer.getvalue())
    made = 0
    for split, n in (("train", per_class), ("val", 1)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                os.link(paths[made // LINKS_PER_SOURCE], folder / f"n{c:08d}_{i}.JPEG")
                made += 1
    settle()


def private_mib(pid: int) -> float:
    """Private_Clean + Private_Dirty of process ``pid``, in MiB: the pages it shares with no other process."""
    total_kib = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total_kib += int(line.split()[1])
    return total_kib / 1024


def bench_memory(root: Path, files: int, workers: int = 2, batch_size: int = 500) -> dict:
    """One epoch of ``root/train`` through the train loader; each worker's private memory after the first batch
    and after the last, and the largest growth."""
    from rsb_composer.config import DataConfig
    from rsb_composer.data import build_loaders

    if not (root / "train").exists():
        generate_jpeg_tree(root, files)
    data = DataConfig(source="imagefolder", path=str(root), train_resolution=32, eval_resolution=32,
                      batch_size=batch_size, num_workers=workers, persistent_workers=False, pin_memory=False)
    loaders = build_loaders(data, seed=0)
    loader = loaders.train
    start_s = time.perf_counter()
    iterator = iter(loader)
    pids = [worker.pid for worker in iterator._workers]  # torch's worker processes (a private attribute)
    first: list[float] = []
    images = batches = 0
    for images_in_batch, _ in iterator:
        images += len(images_in_batch)
        batches += 1
        if batches == 1:
            first = [private_mib(pid) for pid in pids]
        if batches == len(loader):
            last = [private_mib(pid) for pid in pids]  # before the workers exit
    del iterator
    growth = [b - a for a, b in zip(first, last, strict=True)]
    return {"files": len(loader.dataset), "workers": workers, "batch_size": batch_size, "batches": batches,
            "images": images, "epoch_s": time.perf_counter() - start_s,
            "worker_private_mib_first_batch": first, "worker_private_mib_epoch_end": last,
            "worker_growth_mib": max(growth)}
