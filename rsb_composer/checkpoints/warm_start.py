"""``model.init_from``: a new run that starts from another run's network (timm's ``--initial-checkpoint``,
torchvision's ``--weights``): fine-tuning at another resolution or class count, or a warm start.

Only the network's weights are taken, read without running code (:func:`~rsb_composer.checkpoints.safe_load.
read_weights`: a Composer checkpoint or top-k ``.ckpt``, an exported ``.pth``, a ``.safetensors`` file). The
optimizer, the LR schedule and the step count start afresh: it is not a resume. Once the run has a checkpoint
of its own, autoresume wins and ``init_from`` is ignored (train.py says so).
"""

from __future__ import annotations

import logging

import torch

from rsb_composer.checkpoints.resnet_weights import to_torchvision
from rsb_composer.checkpoints.safe_load import read_weights
from rsb_composer.config import ConfigError

log = logging.getLogger(__name__)

HEAD = ("fc.weight", "fc.bias")  # torchvision ResNets' classifier


def _which_network(weights: dict[str, torch.Tensor]) -> str:
    """Name the torchvision ResNet ``weights`` belong to, for the refusal."""
    try:
        arch, num_classes = to_torchvision(weights)
    except ConfigError as err:
        return f"not a plain torchvision ResNet ({err})"
    return f"{arch} ({num_classes} classes)"


def warm_start(module: torch.nn.Module, path: str, arch: str) -> None:
    """Load the network in ``path`` into ``module`` (a freshly built torchvision ``arch``, before any surgery).

    Every weight but the classifier must match in name and shape, or the start is refused naming both networks;
    a classifier for another number of classes (or none) is left as ``module`` initialised it, said in one line.
    """
    try:
        network = read_weights(path, trust=False, prefer_ema=True)
    except ConfigError as err:
        raise ConfigError(f"model.init_from: {err}") from None
    weights, own = network.weights, module.state_dict()
    body = [k for k in own if k not in HEAD]
    if set(body) != {k for k in weights if k not in HEAD} or any(weights[k].shape != own[k].shape for k in body):
        raise ConfigError(f"model.init_from={path}: its network is {_which_network(weights)}, this recipe trains "
                          f"model.arch={arch}; start from a {arch} or set model.arch to the file's network")
    classes = int(own["fc.weight"].shape[0])
    head_fits = all(k in weights and weights[k].shape == own[k].shape for k in HEAD)
    if head_fits:
        module.load_state_dict(weights, strict=True)
    else:
        module.load_state_dict({k: weights[k] for k in body}, strict=False)  # all but the head, checked above
        had = f"{int(weights['fc.weight'].shape[0])} classes" if "fc.weight" in weights else "no classifier"
        log.warning("model.init_from: %s has %s, this run %d: the classifier head (fc) starts from a fresh "
                    "initialisation", path, had, classes)
    what = f"{network.kind}, EMA weights" if network.is_ema else network.kind
    log.info("model.init_from: network weights from %s (%s); the optimizer, LR schedule and step count start "
             "afresh", path, what)
    if network.folded:
        log.warning("model.init_from: %s was %s", path, network.folded)
