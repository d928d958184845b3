"""Optimizers: the registry ``optimizer.name`` picks from, parameter groups, and the linear LR scaling rule.

Each :class:`OptimizerChoice` says how to build the optimizer, which ``optimizer.*`` options it reads (passed to
it as keywords; the rest are common to all: lr, weight_decay, decay_bn_and_bias) and how many state tensors of a
parameter's size it keeps, which the checkpoint and memory estimates use. A new optimizer is one
:func:`add_optimizer` call with its doc; the checks of the options it reads come with it (:data:`OPTION_CHECKS`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rsb_composer.config import Choices, OptimizerConfig, check, options_set_but_unread

log = logging.getLogger(__name__)

# Read by every optimizer (or by the trainer around it), so never "unused".
COMMON_OPTIONS = ("lr", "reference_batch_size", "weight_decay", "decay_bn_and_bias")


@dataclass(frozen=True)
class OptimizerChoice:
    build: Callable[..., torch.optim.Optimizer]  # (parameter groups, lr=..., **options) -> optimizer
    options: tuple[str, ...]  # optimizer.* keys passed to build as keywords
    state_tensors: int  # tensors of each parameter's size in the optimizer state (momentum: 1, Adam moments: 2)


def _betas(betas: list[float] | None) -> dict[str, Any]:
    """``optimizer.betas`` when set; null leaves the optimizer's own default."""
    return {} if betas is None else {"betas": tuple(betas)}


