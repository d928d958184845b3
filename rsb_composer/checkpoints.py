"""Reading Composer checkpoints outside the trainer: evaluation and export to a plain torchvision state_dict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torchvision

from rsb_composer.config import ConfigError

log = logging.getLogger(__name__)

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "not a checkpoint"
        raise ConfigError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint.get("state", {}):
        raise ConfigError(f"{path}: not a Composer checkpoint (no state.model inside)")
    return checkpoint


def model_weights(checkpoint: dict[str, Any], prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """The network's weights, keys without Composer's ``module.`` prefix, and whether they are EMA weights.

    Composer's EMA swaps the averaged weights into the model for checkpointing (``ema_weights_active``); when it
    has not, the averaged weights sit in the algorithm's own state.
    """
    state = checkpoint["state"]
    weights = dict(state["model"])
    is_ema = False
    ema = dict(state.get("algorithms") or []).get("EMA")
    if ema is not None and ema.get("ema_started"):
        if ema.get("ema_weights_active"):
            is_ema = True
            if not prefer_ema:
                ema_model = ema["ema_model"]  # the training weights, swapped out while EMA's are active
                weights.update(ema_model["named_parameters_dict"])
                weights.update(ema_model["named_buffers_dict"])
                is_ema = False
        elif prefer_ema:
            weights.update(ema["ema_model"]["named_parameters_dict"])
            weights.update(ema["ema_model"]["named_buffers_dict"])
            is_ema = True
    prefix = "module."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}, is_ema


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
                      use_ema: bool = True) -> tuple[str, int, bool]:
    """Write the checkpoint's network as a plain torchvision state_dict; returns (arch, num_classes, is_ema)."""
    weights, is_ema = model_weights(load_checkpoint_file(checkpoint_path), prefer_ema=use_ema)
    arch, num_classes = to_torchvision(weights, arch)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save({k: v.contiguous() for k, v in weights.items()}, tmp)
    tmp.replace(out_path)
    return arch, num_classes, is_ema
