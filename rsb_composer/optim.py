"""Optimizer, the linear LR scaling rule, and the warmup-then-cosine schedule (stepped every batch)."""

from __future__ import annotations

import logging
import math

import torch
from composer.core import Time, TimeUnit
from torch.optim.lr_scheduler import LambdaLR

from rsb_composer.config import OptimizerConfig, SchedulerConfig

log = logging.getLogger(__name__)


def scaled_lr(cfg: OptimizerConfig, global_batch_size: int) -> float:
    """``optimizer.lr`` is the LR at ``reference_batch_size``; scale it linearly to the real global batch."""
    return cfg.lr * global_batch_size / cfg.reference_batch_size


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


def _parameter_groups(model: torch.nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    if decay_bn_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    # 1-d parameters are the BatchNorm scales and shifts and the biases (timm's filter_bias_and_bn).
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """``sgd`` (torch, coupled weight decay), ``decoupled_sgdw`` (Composer's, as in its ResNet recipes),
    ``lamb`` (timm's, the paper's: NVIDIA FusedLAMB semantics with a global gradient-norm clip of
    ``max_grad_norm`` and trust ratios only on weight-decayed parameters), ``adamw`` (torch)."""
    groups = _parameter_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "decoupled_sgdw":
        from composer.optim import DecoupledSGDW

        return DecoupledSGDW(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, max_grad_norm=cfg.max_grad_norm)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # config.validate refuses this before we get here
