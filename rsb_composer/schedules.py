"""The learning-rate schedule: linear warmup, then a half cosine, as a multiplier of the peak LR per step."""

from __future__ import annotations

import math

import torch
from composer.core import Time, TimeUnit
from torch.optim.lr_scheduler import LambdaLR

from rsb_composer.config import SchedulerConfig, check


def lr_multiplier(epoch: float, total_epochs: float, cfg: SchedulerConfig) -> float:
    """The LR as a fraction of the peak at fractional ``epoch`` of a ``total_epochs`` run.

    Warmup over ``W = warmup_epochs`` epochs as in the deployment notes (torchvision's LinearLR with
    start_factor=0.01): epoch 0 starts at ``warmup_start_factor``, the factor rises linearly to 1 at the start
    of epoch W-1 (the last warmup epoch runs at the peak). From epoch W a half cosine falls to
    ``min_lr_factor`` at the end of training. Between epoch boundaries the value is interpolated per step.
    """
    warmup = cfg.warmup_epochs
    ramp = warmup - 1.0
    if epoch < warmup and ramp > 0:
        start = cfg.warmup_start_factor
        return start + (1.0 - start) * min(epoch / ramp, 1.0)
    if epoch < warmup:
        return 1.0
    progress = min(max((epoch - warmup) / max(total_epochs - warmup, 1e-12), 0.0), 1.0)
    floor = cfg.min_lr_factor
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def total_epochs(max_duration: str, steps_per_epoch: int) -> float:
    duration = Time.from_timestring(max_duration)
    if duration.unit == TimeUnit.EPOCH:
        return float(duration.value)
    return duration.value / steps_per_epoch  # batches


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_duration: str,
                    steps_per_epoch: int) -> LambdaLR:
    """A LambdaLR stepped once per batch; its step count (checkpointed) is the index of the next batch.

    A plain closure rather than a Composer scheduler: Composer steps schedulers before advancing its
    timestamp, so a ComposerScheduler sees batch k-1 when setting the LR of batch k, and the first two batches
    share an LR. Counting steps puts epoch e's first batch exactly at lr_multiplier(e).
    """
    epochs = total_epochs(max_duration, steps_per_epoch)

    def multiplier(step: int) -> float:
        return lr_multiplier(step / steps_per_epoch, epochs, cfg)

    return LambdaLR(optimizer, multiplier)


def check_scheduler(cfg: SchedulerConfig, max_duration: str) -> None:
    check(cfg.warmup_epochs == 0 or cfg.warmup_epochs >= 1, "scheduler.warmup_epochs", cfg.warmup_epochs,
          "must be 0 (none) or at least 1: epoch 0 starts the ramp and epoch warmup_epochs - 1 runs at the peak")
    check(0 <= cfg.warmup_start_factor <= 1, "scheduler.warmup_start_factor", cfg.warmup_start_factor,
          "must be in [0, 1]")
    check(0 <= cfg.min_lr_factor < 1, "scheduler.min_lr_factor", cfg.min_lr_factor, "must be in [0, 1)")
    if max_duration.endswith("ep"):
        epochs = float(max_duration[:-2])
        check(cfg.warmup_epochs < epochs, "scheduler.warmup_epochs", cfg.warmup_epochs,
              f"must be shorter than max_duration={max_duration}")
