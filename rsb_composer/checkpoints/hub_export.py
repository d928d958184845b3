"""The ``timm`` export: a folder that timm and the Hugging Face Hub read as they read timm's own weights.

``OUT/model.safetensors`` and ``OUT/config.json`` are written by timm's own writer (``timm.models.save_for_hf``)
from timm's model of the same architecture, loaded strictly with the checkpoint's weights (torchvision's and
timm's ResNets share parameter names), so a folder that timm could not load is never written. ``config.json``'s
``pretrained_cfg`` carries the recipe's preprocessing as timm names it for its own ResNet strikes back weights
(``timm/resnet50.a3_in1k``): ``input_size`` the training resolution, ``test_input_size`` and ``test_crop_pct`` the
evaluation's, ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std``. ``OUT/README.md`` is a short
model card. ``huggingface-cli upload USER/NAME OUT`` publishes the folder as it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from rsb_composer.checkpoints.resnet_weights import Network
from rsb_composer.config import Config, ConfigError
from rsb_composer.data.normalization import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

FILES = ("model.safetensors", "config.json", "README.md")
# Keys of the resolved recipe left out of the model card: where the data and run were on the training machine.
PRIVATE_KEYS = {"run_dir": None, "data": ("path", "remote", "local")}


def pretrained_cfg(network: Network, recipe: Config) -> dict[str, Any]:
    """timm's description of how the weights expect their input, from the recipe."""
    data = recipe.data
    return {
        "architecture": network.arch,
        "tag": recipe.run_name,
        "input_size": (3, data.train_resolution, data.train_resolution),
        "test_input_size": (3, data.eval_resolution, data.eval_resolution),
        "crop_pct": data.crop_pct,
        "test_crop_pct": data.crop_pct,
        "crop_mode": "center",
        "interpolation": data.interpolation,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_classes": network.num_classes,
        "first_conv": "conv1",
        "classifier": "fc",
    }


def check_timm_folder(network: Network, out: Path, recipe: Config | None) -> None:
    """What makes a timm folder impossible, before anything is written: another network than the recipe's, an
    architecture timm does not have, a file where the folder should go."""
    import timm

    assert recipe is not None  # the format needs a recipe, which export_checkpoint makes sure of
    if recipe.model.arch != network.arch:
        raise ConfigError(f"the recipe trains model.arch={recipe.model.arch} but the checkpoint holds a "
                          f"{network.arch}: pass the recipe it was trained with (--config)")
    if not timm.is_model(network.arch):
        raise ConfigError(f"timm has no {network.arch}; export it with --format safetensors or torch")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; --format timm writes a folder")


def _timm_model(network: Network, recipe: Config) -> Any:
    import timm

    model = timm.create_model(network.arch, pretrained=False, num_classes=network.num_classes,
                              pretrained_cfg=pretrained_cfg(network, recipe))
    try:
        model.load_state_dict(network.weights, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"timm's {network.arch} does not take these weights ({str(err).splitlines()[0]}); export "
                          "with --format safetensors or torch") from None
    return model


def model_card(network: Network, recipe: Config) -> str:
    data = recipe.data
    n = network.num_classes
    epochs = f"{network.epoch} (recipe: {recipe.max_duration})" if network.epoch is not None else recipe.max_duration
    acc = (f"{network.val_acc1:.4f}, as the trainer last evaluated it (at {data.eval_resolution} px"
           f"{', EMA weights' if network.is_ema else ''})" if network.val_acc1 is not None else "not recorded")
    weights = "EMA weights" if network.is_ema else "the training weights"
    settings = recipe.to_dict()
    for key, private in PRIVATE_KEYS.items():
        if private is None:
            settings.pop(key, None)
        else:
            for sub in private:
                settings.get(key, {}).pop(sub, None)
    return f"""---
tags:
- image-classification
- timm
library_name: timm
---
# {network.arch}: {recipe.run_name}

A {network.arch} image classifier ({n} classes) trained by rsb-composer ("ResNet strikes back" training on MosaicML
Composer) with the recipe `{recipe.run_name}`; {weights}.

| | |
|---|---|
| recipe | `{recipe.run_name}`: {recipe.optimizer.name}, loss {recipe.loss.name}, the resolved settings below |
| epochs trained | {epochs} |
| val/acc1 | {acc} |
| train / test resolution | {data.train_resolution} / {data.eval_resolution} px |
| test crop, interpolation | crop_pct {data.crop_pct:g}, {data.interpolation}; ImageNet mean and std |

## How to use

```python
import timm
model = timm.create_model("hf-hub:USER/NAME", pretrained=True).eval()  # once uploaded
# from this folder (give num_classes twice, or timm replaces the classifier by a fresh one):
model = timm.create_model("{network.arch}", pretrained=True, num_classes={n},
                          pretrained_cfg_overlay={{"file": "model.safetensors", "num_classes": {n}}}).eval()
config = timm.data.resolve_data_config(model=model, use_test_size=True)  # the recipe's test resolution
transform = timm.data.create_transform(**config)
```

Without timm: `torchvision.models.{network.arch}(num_classes={n}).load_state_dict(
safetensors.torch.load_file("model.safetensors"))`.

<details><summary>Resolved recipe</summary>

```yaml
{yaml.safe_dump(settings, sort_keys=False).strip()}
```
</details>
"""


def write_timm_folder(network: Network, out: Path, recipe: Config) -> str:
    """Write ``out/{model.safetensors,config.json,README.md}``; returns how to load it. Other files in ``out``
    (a clone of the Hub repository's ``.git``, say) are left alone."""
    from timm.models import save_for_hf

    model = _timm_model(network, recipe)  # export_checkpoint ran check_timm_folder first
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        (Path(tmp) / "README.md").write_text(model_card(network, recipe))
        for name in FILES:  # each file appears whole (a rename within the folder)
            os.chmod(Path(tmp) / name, 0o644)  # safetensors creates its files private; these are for sharing
            os.replace(Path(tmp) / name, out / name)
    return (f'timm.create_model("{network.arch}", pretrained=True, num_classes={network.num_classes}, '
            f'pretrained_cfg_overlay={{"file": "{out / FILES[0]}", "num_classes": {network.num_classes}}}), or '
            f'timm.create_model("local-dir:{out}", pretrained=True)')
