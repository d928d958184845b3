"""``deterministic: true``: a run that repeats bit for bit on a GPU too, at a cost in speed.

On the CPU the project's runs repeat exactly without it (every kernel there is deterministic, and every sample
draws its augmentation from its own random stream). On a GPU, cuDNN picks convolution algorithms by timing them,
some kernels add with atomics in whatever order the threads finish, and cuBLAS splits reductions by workspace: a
resumed run then drifts from the uninterrupted one in the last bits, and more with every step. This turns on
Composer's deterministic mode (``torch.use_deterministic_algorithms``, cuDNN deterministic and not benchmarking,
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before cuBLAS starts) and replaces the one layer of a torchvision ResNet that
has no deterministic CUDA backward, so that torch would refuse it: ``AdaptiveAvgPool2d(1)`` becomes a mean over
height and width (the same numbers; its backward is a broadcast).
"""

from __future__ import annotations

import torch
from composer.utils import reproducibility


class GlobalAveragePool(torch.nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean over height and width, with a deterministic backward on CUDA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def configure() -> None:
    """Before anything runs on the GPU (cuBLAS reads its workspace setting when it starts)."""
    reproducibility.configure_deterministic_mode()


def make_deterministic(network: torch.nn.Module) -> None:
    """Swap every ``AdaptiveAvgPool2d`` to 1 x 1 for :class:`GlobalAveragePool` (it holds no weights: checkpoints
    and exports are unchanged)."""
    for module in list(network.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                setattr(module, child_name, GlobalAveragePool())
