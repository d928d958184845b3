"""Making autoresume survive a crash at any moment.

Composer 0.32.1 writes a checkpoint straight to its final name, then replaces the ``latest-rank0.pt`` symlink by
removing it and creating it again. A kill during the write leaves a truncated file; a kill after the write but
before the symlink leaves ``latest`` one checkpoint behind, and Composer then refuses to start because a "future"
checkpoint exists; a kill between remove and create leaves no ``latest`` at all, and autoresume would silently
start the run from scratch. Before the trainer is built, :func:`repair_latest` points ``latest`` at the newest
intact checkpoint, with a warning when that changes anything. A checkpoint is intact when its zip archive
(torch.save's format) passes its CRC checks; corrupt files are renamed ``*.corrupt`` so nothing loads them.

A resume is also held to what its checkpoint fixes (the network, its algorithms, the optimizer, the global
batch, and in the middle of an epoch the number of devices): :func:`reconcile_resume`,
:func:`check_resume_classes`, :func:`check_resume_geometry`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from composer.utils import dist

from rsb_composer.algorithms import REGISTRY, canonical_arguments, fixed_by_checkpoint
from rsb_composer.config import Config, ConfigError
from rsb_composer.node_lock import node_lock
from rsb_composer.run_folder import CHECKPOINT, LATEST, RunFolder

if TYPE_CHECKING:
    from composer import Trainer

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
    with node_lock(folder / ".resume.lock"):  # flock, or a lock file where the filesystem has no flock
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
# checkpoint's state does not carry over (torch refuses other groups; Composer skips another class's state).
STRUCTURAL_OPTIMIZER_KEYS = ("name", "decay_bn_and_bias")


def has_own_checkpoint(run: RunFolder) -> bool:
    """Whether the run folder holds a complete checkpoint, so that this start resumes it (autoresume)."""
    return run.checkpoints.is_dir() and any(_complete(p) for p in checkpoints_newest_first(run.checkpoints))


def resumed_run_settings(run: RunFolder) -> dict[str, Any] | None:
    """The run folder's config.yaml when this start resumes the run (it holds a complete checkpoint), else None.

    Complete: its zip directory, written last, is there (a file cut short by a kill has none), so every rank gets
    the same answer before and after local rank 0's :func:`repair_latest` moves such files aside. (The repair's
    full CRC check would read the whole checkpoint once per rank.)
    """
    if not run.config.is_file() or not has_own_checkpoint(run):
        return None
    try:
        previous = yaml.safe_load(run.config.read_text())
    except (OSError, yaml.YAMLError):
        previous = None
    if not isinstance(previous, dict):
        log.warning("resuming: %s is unreadable; the command is not compared with the run's settings", run.config)
        return None
    return previous


def reconcile_resume(config: Config, previous: dict[str, Any]) -> None:
    """Before a resume, hold the command to what the checkpoint fixes (``previous``: the run's config.yaml).

    - Another ``model.arch``, or an algorithm the checkpoint is bound to (:func:`~rsb_composer.algorithms.
      fixed_by_checkpoint`) switched on or off or given other arguments: refused with a ConfigError.
    - ``optimizer.name`` or ``optimizer.decay_bn_and_bias`` changed: refused (the optimizer's state would not
      carry over).
    - Any other ``optimizer.*`` changed: the checkpoint restores the optimizer's parameter groups (LR, momentum,
      weight decay, betas, ...) and the schedule's base LRs, so the run's values would train on while
      config.yaml showed the new ones; the run's values are kept, and a warning names what was dropped.

    Everything else follows the command.
    """
    was_arch = _section(previous, "model").get("arch")
    if was_arch is not None and config.model.arch != was_arch:
        raise ConfigError(f"model.arch={config.model.arch}: this run trains {was_arch}, whose checkpoint would not "
                          f"load into it; resume with model.arch={was_arch}, or start a new run (run_name=...)")
    was_algorithms = _section(previous, "algorithms")
    for name in sorted(set(was_algorithms) | set(config.algorithms)):
        if name not in REGISTRY or not fixed_by_checkpoint(name):
            continue
        old, new = was_algorithms.get(name), config.algorithms.get(name)
        if canonical_arguments(name, old) != canonical_arguments(name, new):
            raise ConfigError(
                f"algorithms.{name}={_yaml(new)}: this run has algorithms.{name}={_yaml(old)}, and its checkpoint "
                f"holds the network or optimizer built with that; resume with algorithms.{name}={_yaml(old)}, or "
                "start a new run (run_name=...)"
            )
    _keep_optimizer(config, _section(previous, "optimizer"))


def check_resume_classes(previous: dict[str, Any], num_classes: int) -> None:
    """Refuse a resume whose data (or ``model.num_classes``) gives another number of classes: the checkpoint's
    classifier has the run's."""
    was = _section(previous, "model").get("num_classes")
    if was is not None and was != num_classes:
        raise ConfigError(f"model.num_classes={num_classes} (from the data or the command): this run's classifier "
                          f"has {was} classes; resume with the run's data.path and model.num_classes, or start a "
                          "new run (run_name=...)")


