"""The project's one file lock, for every process that shares a folder: the run folder's checkpoints (every rank of
every node), the index cache under ``~/.cache`` (often NFS), the toy set and /dev/shm.

It is an ``flock`` on a file where the filesystem has one: the kernel releases it when its holder exits, however it
exits, so a killed run never leaves it held. The file is opened read-only (enough for ``flock``) and created only
when missing, so a lock file another user created still works where ``fs.protected_regular`` forbids opening it
with ``O_CREAT``.

Lustre mounted without ``flock`` and some NFS setups answer ``flock`` with ENOSYS, EOPNOTSUPP or ENOLCK. There the
lock falls back to a lock file created with ``O_EXCL`` (atomic on NFS v3 and later and on Lustre) beside it,
``NAME.owner``, naming the holder's host, process id, SLURM job and restart count, removed when the holder is done.
The stale-lock rule: such a file is taken over, with a warning naming its owner, when the owner ran on this host
and is no longer running, when it belongs to an earlier start of this same SLURM job (a requeued job's previous
allocation is gone), or when it is older than :data:`STALE_AFTER_S` (an owner on another host cannot be asked;
nothing here holds a lock that long). Never two holders at once: a takeover happens under a second ``O_EXCL`` file,
``NAME.owner.takeover``, and judges the owner file again inside it, so a contender that judged it stale a moment
before another replaced it removes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
STALE_AFTER_S = 3600.0
TAKEOVER_STALE_S = 60.0  # a takeover file is held for a moment; one this old was left by a crash
# flock's answers on filesystems that do not support it (Lustre without -o flock, some NFS mounts)
NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


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
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        held = _flock(fd, path, deadline, timeout)
    except OSError as error:
        os.close(fd)
        if error.errno not in NO_FLOCK:
            raise
        log.debug("%s: flock unsupported here (%s); an O_EXCL lock file instead", path, error)
        with _owner_file_lock(path.with_name(path.name + ".owner"), deadline, timeout) as held:
            yield held
        return
    try:
        yield held
    finally:
        os.close(fd)  # releases the flock


def _flock(fd: int, path: Path, deadline: float | None, timeout: float | None) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log.warning("waited %.0f s for the lock %s; going on without it", timeout, path)
                return False
            time.sleep(POLL_SECONDS)


def _job() -> tuple[str, int]:
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return os.environ.get("SLURM_JOB_ID", "-"), int(restarts) if restarts.isdigit() else 0


def _identity() -> str:
    job, restarts = _job()
    return f"{socket.gethostname()} {os.getpid()} {job} {restarts} {time.time():.0f}"


def _stale(owner: Path) -> str | None:
    """Why ``owner``'s holder can be taken over (see the module's rule), or None while it may still hold it."""
    try:
        text = owner.read_text()
        age = time.time() - owner.stat().st_mtime
    except OSError:
        return None  # gone already, or being written: look again
    host, pid, job, restarts = ([*text.split(), "?", "0", "-", "0"])[:4]
    this_job, this_restarts = _job()
    if job != "-" and job == this_job and restarts.isdigit() and int(restarts) < this_restarts:
        return f"it was left by start {restarts} of this job ({job}), which SLURM has requeued since"
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"its owner (pid {pid}, job {job}) is no longer running on this host"
        except PermissionError:
            pass  # running, as another user
    if age > STALE_AFTER_S:
        return f"it is {age / 60:.0f} minutes old (owner {host} pid {pid}, job {job})"
    return None


def _holder(owner: Path) -> str:
    try:
        return owner.read_text().strip() or "?"
    except OSError:
        return "?"


def _take_over_if_stale(owner: Path) -> None:
    """Remove ``owner`` if it is stale, judged again under the takeover file so that no two contenders remove (and
    then create) owner files one after the other."""
    guard = owner.with_name(owner.name + ".takeover")
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                guard.unlink()  # left by a contender that crashed mid-takeover
        return
    os.close(fd)
    try:
        why = _stale(owner)
        if why is not None:
            owner.unlink(missing_ok=True)
            log.warning("lock %s taken over: %s", owner, why)
    finally:
        guard.unlink(missing_ok=True)


@contextlib.contextmanager
def _owner_file_lock(owner: Path, deadline: float | None, timeout: float | None) -> Iterator[bool]:
    said = False
    while True:
        try:
            fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _stale(owner) is not None:
                _take_over_if_stale(owner)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("waited %.0f s for the lock %s (held by %s); going on without it", timeout, owner,
                            _holder(owner))
                yield False
                return
            if not said:
                log.info("waiting for the lock %s, held by %s (host pid job restart time)", owner, _holder(owner))
                said = True
            time.sleep(POLL_SECONDS)
    try:
        os.write(fd, _identity().encode())
    finally:
        os.close(fd)
    try:
        yield True
    finally:
        owner.unlink(missing_ok=True)
