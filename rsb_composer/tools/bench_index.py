"""``rsb-composer bench-index``: ImageFolder start-up, torchvision's listing against the kept index."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsb_composer.data import index_cache
from rsb_composer.data.sample_index import SampleIndex


def _drop_file_caches() -> None:
    """Empty the kernel's page, dentry and inode caches (root only): the next listing reads the disk, as a first
    listing on a network file system does."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def generate_tree(split: Path, files: int, classes: int = 1000) -> None:
    """An ImageNet-shaped split of empty .JPEG files (listing never opens them): ``files`` of them over
    ``classes`` folders (fewer for small trees)."""
    classes = min(classes, files)
    per_class = files // classes
    for c in range(classes):
        folder = split / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"n{c:08d}_{i}.JPEG").touch()
    settle()


def settle() -> None:
    """Wait until a tree just written is old enough for the index: it distrusts folders modified within
    MTIME_SLACK_NS before its walk (a real tree is older than that)."""
    time.sleep(index_cache.MTIME_SLACK_NS / 1e9 + 0.5)


def bench_index(root: Path, files: int, drop_caches: bool = False) -> dict[str, float]:
    """Start-up listing of ``root/train``: torchvision's walk against the kept index (first start: walk and write
    the index; later starts: check the folders and read it). A tree of ``files`` empty files is generated there
    first if ``root/train`` does not exist. Each timing is the best of three, or a single cold one with
    ``drop_caches``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    from rsb_composer.data.datasets import list_classes

    split = root / "train"
    if not split.exists():
        generate_tree(split, files)
    classes = list_classes(split)
    class_to_idx = {name: i for i, name in enumerate(classes)}

    def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
        best, result = float("inf"), None
        for _ in range(1 if drop_caches else repeats):
            if drop_caches:
                _drop_file_caches()
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        return best, result

    plain, expected = timed(lambda: make_dataset(str(split), class_to_idx, IMG_EXTENSIONS))

    def first_start() -> SampleIndex:
        for path in index_cache.index_paths(split):
            path.unlink(missing_ok=True)
        return index_cache.list_samples(split, class_to_idx, IMG_EXTENSIONS)

    first, _ = timed(first_start)
    later, samples = timed(lambda: index_cache.list_samples(split, class_to_idx, IMG_EXTENSIONS))
    if list(samples) != expected:
        raise RuntimeError("the kept index gave other samples than torchvision's listing")
    kept = next(p for p in index_cache.index_paths(split) if p.exists())
    return {"files": len(expected), "classes": len(classes), "torchvision_listing_s": plain,
            "first_start_s": first, "later_start_s": later, "speedup": plain / later,
            "index_mib": kept.stat().st_size / 2**20}
