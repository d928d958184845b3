"""Which device the trainer runs on, the precision it can use there, and the CPUs it may use."""

from __future__ import annotations

import logging
import os

import torch

from rsb_composer.config import check_choice

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "amp_fp16", "amp_bf16")


def check_precision(precision: str) -> None:
    check_choice("precision", precision, PRECISIONS)


def resolve_device() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def visible_gpus() -> int:
    return torch.cuda.device_count()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a SLURM task's binding, a container's CPU set), not all
    the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_report(num_workers: int) -> tuple[str, str | None]:
    """The start-up line about this process's CPUs and ``data.num_workers``, and a warning when they share too few
    (SLURM 22.05 to 23.02 bind an srun task to one CPU unless srun itself is given --cpus-per-task)."""
    cpus = usable_cpus()
    line = f"CPUs: {cpus} usable by this process (its affinity mask) for it and data.num_workers={num_workers}"
    if cpus >= num_workers + 1:
        return line, None
    return line, (f"this process may use {cpus} CPU{'s' if cpus != 1 else ''} for itself and {num_workers} data "
                  "workers: they share them and the input pipeline slows down; give each task num_workers + 2 CPUs "
                  "(under SLURM: --cpus-per-task, passed on to srun as scripts/slurm/train.sbatch does) or lower "
                  "data.num_workers")


_warned: set[str] = set()


def resolve_precision(requested: str, device: str) -> str:
    """Composer refuses mixed precision on the CPU; fall back to fp32 there, saying so once."""
    if device == "cpu" and requested != "fp32":
        if requested not in _warned:  # the benchmarks build several trainers in one process
            _warned.add(requested)
            log.warning("precision=%s needs a GPU; training in fp32 on the CPU", requested)
        return "fp32"
    return requested