def _sgd(groups: list[dict], lr: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    """torch's SGD (weight decay coupled to the gradient, as in torchvision's recipes)."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def _decoupled_sgdw(groups: list[dict], lr: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    """Composer's DecoupledSGDW, as in its ResNet speed-up recipes."""
    from composer.optim import DecoupledSGDW

    return DecoupledSGDW(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def _lamb(groups: list[dict], lr: float, betas: list[float] | None, eps: float,
          max_grad_norm: float | None) -> torch.optim.Optimizer:
    """timm's Lamb, the paper's: NVIDIA FusedLAMB semantics with a global gradient-norm clip of
    ``max_grad_norm`` and trust ratios only on weight-decayed parameters."""
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, eps=eps, max_grad_norm=max_grad_norm, **_betas(betas))


def _adamw(groups: list[dict], lr: float, betas: list[float] | None, eps: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, eps=eps, **_betas(betas))


def _lion(groups: list[dict], lr: float, betas: list[float] | None) -> torch.optim.Optimizer:
    """timm's Lion (Chen et al. 2023, "Symbolic discovery of optimization algorithms"): sign updates with one
    moment; it wants an LR several times smaller and a weight decay several times larger than AdamW's."""
    from timm.optim import Lion

    return Lion(groups, lr=lr, **_betas(betas))


def _check_betas(cfg: OptimizerConfig) -> None:
    if cfg.betas is not None:
        check(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "optimizer.betas", cfg.betas,
              "must be [beta1, beta2], each in [0, 1) (or null for the optimizer's own)")


def _check_eps(cfg: OptimizerConfig) -> None:
    check(cfg.eps > 0, "optimizer.eps", cfg.eps, "must be > 0")


def _check_max_grad_norm(cfg: OptimizerConfig) -> None:
    if cfg.max_grad_norm is not None:
        check(cfg.max_grad_norm > 0, "optimizer.max_grad_norm", cfg.max_grad_norm, "must be > 0 (or null for none)")


def _check_momentum(cfg: OptimizerConfig) -> None:
    check(0 <= cfg.momentum < 1, "optimizer.momentum", cfg.momentum, "must be in [0, 1)")


def _check_nesterov(cfg: OptimizerConfig) -> None:
    check(not cfg.nesterov or cfg.momentum > 0, "optimizer.nesterov", cfg.nesterov, "needs optimizer.momentum > 0")


# Each option's check, by optimizer.* key: an entry's check is the checks of the options it reads.
OPTION_CHECKS: dict[str, Callable[[OptimizerConfig], None]] = {
    "betas": _check_betas, "eps": _check_eps, "max_grad_norm": _check_max_grad_norm, "momentum": _check_momentum,
    "nesterov": _check_nesterov,
}


def add_optimizer(name: str, choice: OptimizerChoice, doc: str) -> None:
    """Register ``choice`` as ``optimizer.name=NAME``, checked by the checks of the options it reads."""
    def check_options(cfg: OptimizerConfig) -> None:
        for key in choice.options:
            OPTION_CHECKS[key](cfg)

    unknown = [key for key in choice.options if key not in OPTION_CHECKS]
    if unknown:
        raise ValueError(f"optimizer.name={name} reads {unknown}: add their check to OPTION_CHECKS")
    OPTIMIZERS.add(name, choice, doc=doc, check=check_options)


OPTIMIZERS: Choices[OptimizerChoice] = Choices("optimizer.name")
add_optimizer("sgd", OptimizerChoice(_sgd, ("momentum", "nesterov"), state_tensors=1),
              "torch's SGD with momentum, weight decay coupled to the gradient (torchvision's recipes, a2_sgd).")
add_optimizer("decoupled_sgdw", OptimizerChoice(_decoupled_sgdw, ("momentum", "nesterov"), state_tensors=1),
              "Composer's DecoupledSGDW: SGD with weight decay decoupled from the gradient (Composer's ResNet "
              "speed-up recipes).")
add_optimizer("lamb", OptimizerChoice(_lamb, ("betas", "eps", "max_grad_norm"), state_tensors=2),
              "timm's Lamb, the paper's (A1, A2, A3): layer-wise trust ratios on Adam's update, with a global "
              "gradient-norm clip of optimizer.max_grad_norm.")
add_optimizer("adamw", OptimizerChoice(_adamw, ("betas", "eps"), state_tensors=2),
              "torch's AdamW: Adam with decoupled weight decay.")
add_optimizer("lion", OptimizerChoice(_lion, ("betas",), state_tensors=1),
              "timm's Lion: sign updates with one moment; wants a smaller LR and a larger weight decay than AdamW.")


def scaled_lr(cfg: OptimizerConfig, global_batch_size: int) -> float:
    """``optimizer.lr`` is the LR at ``reference_batch_size``; scale it linearly to the real global batch."""
    return cfg.lr * global_batch_size / cfg.reference_batch_size


def parameter_groups(model: torch.nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    if decay_bn_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    # 1-d parameters are the BatchNorm scales and shifts and the biases (timm's filter_bias_and_bn).
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    choice = OPTIMIZERS.pick(cfg.name)
    unread = [key for key in options_set_but_unread(cfg, choice.options) if key not in COMMON_OPTIONS]
    if unread:
        log.warning("optimizer.name=%s does not use %s", cfg.name,
                    ", ".join(f"optimizer.{key}={getattr(cfg, key)!r}" for key in unread))
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias)
    return choice.build(groups, lr=lr, **{key: getattr(cfg, key) for key in choice.options})


def check_optimizer(cfg: OptimizerConfig) -> None:
    """The options every optimizer reads, the chosen optimizer's own check, and every other option's value too: a
    value no optimizer could take is refused even where the chosen one does not read it (it is also warned about,
    as unused, when the optimizer is built)."""
    OPTIMIZERS.pick(cfg.name)
    check(cfg.lr > 0, "optimizer.lr", cfg.lr, "must be > 0")
    check(cfg.reference_batch_size >= 1, "optimizer.reference_batch_size", cfg.reference_batch_size,
          "must be >= 1")
    check(cfg.weight_decay >= 0, "optimizer.weight_decay", cfg.weight_decay, "must be >= 0")
    OPTIMIZERS.check(cfg.name, cfg)
    for check_option in OPTION_CHECKS.values():
        check_option(cfg)
