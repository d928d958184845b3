"""The resolved config as the flat hyper-parameters TensorBoard and MLflow take (W&B takes the nested config)."""

from __future__ import annotations

from typing import Any


def flat_hyperparameters(resolved: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data.batch_size": 256, "algorithms.mixup.alpha": 0.2, "algorithms.channels_last": "{}", ...}``.

    Lists become their text (``[0.08, 1.0]``); a section present with no keys (an algorithm on with its defaults,
    ``loggers.tensorboard``) stays visible as ``{}``.
    """
    flat: dict[str, Any] = {}
    for key, value in resolved.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_hyperparameters(value, prefix=f"{name}."))
        elif isinstance(value, dict):
            flat[name] = "{}"
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat
