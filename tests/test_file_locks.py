"""The one file lock (rsb_composer.node_lock) where the filesystem has no flock (Lustre without -o flock, some NFS):
``fcntl.flock`` is made to fail as those filesystems make it fail, and the O_EXCL owner file takes over: never a
crash, never two holders, a stale owner taken over by the stated rule."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsb_composer import node_lock as locks
from rsb_composer.checkpoints.resume import repair_latest
from tests.helpers import REPO


@pytest.fixture(params=[errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK])
def no_flock(request, monkeypatch):
    def refuse(fd, operation):
        raise OSError(request.param, os.strerror(request.param))

    monkeypatch.setattr(locks.fcntl, "flock", refuse)
    return request.param


def test_the_run_folders_lock_works_without_flock(no_flock, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert repair_latest(folder) is None  # no checkpoint yet: nothing to repair, and no traceback
    assert not (folder / ".resume.lock.owner").exists()  # released


def test_an_unsupported_flock_is_not_confused_with_other_errors(monkeypatch, tmp_path):
    def broken(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(locks.fcntl, "flock", broken)
    with pytest.raises(OSError, match="Bad file descriptor"), locks.node_lock(tmp_path / "x.lock"):
        pass


HOLDER = """
import errno, os, sys, time
from pathlib import Path
from rsb_composer import node_lock as locks
def refuse(fd, operation):
    raise OSError(errno.ENOSYS, "Function not implemented")
locks.fcntl.flock = refuse
with locks.node_lock(Path(sys.argv[1])) as held:
    assert held
    release = Path(sys.argv[2])
    while not release.exists():
        time.sleep(0.02)
"""


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear in {seconds} s"
        time.sleep(0.02)


def test_never_two_holders_without_flock(no_flock, tmp_path, caplog):
    lock, release = tmp_path / "index.lock", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(release)], cwd=REPO)
    try:
        _wait_for(lock.with_name("index.lock.owner"))
        with caplog.at_level(logging.WARNING), locks.node_lock(lock, timeout=0.3) as held:
            assert held is False  # the other process holds it
        assert f"held by {socket.gethostname()} {holder.pid}" in caplog.text
        release.touch()
        assert holder.wait(timeout=60) == 0
        with locks.node_lock(lock, timeout=5) as held:
            assert held is True
    finally:
        release.touch()
        holder.wait(timeout=60)


def test_a_stale_owner_is_taken_over_by_the_stated_rule(no_flock, tmp_path, caplog):
    lock = tmp_path / "toy.lock"
    owner = lock.with_name("toy.lock.owner")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner.write_text(f"{socket.gethostname()} {dead.pid} 4242 0")  # this host, no longer running
    with caplog.at_level(logging.WARNING), locks.node_lock(lock, timeout=5) as held:
        assert held and owner.read_text().split()[1] == str(os.getpid())
    assert "no longer running on this host" in caplog.text and "job 4242" in caplog.text
    assert not owner.exists()

    owner.write_text("another-host 123 - 0")  # another host, recent: it may still hold it
    with locks.node_lock(lock, timeout=0.3) as held:
        assert held is False
    old = time.time() - locks.STALE_AFTER_S - 60
    os.utime(owner, (old, old))  # ... and once it is older than the rule's limit, it is taken over
    with locks.node_lock(lock, timeout=5) as held:
        assert held is True
