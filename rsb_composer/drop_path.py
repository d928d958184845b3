"""Stochastic depth as timm's drop-path (the paper's), switched on through Composer's StochasticDepth algorithm.

Composer's sample-wise stochastic depth (``target_layer_name: ResNetBottleneck``) differs from timm's in two
ways: its per-block rates are ``rate x (i + 1) / n`` where timm's are ``rate x i / (n - 1)`` (0 at the first
bottleneck, the rate at the last), and it leaves kept samples unscaled in training and multiplies each residual
branch by its keep probability at evaluation, where timm scales kept samples by ``1 / keep`` in training and
leaves the evaluated network plain. So a network trained with Composer's version evaluates as a different
network from the torchvision one its weights load into.

``target_layer_name: ResNetBottleneckDropPath`` selects timm's version: :func:`register` adds that name to the
table Composer's surgery looks the converter up in (the one adjustment), so the algorithm, its YAML arguments,
its checkpointing and its resume handling stay Composer's. Checkpoints record which one trained them (the
algorithm's ``repr`` holds the target name): :func:`composer_eval_scales` finds what evaluation multiplied each
block's branch by in a checkpoint of Composer's version, and :func:`fold_eval_scales` moves it into the
weights, so export, eval and warm starts read such a checkpoint as the network it evaluated as.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from composer.algorithms.stochastic_depth import stochastic_depth as composer_stochastic_depth
from timm.layers import drop_path
from torchvision.models.resnet import Bottleneck

DROP_PATH_TARGET = "ResNetBottleneckDropPath"  # timm's drop-path (the paper's)
COMPOSER_TARGET = "ResNetBottleneck"  # Composer's own sample/block stochastic depth

_BLOCK_BN3 = re.compile(r"^layer(\d+)\.(\d+)\.bn3\.weight$")


def timm_rates(drop_rate: float, blocks: int) -> list[float]:
    """timm's ResNet rule (timm/models/resnet.py): block i of n drops with ``drop_rate x i / (n - 1)``."""
    return [drop_rate * i / max(blocks - 1, 1) for i in range(blocks)]


def composer_rates(drop_rate: float, blocks: int, distribution: str) -> list[float]:
    """Composer's rule (stochastic_layers.make_resnet_bottleneck_stochastic): ``drop_rate x (i + 1) / n``."""
    if distribution != "linear":
        return [drop_rate] * blocks
    return [drop_rate * (i + 1) / blocks for i in range(blocks)]


def _drop_path_forward(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """torchvision's Bottleneck.forward with timm's drop_path on the residual branch, where timm's ResNet
    Bottleneck applies it (after bn3, before the sum): per sample, dropped with probability ``drop_rate`` and
    kept ones scaled by 1 / keep in training; the identity at evaluation."""
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = drop_path(out, self.drop_rate, self.training)
    out += identity
    return self.relu(out)


def _to_drop_path(module: Bottleneck, module_index: int, module_count: int, drop_rate: float,
                  drop_distribution: str, stochastic_method: str) -> Bottleneck:
    """Composer's surgery policy signature (make_resnet_bottleneck_stochastic's), with timm's rates and forward."""
    rates = timm_rates(drop_rate, module_count) if drop_distribution == "linear" else [drop_rate] * module_count
    module.drop_rate = float(rates[module_index])
    module.forward = _drop_path_forward.__get__(module)  # bound like Composer's own: state_dict keys unchanged
    return module


def register() -> None:
    """Make ``target_layer_name: ResNetBottleneckDropPath`` a target Composer's StochasticDepth accepts.

    Composer 0.32.1 validates the name and picks the surgery from ``_STOCHASTIC_LAYER_MAPPING``; an entry there
    is all it takes. Idempotent.
    """
    composer_stochastic_depth._STOCHASTIC_LAYER_MAPPING.setdefault(DROP_PATH_TARGET, (Bottleneck, _to_drop_path))


def bottleneck_names(keys: Iterable[str]) -> list[str]:
    """The bottleneck blocks of a torchvision ResNet's weights (``layer1.0`` ...), in forward order."""
    found = [(int(m.group(1)), int(m.group(2))) for k in keys if (m := _BLOCK_BN3.match(k))]
    return [f"layer{layer}.{index}" for layer, index in sorted(found)]


def _argument(text: str, name: str) -> str | None:
    found = re.search(rf"{name}=('([^']*)'|[^,)]+)", text)
    return None if found is None else (found.group(2) if found.group(2) is not None else found.group(1))


def composer_eval_scales(algorithms: Any, keys: Iterable[str]) -> dict[str, float]:
    """What evaluation multiplied each bottleneck's residual branch by, for a checkpoint trained with Composer's
    own stochastic depth (its ``state.algorithms``: ``[(name, {"repr": ...}), ...]``); empty otherwise.

    Both of Composer's methods (``sample``, ``block``) scale the branch by ``1 - rate`` at evaluation.
    """
    for name, state in algorithms or []:
        text = state.get("repr", "") if name == "StochasticDepth" and isinstance(state, dict) else ""
        if _argument(text, "target_layer_name") != COMPOSER_TARGET:
            continue
        blocks = bottleneck_names(keys)
        rates = composer_rates(float(_argument(text, "drop_rate") or 0.0), len(blocks),
                               _argument(text, "drop_distribution") or "linear")
        return {block: 1.0 - rate for block, rate in zip(blocks, rates, strict=True) if rate}
    return {}


def fold_eval_scales(weights: dict[str, torch.Tensor], scales: dict[str, float]) -> dict[str, torch.Tensor]:
    """Multiply each block's last BatchNorm (scale and shift) by its branch's scale: ``s x bn3(y)`` is a
    BatchNorm with ``s x weight`` and ``s x bias``, so the plain network computes what the scaled one did."""
    folded = dict(weights)
    for block, scale in scales.items():
        for param in ("weight", "bias"):
            key = f"{block}.bn3.{param}"
            folded[key] = weights[key] * scale
    return folded
