"""A checkpoint's network as the weights of a plain ResNet (torchvision's parameter names, which timm's ResNets
share), with what the checkpoint says about them: what every export format writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from rsb_composer.checkpoints.safe_load import load_checkpoint_file, network_weights
from rsb_composer.config import ConfigError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


@dataclass
class Network:
    """A checkpoint's network, ready to be written: its weights and what is known about them."""

    weights: dict[str, torch.Tensor]  # torchvision parameter names, contiguous
    arch: str
    num_classes: int
    is_ema: bool
    checkpoint: Path
    epoch: int | None  # epochs trained when the checkpoint was written
    val_acc1: float | None  # the last val/acc1 the trainer logged before it (EMA's when it evaluated with EMA)
    folded: str | None = None  # the evaluation scale of Composer's own stochastic depth, folded into the weights


def to_torchvision(weights: dict[str, torch.Tensor], arch: str | None = None) -> tuple[str, int]:
    """Find the torchvision ResNet these weights load into strictly; (arch, num_classes) or a clear error."""
    if "fc.weight" not in weights:
        raise ConfigError("the checkpoint holds no ResNet classifier (no fc.weight)")
    num_classes = int(weights["fc.weight"].shape[0])
    surgery = sorted({k.split(".")[-1] for k in weights if k.endswith(("filt2d", "blur_filter"))})
    if surgery:
        raise ConfigError("the network was changed by BlurPool (blur filters inside), so it is not a plain "
                          "torchvision ResNet; evaluate it with `rsb-composer eval` instead")
    for candidate in ([arch] if arch else RESNETS):
        model = torchvision.models.get_model(candidate, weights=None, num_classes=num_classes)
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError:
            continue
        return candidate, num_classes
    raise ConfigError(f"the weights match no torchvision ResNet ({arch or ', '.join(RESNETS)})")


def read_network(checkpoint_path: str | Path, arch: str | None = None, use_ema: bool = True,
                 trust: bool = False) -> Network:
    """The checkpoint's network as a plain torchvision ResNet (EMA weights when present and ``use_ema``), computing
    what the run's evaluation computed (:func:`~rsb_composer.checkpoints.safe_load.network_weights`)."""
    checkpoint = load_checkpoint_file(checkpoint_path, trust=trust)
    found = network_weights(checkpoint, prefer_ema=use_ema)
    weights, is_ema = found.weights, found.is_ema
    arch, num_classes = to_torchvision(weights, arch)
    state = checkpoint["state"]
    epoch = (state.get("timestamp") or {}).get("Timestamp", {}).get("epoch")
    # callbacks.metrics_table.MetricsTable keeps the latest logged figures in every checkpoint.
    latest = ((state.get("callbacks") or {}).get("MetricsTable") or {}).get("latest") or {}
    return Network({k: v.contiguous() for k, v in weights.items()}, arch, num_classes, is_ema, Path(checkpoint_path),
                   int(epoch) if epoch is not None else None,
                   float(latest["val/acc1"]) if "val/acc1" in latest else None, found.folded)


