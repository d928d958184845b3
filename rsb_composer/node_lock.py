"""A lock shared by every process of this machine, other jobs included: an ``flock`` on a file.

The kernel releases an ``flock`` when its holder exits, however it exits, so a killed run never leaves the lock
held. The file is opened read-only (enough for ``flock``) and created only when missing, so a lock file another
user created still works where ``fs.protected_regular`` forbids opening it with ``O_CREAT``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


def node_wide_dir() -> Path:
    """A folder every process of this machine sees as the same one: /dev/shm (one per machine even where a
    scheduler gives each job its own TMPDIR), else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _open(path: Path) -> int:
    while True:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        try:
            return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another process created it in between: open theirs
            continue


@contextlib.contextmanager
def node_lock(path: Path, timeout: float | None = None) -> Iterator[bool]:
    """Hold the lock on ``path`` for the body of the ``with``, which gets True; False when it could not be had
    (no such folder, or ``timeout`` seconds passed), for work that is correct, if less safe, without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open(path)
    except OSError as error:
        log.warning("no lock %s (%s); going on without it", path, error)
        yield False
        return
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("waited %.0f s for the lock %s; going on without it", timeout, path)
                    held = False
                    break
                time.sleep(POLL_SECONDS)
        yield held
    finally:
        os.close(fd)  # releases the flock
