"""Export a checkpoint's network as a plain torchvision state_dict, loadable without this project."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from rsb_composer.checkpoints.safe_load import NetworkWeights, read_network
from rsb_composer.config import ConfigError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


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


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path, arch: str | None = None,
                      use_ema: bool = True, trust: bool = False) -> tuple[str, int, NetworkWeights]:
    """Write the checkpoint's network as a plain torchvision state_dict; returns (arch, num_classes, what was
    read: EMA or not, and any evaluation scale folded into the weights)."""
    network = read_network(checkpoint_path, trust=trust, prefer_ema=use_ema)
    arch, num_classes = to_torchvision(network.weights, arch)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save({k: v.contiguous() for k, v in network.weights.items()}, tmp)
    tmp.replace(out_path)
    return arch, num_classes, network
