"""Training losses on the (possibly mixed and smoothed) targets; validation always uses cross-entropy.

``loss.name`` picks one of :data:`LOSSES`; each entry builds the loss from the ``loss.*`` options it reads, and
an option set for a loss that does not read it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rsb_composer import composer_fixes
from rsb_composer.config import Choices, ConfigError, LossConfig, check, nothing_to_check, options_set_but_unread

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossChoice:
    build: Callable[..., Loss]
    options: tuple[str, ...] = ()  # the loss.* keys passed to build as keywords


def _cross_entropy() -> Loss:
    """Composer's soft cross-entropy (class indices or soft targets), without its reads of the targets where the
    installed Composer makes them (:mod:`rsb_composer.composer_fixes.soft_cross_entropy`)."""
    return composer_fixes.cross_entropy()


def _bce(target_threshold: float | None, sum_classes: bool) -> Loss:
    """timm's BinaryCrossEntropy, the paper's loss: one sigmoid per class against the dense target; with
    ``target_threshold`` (0.2 in the paper) a mixed target becomes 1 for every class holding more than that
    share, so both images of a mixup/cutmix pair count as present."""
    from timm.loss import BinaryCrossEntropy

    # smoothing=0: timm's default (0.1) would smooth plain labels behind the config's back; label smoothing is
    # algorithms.label_smoothing's job.
    return BinaryCrossEntropy(smoothing=0.0, target_threshold=target_threshold, sum_classes=sum_classes)


def _check_bce(cfg: LossConfig) -> None:
    if cfg.target_threshold is not None:
        check(0 <= cfg.target_threshold < 1, "loss.target_threshold", cfg.target_threshold, "must be in [0, 1)")


# A loss's doc is its builder's docstring; its check, the checks of the loss.* options it reads.
LOSSES: Choices[LossChoice] = Choices("loss.name")
LOSSES.add("cross_entropy", LossChoice(_cross_entropy), doc=_cross_entropy.__doc__, check=nothing_to_check)
LOSSES.add("bce", LossChoice(_bce, ("target_threshold", "sum_classes")), doc=_bce.__doc__, check=_check_bce)


def build_loss(cfg: LossConfig) -> Loss:
    choice = LOSSES.pick(cfg.name)
    return choice.build(**{key: getattr(cfg, key) for key in choice.options})


def check_loss(cfg: LossConfig) -> None:
    """An option the chosen loss does not read is refused (naming the losses that read it), then the loss's own."""
    choice = LOSSES.pick(cfg.name)
    for key in options_set_but_unread(cfg, choice.options):
        readers = [name for name, other in LOSSES.items() if key in other.options]
        raise ConfigError(f"loss.{key}={getattr(cfg, key)!r}: only applies to loss.name={' or '.join(readers)}")
    LOSSES.check(cfg.name, cfg)
