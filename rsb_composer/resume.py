"""Making autoresume survive a crash at any moment.

Composer 0.32.1 writes a checkpoint straight to its final name, then replaces the ``latest-rank0.pt`` symlink by
removing it and creating it again. A kill during the write leaves a truncated file; a kill after the write but
before the symlink leaves ``latest`` one checkpoint behind, and Composer then refuses to start because a "future"
checkpoint exists; a kill between remove and create leaves no ``latest`` at all, and autoresume would silently
start the run from scratch. Before the trainer is built, :func:`repair_latest` points ``latest`` at the newest
intact checkpoint, with a warning when that changes anything. A checkpoint is intact when its zip archive
(torch.save's format) passes its CRC checks; corrupt files are renamed ``*.corrupt`` so nothing loads them.

A resume is also held to what its checkpoint fixes (the network's algorithms, the optimizer):
:func:`reconcile_resume`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import yaml

from rsb_composer.algorithms import NETWORK_ALGORITHMS
from rsb_composer.config import Config, ConfigError
from rsb_composer.run_folder import CHECKPOINT, LATEST, RunFolder

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


# Keys that change the optimizer's structure: its class, or how the parameters split into groups. The
# checkpoint's state cannot be loaded into the new one (torch refuses other groups; another class drops it).
STRUCTURAL_OPTIMIZER_KEYS = ("name", "decay_bn_and_bias")


def reconcile_resume(config: Config, run: RunFolder) -> None:
    """Before a resume, hold the command to what the checkpoint fixes, comparing with the run's config.yaml.

    - Another ``model.arch``, or algorithms that rebuild the network
      (:data:`~rsb_composer.algorithms.NETWORK_ALGORITHMS`) switched on or off or given other arguments: refused
      with a ConfigError (the checkpoint's weights would not load, or only in part).
    - ``optimizer.name`` or ``optimizer.decay_bn_and_bias`` changed: refused (the optimizer's state would not).
    - Any other ``optimizer.*`` changed: the checkpoint restores the optimizer's parameter groups (LR, momentum,
      weight decay, betas, ...) and the schedule's base LRs, so the run's values would train on while
      config.yaml showed the new ones; the run's values are kept, and a warning names what was dropped.

    A run is resumed when its folder holds a checkpoint. Everything else follows the command.
    """
    if not run.config.is_file() or not run.checkpoints.is_dir() or not checkpoints_newest_first(run.checkpoints):
        return
    try:
        previous = yaml.safe_load(run.config.read_text())
        was_arch = (previous.get("model") or {}).get("arch")
        was_algorithms = previous.get("algorithms") or {}
        was_optimizer = previous.get("optimizer") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        log.warning("resuming: %s is unreadable; the command is not compared with the run's settings", run.config)
        return
    _refuse_other_network(config, was_arch, was_algorithms)
    _keep_optimizer(config, was_optimizer)


def _refuse_other_network(config: Config, was_arch: str | None, was: dict[str, Any]) -> None:
    if was_arch is not None and config.model.arch != was_arch:
        raise ConfigError(f"model.arch={config.model.arch}: this run trains {was_arch}, whose checkpoint would not "
                          f"load into it; resume with model.arch={was_arch}, or start a new run (run_name=...)")
    for name in NETWORK_ALGORITHMS:
        old, new = was.get(name), config.algorithms.get(name)
        if old != new:
            raise ConfigError(
                f"algorithms.{name}: {_setting(new)} now, {_setting(old)} in this run; it rebuilds the "
                f"network, so the run's checkpoint would not load (or only in part): resume with the run's "
                f"algorithms.{name} (see its config.yaml), or start a new run (run_name=...)"
            )


def _setting(args: Any) -> str:
    return "off" if args is None else str(args)


def _keep_optimizer(config: Config, was: dict[str, Any]) -> None:
    now = dataclasses.asdict(config.optimizer)
    changed = {key: (was[key], value) for key, value in now.items() if key in was and was[key] != value}
    for key in STRUCTURAL_OPTIMIZER_KEYS:
        if key in changed:
            old, new = changed[key]
            raise ConfigError(
                f"optimizer.{key}={new}: this run was trained with optimizer.{key}={old} and its checkpoint holds "
                f"that optimizer's state; resume with optimizer.{key}={old}, or start a new run (run_name=...)"
            )
    if changed:
        log.warning(
            "resuming: %s not applied: the optimizer and LR schedule continue from the checkpoint with this run's "
            "values (kept in config.yaml); start a new run (run_name=...) to train with them",
            ", ".join(f"optimizer.{key}={new!r} (this run: {old!r})" for key, (old, new) in changed.items()),
        )
        config.optimizer = dataclasses.replace(config.optimizer, **{key: old for key, (old, _) in changed.items()})
