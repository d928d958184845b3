"""The learning-rate schedule: linear warmup, then a half cosine, as a multiplier of the peak LR per step.

``scheduler.style`` picks how the warmup and cosine are laid over the run (:data:`STYLES`):

- ``per_step``: updated every step; the warmup reaches the peak at the start of its last epoch (the deployment
  notes' table, torchvision's LinearLR) and the cosine runs from the end of the warmup to the end of training.
- ``timm``: timm's ``CosineLRScheduler`` as the paper's ``train.py`` ran it, updated once per epoch: epoch ``e``
  of a ``warmup_epochs`` warmup trains at ``warmup_lr + e (lr - warmup_lr) / warmup_epochs``; from there on at
  ``min_lr + (lr - min_lr)/2 (1 + cos(pi e / epochs))``, a cosine over the whole run whose start the warmup
  covers (timm's ``warmup_prefix=False``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from composer.core import Time, TimeUnit
from torch.optim.lr_scheduler import LambdaLR

from rsb_composer.config import Choices, SchedulerConfig, check, nothing_to_check

log = logging.getLogger(__name__)


def per_step_multiplier(epoch: float, total_epochs: float, cfg: SchedulerConfig) -> float:
    """The LR as a fraction of the peak at fractional ``epoch`` of a ``total_epochs`` run (style ``per_step``).

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


def timm_multiplier(epoch: float, total_epochs: float, cfg: SchedulerConfig) -> float:
    """timm's CosineLRScheduler (t_initial = the run's epochs, warmup_t = warmup_epochs, t_in_epochs, no
    warmup prefix, one cycle), as a fraction of the peak, for the epoch that ``epoch`` falls in.

    timm's train.py sets ``_get_lr(0)`` before the first epoch and ``step(e + 1)`` after epoch ``e``, so the
    whole of epoch ``e`` trains at ``_get_lr(e)``.
    """
    t = math.floor(epoch)
    start, floor = cfg.warmup_start_factor, cfg.min_lr_factor
    if t < cfg.warmup_epochs:
        return start + t * (1.0 - start) / cfg.warmup_epochs
    if t < total_epochs:
        return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * t / total_epochs))
    return floor


@dataclass(frozen=True)
class ScheduleStyle:
    multiplier: Callable[[float, float, SchedulerConfig], float]  # (epoch, total epochs, cfg) -> fraction of peak
    per_step: bool  # whether the LR changes within an epoch


# Each style reads only the section's common options, which check_scheduler checks for every style.
STYLES: Choices[ScheduleStyle] = Choices("scheduler.style")
STYLES.add("per_step", ScheduleStyle(per_step_multiplier, per_step=True), check=nothing_to_check,
           doc="Updated every step: a linear warmup that reaches the peak at the start of its last epoch (the "
               "deployment notes' table), then a half cosine from the end of the warmup to the end of training.")
STYLES.add("timm", ScheduleStyle(timm_multiplier, per_step=False), check=nothing_to_check,
           doc="timm's CosineLRScheduler as the paper's train.py ran it, updated once per epoch: a linear warmup, "
               "then a cosine over the whole run whose start the warmup covers.")
# Old spellings still accepted, each rewritten to its current name with a one-line deprecation warning.
RENAMED_STYLES = {"steps": "per_step"}


def lr_multiplier(epoch: float, total_epochs: float, cfg: SchedulerConfig) -> float:
    """The LR as a fraction of the peak at fractional ``epoch`` of a ``total_epochs`` run, in ``cfg.style``."""
    return STYLES.pick(cfg.style).multiplier(epoch, total_epochs, cfg)


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
    if cfg.warmup_epochs and epochs <= cfg.warmup_epochs:
        log.warning("scheduler.warmup_epochs=%g is not shorter than max_duration=%s (%.3g epochs): the run ends "
                    "inside the warmup, before the LR reaches its peak", cfg.warmup_epochs, max_duration, epochs)
    style = STYLES.pick(cfg.style)

    def multiplier(step: int) -> float:
        return style.multiplier(step / steps_per_epoch, epochs, cfg)

    return LambdaLR(optimizer, multiplier)


def check_scheduler(cfg: SchedulerConfig) -> None:
    """Checks the section; an old spelling of ``style`` (:data:`RENAMED_STYLES`) is rewritten to its new name."""
    if cfg.style in RENAMED_STYLES:
        log.warning("scheduler.style=%s is deprecated: it is now called %s (same schedule); write "
                    "scheduler.style=%s", cfg.style, RENAMED_STYLES[cfg.style], RENAMED_STYLES[cfg.style])
        cfg.style = RENAMED_STYLES[cfg.style]
    STYLES.pick(cfg.style)
    check(cfg.warmup_epochs == 0 or cfg.warmup_epochs >= 1, "scheduler.warmup_epochs", cfg.warmup_epochs,
          "must be 0 (none) or at least 1 epoch")
    check(0 <= cfg.warmup_start_factor <= 1, "scheduler.warmup_start_factor", cfg.warmup_start_factor,
          "must be in [0, 1]")
    check(0 <= cfg.min_lr_factor < 1, "scheduler.min_lr_factor", cfg.min_lr_factor, "must be in [0, 1)")