def _complete(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _section(previous: dict[str, Any], key: str) -> dict[str, Any]:
    section = previous.get(key)
    return section if isinstance(section, dict) else {}


def _yaml(value: Any) -> str:
    """A value as the command line spells it: null, true, {rho: 0.5}, [0.9, 0.999]."""
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("...").strip()


def _keep_optimizer(config: Config, was: dict[str, Any]) -> None:
    now = dataclasses.asdict(config.optimizer)
    changed = {key: (was[key], value) for key, value in now.items() if key in was and was[key] != value}
    for key in STRUCTURAL_OPTIMIZER_KEYS:
        if key in changed:
            old, new = changed[key]
            raise ConfigError(
                f"optimizer.{key}={_yaml(new)}: this run was trained with optimizer.{key}={_yaml(old)} and its "
                f"checkpoint holds that optimizer's state; resume with optimizer.{key}={_yaml(old)}, or start a "
                "new run (run_name=...)"
            )
    if changed:
        if dist.get_global_rank() == 0:  # every rank keeps the run's values; one says so
            log.warning(
                "resuming: %s not applied: the optimizer and LR schedule continue from the checkpoint with this "
                "run's values (kept in config.yaml); start a new run (run_name=...) to train with them",
                ", ".join(f"optimizer.{key}={_yaml(new)} (this run: {_yaml(old)})"
                          for key, (old, new) in changed.items()),
            )
        config.optimizer = dataclasses.replace(config.optimizer, **{key: old for key, (old, _) in changed.items()})


def checkpoint_world_size(trainer: Trainer) -> int | None:
    """How many processes saved the checkpoint the trainer resumed from (None on a fresh start).

    Composer 0.32.1 saves one RNG state per rank and keeps the loaded list (``Trainer._rng_state``) until the
    next epoch starts; its length is that world size (the checkpoint's metadata, which also has it, is not kept).
    """
    states = getattr(trainer, "_rng_state", None)
    return len(states) if states else None


def check_resume_geometry(trainer: Trainer, global_batch: int, world_size: int) -> None:
    """Refuse a resume with another global batch, or on another number of devices from the middle of an epoch.

    The LR schedule counts optimizer steps and the linear scaling rule set the LR for the old global batch: a
    checkpoint from another global batch would shift the warmup and cosine and mis-scale the LR, silently. With
    the same global batch (``data.global_batch_size``) the steps and LR are the same on any number of devices,
    and an epoch-end checkpoint continues on another number of devices. The rest of a partial epoch is the
    epoch's data order as the old number of devices split it (Composer replays the epoch's first batches to get
    there), so a mid-epoch checkpoint continues only on as many devices as saved it.
    """
    state = trainer.state
    done = int(state.timestamp.batch)
    if not done:
        return
    if int(state.timestamp.sample) != done * global_batch:
        was = int(state.timestamp.sample) / done
        raise ConfigError(
            f"the checkpoint in this run's folder was trained with a global batch of {was:g}, now {global_batch}: "
            "resume with the original global batch (data.global_batch_size, or data.batch_size x world size), or "
            "start a new run (run_name=...)"
        )
    saved_by = checkpoint_world_size(trainer)
    if saved_by is None or saved_by == world_size:
        return
    in_epoch, epoch = int(state.timestamp.batch_in_epoch), int(state.timestamp.epoch)
    if in_epoch:
        raise ConfigError(
            f"the checkpoint in this run's folder was saved by {saved_by} devices in the middle of epoch {epoch} "
            f"(after its batch {in_epoch}), now {world_size} devices: the rest of that epoch follows the data order "
            f"of {saved_by} devices. Resume on {saved_by} devices until the epoch ends (checkpoints.save_interval=1ep "
            "saves there), or move the mid-epoch ep*-ba*-rank*.pt files out of checkpoints/ so the run resumes from "
            "its last epoch-end checkpoint"
        )
    if dist.get_global_rank() == 0:
        log.info("resuming at the end of epoch %d on %d devices (saved by %d): global batch %d kept", epoch,
                 world_size, saved_by, global_batch)
    # Composer then warns that the checkpoint holds another number of RNG states than ranks: expected here.
    warnings.filterwarnings("ignore", message=r"\s*The current world size \(")
