"""A lock shared by every process of this machine, jobs included: an ``flock`` on a file.

The kernel releases an ``flock`` when its holder exits, however it exits, so a killed run never leaves the lock
held. The file is opened read-only (enough for ``flock``), so one created by another user still works.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """Hold the lock on ``path`` for the body of the ``with``; without it when the file cannot be opened
    (a read-only file system), since the lock only orders work that is correct, if slower, without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as error:
        log.debug("no lock %s (%s); going on without it", path, error)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


_held: dict[Path, int] = {}


def hold_for_process(path: Path) -> bool:
    """Take the lock on ``path`` without waiting and keep it until this process (and the workers it forks)
    exits; False when another process holds it."""
    if path in _held:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held[path] = fd
    return True
