"""A kept index of an ImageFolder split, so a tree of 1.28M files is listed once, not on every start.

torchvision's ImageFolder walks every class folder on every start: minutes on a network file system. The
index written here holds the same sample list (same files, same order, same labels) and the modification time of
every folder walked, taken just before that folder was listed. Adding, removing or renaming a file or folder
changes its parent folder's modification time, so on the next start one ``stat`` per folder (about a thousand
for ImageNet) says whether the tree is unchanged; if any differs, the tree is walked again and the index
rewritten.

A file system with coarse timestamps (one second, two on FAT) could hide a change made in the same tick as a
folder's listing; so a folder modified less than ``MTIME_SLACK_NS`` before the walk began is not trusted, and
its index is rebuilt on the next start. The walk's start is read from the clock of the file system the index
goes to (the modification time of a file created there), which beside the data is the data's own server.

Object-store mounts (gcsfuse, s3fs, Mountpoint for S3) often give every folder the same fixed modification
time, which would never change; no index is kept for a tree whose folders all share one time.

The index goes beside the data (``train.rsb-index.npz`` and ``val.rsb-index.npz`` next to the split folders,
shared by every node that mounts them) when that folder is writable, else into ``~/.cache/rsb-composer/index``.
The processes of one node take turns through a lock, so the first lists and the others read its index.

The file is a numpy ``.npz``: the relative paths' bytes back to back, each path's length, and a JSON header (the
classes, extensions, folder times and files per class). Reading it makes no Python object per file, and gives the
arrays :class:`rsb_composer.data.sample_index.SampleIndex` holds; a walk builds the same arrays a class at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import has_file_allowed_extension

from rsb_composer.data.sample_index import SampleIndex
from rsb_composer.node_lock import node_lock

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
MTIME_SLACK_NS = 2_000_000_000
SUFFIX = ".rsb-index.npz"


@dataclass
class Listing:
    """A split's files in torchvision's order: relative paths' UTF-8 bytes back to back, each one's length, and
    how many belong to each class (classes in sorted order, each class's files together)."""

    paths: bytes
    lengths: np.ndarray
    counts: dict[str, int]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rsb-composer" / "index"


def index_paths(directory: Path) -> list[Path]:
    """Where the index of ``directory`` may be, in the order they are tried: beside the data, then the cache."""
    directory = directory.resolve()
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:16]
    return [directory.parent / f"{directory.name}{SUFFIX}", cache_root() / f"{directory.name}-{digest}.npz"]


def _list_folder(top: str, folders: dict[str, int], directory: str) -> list[tuple[str, list[str]]]:
    """(folder, file names) for ``top`` and every folder below it, as os.walk(followlinks=True) sees them; each
    folder's mtime is read before it is listed, so a change during the walk always shows up as a newer mtime."""
    folders[os.path.relpath(top, directory)] = os.stat(top).st_mtime_ns
    files, subfolders = [], []
    with os.scandir(top) as entries:
        for entry in entries:
            (subfolders if entry.is_dir() else files).append(entry.name)
    listed = [(top, files)]
    for name in subfolders:
        listed.extend(_list_folder(os.path.join(top, name), folders, directory))
    return listed


def _walk(directory: Path, classes: list[str], extensions: tuple[str, ...]) -> tuple[Listing, dict[str, int]]:
    """torchvision's make_dataset walk (same order, same filter), noting each folder's mtime. Each class's names
    become bytes before the next class is walked, so no list of every file's name is ever held."""
    root = str(directory)
    folders = {".": os.stat(root).st_mtime_ns}
    chunks: list[bytes] = []
    lengths: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for name in sorted(classes):
        target = os.path.join(root, name)
        if not os.path.isdir(target):
            continue
        found = []
        for folder, names in sorted(_list_folder(target, folders, root)):
            relative = os.path.relpath(folder, root)
            found.extend(os.path.join(relative, f).encode() for f in sorted(names)
                         if has_file_allowed_extension(f, extensions))
        chunks.append(b"".join(found))
        lengths.append(np.fromiter(map(len, found), dtype=np.int64, count=len(found)))
        counts[name] = len(found)
    return Listing(b"".join(chunks), np.concatenate([np.zeros(0, np.int64), *lengths]), counts), folders


def _trusted(directory: Path, folders: dict[str, int], walk_start_ns: int) -> bool:
    try:
        for relative, mtime in folders.items():
            now = os.stat(directory / relative).st_mtime_ns
            if now != mtime or mtime >= walk_start_ns - MTIME_SLACK_NS:
                return False
    except OSError:  # a folder went away
        return False
    return True


def _load(directory: Path, classes: list[str], extensions: tuple[str, ...]) -> Listing | None:
    for path in index_paths(directory):
        try:
            with np.load(path, allow_pickle=False) as arrays:
                index = json.loads(arrays["header"].tobytes())
                if not (index["version"] == FORMAT_VERSION and index["classes"] == sorted(classes)
                        and index["extensions"] == list(extensions)
                        and _trusted(directory, index["folders"], index["walk_start_ns"])):
                    continue
                listing = Listing(arrays["paths"].tobytes(), arrays["lengths"].astype(np.int64), index["counts"])
            if sum(listing.counts.values()) != len(listing.lengths) or int(listing.lengths.sum()) != len(listing.paths):
                continue
            log.info("%s: %d files from the kept index %s", directory, len(listing.lengths), path)
            return listing
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError):  # absent, unreadable, not ours
            continue
    return None


def _clock(directory: Path) -> int | None:
    """The time now on the clock of the file system the index will most likely go to (the first location that
    takes a file): beside the data, that is the data's own server."""
    for path in index_paths(directory):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe.") as probe:
                return os.fstat(probe.fileno()).st_mtime_ns
        except OSError:
            continue
    return None


def _save(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Processes on other nodes may write at once: each writes its own temporary file and renames it into place.
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            tmp = handle.name
            np.savez(handle, **arrays)
            os.fchmod(handle.fileno(), 0o644)  # readable by everyone who reads the data, not only its writer
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def _build(directory: Path, classes: list[str], extensions: tuple[str, ...]) -> Listing:
    walk_start_ns = _clock(directory)
    listing, folders = _walk(directory, classes, extensions)
    if len(folders) > 1 and len(set(folders.values())) == 1:
        log.warning("%s: every folder has the same modification time (an object-store mount?), so changes "
                    "could not be detected; no index kept, the tree will be listed on every start", directory)
        return listing
    if walk_start_ns is not None:
        header = json.dumps({"version": FORMAT_VERSION, "classes": sorted(classes), "extensions": list(extensions),
                             "walk_start_ns": walk_start_ns, "folders": folders, "counts": listing.counts},
                            separators=(",", ":")).encode()
        # Path lengths fit 16 bits (PATH_MAX is 4096 bytes on Linux).
        arrays = {"header": np.frombuffer(header, np.uint8), "paths": np.frombuffer(listing.paths, np.uint8),
                  "lengths": listing.lengths.astype(np.uint16)}
        for path in index_paths(directory):
            if _save(path, arrays):
                log.info("%s: listed %d files; index kept at %s", directory, len(listing.lengths), path)
                return listing
    log.warning("%s: could not keep an index anywhere (%s); the tree will be listed again next start",
                directory, ", ".join(str(p) for p in index_paths(directory)))
    return listing


def list_samples(directory: Path, class_to_idx: dict[str, int], extensions: tuple[str, ...],
                 allow_empty: bool = False, use_index: bool = True) -> SampleIndex:
    """The samples torchvision's ``make_dataset(directory, class_to_idx, extensions, allow_empty=...)`` lists, in
    its order, as arrays; from the kept index when the tree has not changed since it was written."""
    directory = Path(directory)
    classes = list(class_to_idx)
    if use_index:
        listing = _load(directory, classes, extensions)
        if listing is None:
            with node_lock(cache_root() / f".{index_paths(directory)[1].stem}.lock"):
                listing = _load(directory, classes, extensions) or _build(directory, classes, extensions)
    else:
        listing, _ = _walk(directory, classes, extensions)
    empty = sorted(name for name in class_to_idx if not listing.counts.get(name))
    if empty and not allow_empty:  # torchvision's error, word for word
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                f"Supported extensions are: {', '.join(extensions)}")
    names = sorted(class_to_idx)
    labels = np.repeat(np.array([class_to_idx[n] for n in names], dtype=np.int64),
                       [listing.counts.get(n, 0) for n in names])
    return SampleIndex.build(str(directory), listing.paths, listing.lengths, labels)
