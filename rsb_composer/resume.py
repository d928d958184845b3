"""Making autoresume survive a crash at any moment.

Composer 0.32.1 writes a checkpoint straight to its final name, then replaces the ``latest-rank0.pt`` symlink by
removing it and creating it again. A kill during the write leaves a truncated file; a kill after the write but
before the symlink leaves ``latest`` one checkpoint behind, and Composer then refuses to start because a "future"
checkpoint exists; a kill between remove and create leaves no ``latest`` at all, and autoresume would silently
start the run from scratch. Before the trainer is built, :func:`repair_latest` points ``latest`` at the newest
intact checkpoint, with a warning when that changes anything. A checkpoint is intact when its zip archive
(torch.save's format) passes its CRC checks; corrupt files are renamed ``*.corrupt`` so nothing loads them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import zipfile
from pathlib import Path

from rsb_composer.run_folder import CHECKPOINT, LATEST

log = logging.getLogger(__name__)


def is_intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def checkpoints_newest_first(folder: Path) -> list[Path]:
    found = [(int(m.group(2)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def point_latest_at(folder: Path, target: Path) -> None:
    tmp = folder / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target.name, tmp)
    os.replace(tmp, folder / LATEST)  # atomic: there is always a latest


def repair_latest(folder: Path) -> Path | None:
    """Make ``folder/latest-rank0.pt`` point at an intact checkpoint if there is one; return its target.

    Safe to call from every process of the run at once: they take turns under a file lock, and the ones after
    the first find nothing left to repair.
    """
    if not folder.is_dir():
        return None
    folder = folder.resolve()  # symlink targets resolve to absolute paths; compare like with like
    with open(folder / ".resume.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        latest = folder / LATEST
        current = latest.resolve() if latest.is_symlink() else None
        for candidate in checkpoints_newest_first(folder):
            if current is not None and candidate == current and current.exists() and is_intact(current):
                return current  # the usual case: latest is the newest checkpoint and it is whole
            if is_intact(candidate):
                point_latest_at(folder, candidate)
                if current is None or not current.exists():
                    state = "missing"
                elif candidate == current:
                    state = "a symlink to replace"
                else:
                    state = f"pointing at {current.name}, older or unreadable"
                log.warning("autoresume: %s was %s; resuming from %s, the newest intact checkpoint", latest.name,
                            state, candidate.name)
                return candidate
            corrupt = candidate.with_name(candidate.name + ".corrupt")
            os.replace(candidate, corrupt)
            log.warning("autoresume: %s is truncated or corrupt; moved aside to %s", candidate.name, corrupt.name)
        if latest.is_symlink():
            latest.unlink()  # points at nothing usable: start afresh rather than crash on load
        return None
