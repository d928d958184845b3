"""SLURM's compact list formats, read without a call into SLURM (the process may run where no SLURM commands are
installed, e.g. inside a container): host lists like ``gpu-[01-04,07]`` and task counts like ``2(x3),1``."""

from __future__ import annotations

import re

from rsb_composer.config import ConfigError


class SlurmListError(ConfigError):
    """A SLURM variable this module cannot read; the message is one line and says what to set instead."""


_RANGE = re.compile(r"\[([^\]]*)\]")


def expand_hostlist(hostlist: str) -> list[str]:
    """SLURM's compact host lists: ``gpu-[01-04,07],login1`` -> gpu-01 ... gpu-04, gpu-07, login1
    (what ``scontrol show hostnames`` prints, without a call into SLURM)."""
    hosts: list[str] = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
        expanded = [""]
        position = 0
        for match in _RANGE.finditer(item):
            literal = item[position:match.start()]
            expanded = [f"{head}{literal}{choice}" for head in expanded for choice in _ranges(match.group(1))]
            position = match.end()
        hosts.extend(f"{head}{item[position:]}" for head in expanded)
    if not hosts:
        raise SlurmListError(f"cannot read the SLURM host list {hostlist!r}: set MASTER_ADDR to node 0's address")
    return hosts


def _ranges(spec: str) -> list[str]:
    out = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise SlurmListError(f"cannot read the SLURM host range [{spec}]: set MASTER_ADDR to node 0's address")
        out.extend(str(n).zfill(len(low)) for n in range(int(low), int(high or low) + 1))
    return out


def tasks_per_node(spec: str) -> list[int]:
    """SLURM's ``2(x3),1`` -> [2, 2, 2, 1]."""
    counts = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise SlurmListError(f"cannot read SLURM tasks per node {spec!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts
