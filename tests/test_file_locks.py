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

import pytest

from rsb_composer import node_lock as locks
from rsb_composer.checkpoints.resume import repair_latest
from tests.helpers import REPO, wait_for


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
    release, deadline = Path(sys.argv[2]), time.monotonic() + 120
    while not release.exists():  # held until the test says so (or gives up)
        assert time.monotonic() < deadline, "the test never released the lock"
        time.sleep(0.02)
"""


def test_never_two_holders_without_flock(no_flock, tmp_path, caplog):
    lock, release = tmp_path / "index.lock", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(release)], cwd=REPO)
    try:
        wait_for(lock.with_name("index.lock.owner").exists, 60, "the holder's owner file", holder)
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


CONTENDER = """
import errno, os, sys, time
from pathlib import Path
from rsb_composer import node_lock as locks
def refuse(fd, operation):
    raise OSError(errno.ENOSYS, "Function not implemented")
locks.fcntl.flock = refuse
judge = locks._stale
def slow_judge(owner):  # a slow shared filesystem: time passes between reading the owner file and acting on it
    why = judge(owner)
    time.sleep(0.05)
    return why
locks._stale = slow_judge
lock, journal, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
deadline = time.monotonic() + 120
while not go.exists():  # all contenders start together
    assert time.monotonic() < deadline, "the test never said go"
    time.sleep(0.005)
with locks.node_lock(lock, timeout=60) as held:
    assert held
    with open(journal, "a") as out:
        out.write(f"in {os.getpid()}\\n")
    time.sleep(0.1)  # inside long enough that a second holder would write its "in" before this "out"
    with open(journal, "a") as out:
        out.write(f"out {os.getpid()}\\n")
"""


def test_contenders_facing_one_stale_owner_hold_the_lock_one_at_a_time(tmp_path):
    """Every rank of a restarted job meets the dead run's owner file at once: one takes it over, and the rest
    queue behind it (a takeover judged on a stale reading must not remove the owner file that replaced it)."""
    lock, journal, go = tmp_path / "resume.lock", tmp_path / "journal", tmp_path / "go"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.with_name("resume.lock.owner").write_text(f"{socket.gethostname()} {dead.pid} - 0 0")
    contenders = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(lock), str(journal), str(go)], cwd=REPO)
                  for _ in range(4)]
    go.touch()
    assert [c.wait(timeout=120) for c in contenders] == [0, 0, 0, 0]
    lines = journal.read_text().split("\n")[:-1]
    assert len(lines) == 8
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # strictly alternating: never two inside
        assert enter.startswith("in ") and leave == "out " + enter[3:]


def test_an_owner_from_an_earlier_start_of_this_slurm_job_is_stale(no_flock, tmp_path, monkeypatch, caplog):
    lock = tmp_path / "resume.lock"
    lock.with_name("resume.lock.owner").write_text(f"gpu-07 4321 777 0 {time.time():.0f}")  # recent, other host
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # this job was requeued once since
    with caplog.at_level(logging.WARNING), locks.node_lock(lock, timeout=5) as held:
        assert held
    assert "left by start 0 of this job (777)" in caplog.text
