"""Export a checkpoint's network for use without this project, in one of the formats ``--format`` picks from.

- ``torch``: a torchvision state_dict through ``torch.save`` (``torch.load(..., weights_only=True)``).
- ``safetensors``: the same tensors through the safetensors package: no pickle at all, the ecosystem's format.
- ``timm``: a folder for timm and the Hugging Face Hub (``model.safetensors``, ``config.json``, ``README.md``),
  see :mod:`rsb_composer.checkpoints.hub_export`.

All three promise a plain ResNet (torchvision's and timm's ResNets have the same parameter names), so a network
changed by BlurPool is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rsb_composer.checkpoints.hub_export import check_timm_folder, write_timm_folder
from rsb_composer.checkpoints.resnet_weights import Network, read_network
from rsb_composer.config import Choices, Config, ConfigError


@dataclass(frozen=True)
class ExportFormat:
    # (network, out path, recipe or None) -> how to load what was written, one line for the terminal
    write: Callable[[Network, Path, Config | None], str]
    needs_recipe: bool = False  # the format records preprocessing from the recipe (resolution, crop, mean/std)


def replace_atomically(out: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename onto ``out``: a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates its files private; an export is meant to be shared
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_torch(network: Network, out: Path, recipe: Config | None) -> str:
    replace_atomically(out, lambda tmp: torch.save(network.weights, tmp))
    return (f"torchvision.models.{network.arch}(num_classes={network.num_classes}).load_state_dict("
            f"torch.load({str(out)!r}, weights_only=True))")


def _write_safetensors(network: Network, out: Path, recipe: Config | None) -> str:
    from safetensors.torch import save_file

    # "format": "pt" is what the Hugging Face libraries look for; the rest says what the tensors are.
    metadata = {"format": "pt", "arch": network.arch, "num_classes": str(network.num_classes),
                "weights": "ema" if network.is_ema else "training"}
    replace_atomically(out, lambda tmp: save_file(network.weights, str(tmp), metadata=metadata))
    return (f"torchvision.models.{network.arch}(num_classes={network.num_classes}).load_state_dict("
            f"safetensors.torch.load_file({str(out)!r}))")


def _write_timm(network: Network, out: Path, recipe: Config | None) -> str:
    assert recipe is not None  # needs_recipe
    return write_timm_folder(network, out, recipe)


def check_one_file(network: Network, out: Path, recipe: Config | None) -> None:
    """A format that writes one file refuses a folder as ``--out`` (it would end in a rename error)."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; this format writes one file, e.g. --out {out / 'model.pt'}")


# Each entry's check runs on the checkpoint's network and --out before anything is written:
# (network, out path, recipe or None) -> None, raising ConfigError.
FORMATS: Choices[ExportFormat] = Choices("--format")
FORMATS.add("torch", ExportFormat(_write_torch), check=check_one_file,
            doc="A torchvision state_dict through torch.save, for torch.load(..., weights_only=True).")
FORMATS.add("safetensors", ExportFormat(_write_safetensors), check=check_one_file,
            doc="The same tensors through the safetensors package: no pickle at all, the ecosystem's format.")
FORMATS.add("timm", ExportFormat(_write_timm, needs_recipe=True), check=check_timm_folder,
            doc="A folder for timm and the Hugging Face Hub (model.safetensors, config.json, README.md) with the "
                "recipe's preprocessing in timm's pretrained_cfg.")


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path, fmt: str = "torch", arch: str | None = None,
                      use_ema: bool = True, trust: bool = False, recipe: Config | None = None) -> tuple[Network, str]:
    """Write the checkpoint's network to ``out_path`` in format ``fmt``; returns it and how to load the result.

    ``recipe``: the recipe it was trained with, for formats that record preprocessing (``timm``).
    """
    export_format = FORMATS.pick(fmt)
    if export_format.needs_recipe and recipe is None:
        raise ConfigError(f"--format {fmt} records the recipe's preprocessing and needs the recipe: pass "
                          "--config RECIPE.yaml")
    network = read_network(checkpoint_path, arch=arch, use_ema=use_ema, trust=trust)
    FORMATS.check(fmt, network, Path(out_path), recipe)
    return network, export_format.write(network, Path(out_path), recipe)
