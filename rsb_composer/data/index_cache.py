"""A kept index of an ImageFolder split, so a tree of 1.28M files is listed once, not on every start.

torchvision's ImageFolder walks every class folder on every start: minutes on a network file system. The
index written here holds the same sample list (same files, same order, same labels) and the modification time of
every folder walked. Adding, removing or renaming a file or folder changes its parent folder's modification time,
so on the next start one ``stat`` per folder (about a thousand for ImageNet) says whether the tree is unchanged;
if any differs, the tree is walked again and the index rewritten.

The index goes beside the data (``<split>.rsb-index.json`` next to the split folder, shared by every node that
mounts it) when that folder is writable, else into ``~/.cache/rsb-composer/index``. A folder modified less than
``MTIME_SLACK_NS`` before the index file was written is not trusted (a file system with coarse timestamps could
hide a change made in the same tick), so such an index is rebuilt on the next start. The index file's own
modification time is the reference, so beside the data both times come from the same file server's clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from torchvision.datasets.folder import has_file_allowed_extension

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MTIME_SLACK_NS = 2_000_000_000
SUFFIX = ".rsb-index.json"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rsb-composer" / "index"


def index_paths(directory: Path) -> list[Path]:
    """Where the index of ``directory`` may be, in the order they are tried: beside the data, then the cache."""
    directory = directory.resolve()
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:16]
    return [directory.parent / f"{directory.name}{SUFFIX}", cache_root() / f"{directory.name}-{digest}.json"]


def _walk(directory: Path, classes: list[str], extensions: tuple[str, ...]) -> tuple[dict, dict[str, int]]:
    """torchvision's make_dataset walk (same order, same filter), also noting each folder's mtime."""
    files: dict[str, list[str]] = {}
    folders = {".": os.stat(directory).st_mtime_ns}
    for name in sorted(classes):
        target = directory / name
        if not target.is_dir():
            continue
        found = files.setdefault(name, [])
        for root, _, fnames in sorted(os.walk(target, followlinks=True)):
            folders[os.path.relpath(root, directory)] = os.stat(root).st_mtime_ns
            relative = os.path.relpath(root, directory)
            found.extend(os.path.join(relative, f) for f in sorted(fnames)
                         if has_file_allowed_extension(f, extensions))
    return files, folders


def _unchanged(directory: Path, folders: dict[str, int], written_ns: int) -> bool:
    try:
        for relative, mtime in folders.items():
            now = os.stat(directory / relative).st_mtime_ns
            if now != mtime or now >= written_ns - MTIME_SLACK_NS:
                return False
    except OSError:  # a folder went away
        return False
    return True


def _load(directory: Path, classes: list[str], extensions: tuple[str, ...]) -> dict[str, list[str]] | None:
    for path in index_paths(directory):
        try:
            written_ns = path.stat().st_mtime_ns
            index = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (index.get("version") == FORMAT_VERSION and index.get("classes") == sorted(classes)
                and index.get("extensions") == list(extensions)
                and _unchanged(directory, index["folders"], written_ns)):
            log.info("%s: %d files from the kept index %s", directory, sum(map(len, index["files"].values())), path)
            return index["files"]
    return None


def _save(directory: Path, classes: list[str], extensions: tuple[str, ...], files: dict, folders: dict) -> None:
    text = json.dumps({"version": FORMAT_VERSION, "classes": sorted(classes), "extensions": list(extensions),
                       "folders": folders, "files": files}, separators=(",", ":"))
    for path in index_paths(directory):
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Several ranks may write at once: each writes its own temporary file and renames it into place.
            with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
                tmp = handle.name
                handle.write(text)
            os.replace(tmp, path)
            log.info("%s: listed %d files; index kept at %s", directory, sum(map(len, files.values())), path)
            return
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    log.warning("%s: could not keep an index anywhere (%s); the tree will be listed again next start",
                directory, ", ".join(str(p) for p in index_paths(directory)))


def list_samples(directory: Path, class_to_idx: dict[str, int], extensions: tuple[str, ...],
                 allow_empty: bool = False, use_index: bool = True) -> list[tuple[str, int]]:
    """What torchvision's ``make_dataset(directory, class_to_idx, extensions, allow_empty=...)`` returns, from
    the kept index when the tree has not changed since it was written."""
    directory = Path(directory)
    classes = list(class_to_idx)
    files = _load(directory, classes, extensions) if use_index else None
    if files is None:
        files, folders = _walk(directory, classes, extensions)
        if use_index:
            _save(directory, classes, extensions, files, folders)
    prefix = os.path.join(str(directory), "")  # os.path.join(directory, path), without its cost per file
    samples = [(prefix + path, class_to_idx[name]) for name in sorted(class_to_idx) for path in files.get(name, [])]
    empty = sorted(name for name in class_to_idx if not files.get(name))
    if empty and not allow_empty:  # torchvision's error, word for word
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                f"Supported extensions are: {', '.join(extensions)}")
    return samples
