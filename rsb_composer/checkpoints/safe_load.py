"""Reading Composer checkpoints without running their code: for evaluation, export, warm starts and autoresume.

Loading never runs pickled code by default: ``torch.load(weights_only=True)`` with an allow-list of exactly the
non-tensor types a Composer checkpoint holds (numpy RNG state, a timedelta, the torch version; the list Composer's
main branch adopted in mosaicml/composer#3937). A file that needs anything else is refused unless the user vouches
for it (``--trust-checkpoint`` for eval and export, ``checkpoints.trust: true`` for training, where
:mod:`rsb_composer.composer_fixes` puts :func:`load_data_only` under Composer's own checkpoint loading).
"""

from __future__ import annotations

import datetime
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from rsb_composer.config import ConfigError

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
    path = Path(path)
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
