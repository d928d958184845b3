"""Training losses on the (possibly mixed and smoothed) targets; validation always uses cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from composer.loss import soft_cross_entropy
from timm.loss import BinaryCrossEntropy

from rsb_composer.config import LossConfig


def build_loss(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``cross_entropy``: Composer's soft cross-entropy (class indices or soft targets).

    ``bce``: timm's BinaryCrossEntropy, the paper's loss: one sigmoid per class against the dense target; with
    ``target_threshold`` (0.2 in the paper) a mixed target becomes 1 for every class holding more than that
    share, so both images of a mixup/cutmix pair count as present.
    """
    if cfg.name == "cross_entropy":
        return soft_cross_entropy
    if cfg.name == "bce":
        # smoothing=0: timm's default (0.1) would smooth plain labels behind the config's back; label smoothing
        # is algorithms.label_smoothing's job.
        return BinaryCrossEntropy(smoothing=0.0, target_threshold=cfg.target_threshold, sum_classes=cfg.sum_classes)
    raise ValueError(f"unknown loss {cfg.name!r}")  # config.validate refuses this before we get here
