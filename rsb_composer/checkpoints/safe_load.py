"""Reading Composer checkpoints without running their code: for evaluation, export, warm starts and autoresume.

Loading never runs pickled code by default: ``torch.load(weights_only=True)`` with an allow-list of exactly the
non-tensor types a Composer checkpoint holds (numpy RNG state, a timedelta, the torch version; the list Composer's
main branch adopted in mosaicml/composer#3937). A file that needs anything else is refused unless the user vouches
for it (``--trust-checkpoint`` for eval and export, ``checkpoints.trust: true`` for training, where
:mod:`rsb_composer.composer_fixes` puts :func:`load_data_only` under Composer's own checkpoint loading).

:func:`read_weights` reads the network a file holds, whatever the file: a Composer checkpoint (the run's own or
a top-k ``.ckpt``), a plain torchvision state_dict (``rsb-composer export``'s ``.pth``) or a ``.safetensors``
file; a network trained with Composer's own stochastic depth comes back with its evaluation scale folded in.
"""

from __future__ import annotations

import datetime
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from rsb_composer.config import ConfigError
from rsb_composer.drop_path import composer_eval_scales, fold_eval_scales

log = logging.getLogger(__name__)

# numpy's RNG state pickles as arrays with their dtype classes (numpy.dtypes.UInt32DType, ...).
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
SAFE_GLOBALS = [np.ndarray, np.dtype, _multiarray._reconstruct, datetime.timedelta, TorchVersion,
                *(getattr(np.dtypes, name) for name in dir(getattr(np, "dtypes", object)) if name.endswith("DType"))]


def load_data_only(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with torch's weights-only unpickler and :data:`SAFE_GLOBALS`: nothing in the file runs.

    Raises ``pickle.UnpicklingError`` for a file that needs anything else (:func:`refusal` words it).
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True)


def refusal(path: str | Path, err: pickle.UnpicklingError, accept: str) -> ConfigError | None:
    """The one-line refusal for ``err`` from :func:`load_data_only` (None when ``err`` is not a refusal but a
    damaged file); ``accept`` says how to accept the file knowingly."""
    if "Weights only load failed" not in str(err):
        return None
    found = re.search(r"got <class '([^']+)'>|GLOBAL ([\w.]+)", str(err))
    extra = next((g for g in found.groups() if g), "an object") if found else "an object"
    return ConfigError(f"{path}: refusing to unpickle {extra} (it could run code); if you trust where the file "
                       f"comes from, {accept}")


def load_checkpoint_file(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """A Composer checkpoint, read without running code unless ``trust``."""
    checkpoint = _torch_load(Path(path), trust)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint.get("state", {}):
        raise ConfigError(f"{path}: not a Composer checkpoint (no state.model inside)")
    return checkpoint


def _torch_load(path: Path, trust: bool) -> Any:
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path}: not a checkpoint (not a torch.save archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False) if trust else load_data_only(path)
    except pickle.UnpicklingError as err:
        refused = refusal(path, err, "pass --trust-checkpoint")
        if refused is None:
            raise ConfigError(f"{path}: not a readable checkpoint ({err})") from None
        raise refused from None
    except Exception as err:  # noqa: BLE001 - any other failure to read means "not a checkpoint"
        raise ConfigError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
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


def load_network(module: torch.nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``weights`` into ``module`` exactly (every key, every shape), or say in one line what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        found = [f"{len(keys)} {what} (first: {keys[0]})" for keys, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
        raise ConfigError(f"{source}: its network is not the recipe's ({', '.join(found)}); use the recipe "
                          "(model.arch, algorithms) it was trained with")
    module.load_state_dict(weights, strict=True)


@dataclass
class NetworkWeights:
    weights: dict[str, torch.Tensor]  # torchvision names (no ``module.`` prefix)
    kind: str  # what the file was, for messages
    is_ema: bool = False
    folded: str | None = None  # what was folded into the weights, for messages


def network_weights(checkpoint: dict[str, Any], prefer_ema: bool = True) -> NetworkWeights:
    """A loaded Composer checkpoint's network as :func:`model_weights` gives it, with the evaluation scale of
    Composer's own stochastic depth, if it trained with it, folded in (``folded`` says so)."""
    weights, is_ema = model_weights(checkpoint, prefer_ema=prefer_ema)
    scales = composer_eval_scales(checkpoint["state"].get("algorithms"), weights)
    if not scales:
        return NetworkWeights(weights, "Composer checkpoint", is_ema)
    folded = (f"trained with Composer's stochastic depth, whose evaluation scales each residual branch by its keep "
              f"probability ({min(scales.values()):.4g} to {max(scales.values()):.4g}): that scale is folded into "
              f"the {len(scales)} blocks' bn3, so the plain network computes what evaluation did")
    return NetworkWeights(fold_eval_scales(weights, scales), "Composer checkpoint", is_ema, folded)


def read_weights(path: str | Path, trust: bool = False, prefer_ema: bool = True) -> NetworkWeights:
    """The network in ``path``: a Composer checkpoint (EMA weights when it has them and ``prefer_ema``), a plain
    state_dict of tensors, or a safetensors file; never running code unless ``trust``.

    A checkpoint trained with Composer's own stochastic depth evaluated a network whose residual branches were
    scaled by their keep probabilities; the scale is folded into the weights (``folded`` says so), so the plain
    network computes what the run's evaluation did.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return NetworkWeights(_safetensors(path), "safetensors file")
    loaded = _torch_load(path, trust)
    if isinstance(loaded, dict) and "model" in (loaded.get("state") or {}):
        return network_weights(loaded, prefer_ema=prefer_ema)
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        prefix = "module."
        return NetworkWeights({k.removeprefix(prefix): v for k, v in loaded.items()}, "state_dict")
    raise ConfigError(f"{path}: neither a Composer checkpoint nor a state_dict of tensors")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
