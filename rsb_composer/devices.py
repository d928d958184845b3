"""Which device the trainer runs on and the precision it can use there."""

from __future__ import annotations

import logging

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


_warned: set[str] = set()


def resolve_precision(requested: str, device: str) -> str:
    """Composer refuses mixed precision on the CPU; fall back to fp32 there, saying so once."""
    if device == "cpu" and requested != "fp32":
        if requested not in _warned:  # the benchmarks build several trainers in one process
            _warned.add(requested)
            log.warning("precision=%s needs a GPU; training in fp32 on the CPU", requested)
        return "fp32"
    return requested
