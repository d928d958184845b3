"""One-hot targets without device synchronisations (Composer 0.32.1's ``composer.loss.utils._one_hot``).

``_one_hot`` (behind ``ensure_targets_one_hot``, which MixUp, CutMix, LabelSmoothing and Composer's BCE call between
the forward and the backward pass) checks ``tensor.max()`` and ``tensor.min() < 0`` in Python: on a GPU each check
waits for the forward pass to finish, so the backward pass cannot be queued behind it. The replacement builds the
same one-hot tensor with tensor operations alone: a negative label becomes an all-zero row, as in Composer (without
Composer's warning, which needs the read), and a label past the last class fails in ``scatter_`` (an index error on
the CPU, a device assertion on a GPU) where Composer raised a ValueError. Our labels come from the class folders,
always in range. Unchanged on Composer's main branch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import composer.loss.utils
import torch


def without_reads(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(original)
    def _one_hot(tensor: torch.Tensor, num_classes: int = -1, dim: int = -1) -> torch.Tensor:
        if num_classes == -1:  # the size itself comes from the data: only a read can tell it
            return original(tensor, num_classes, dim)
        if not composer.loss.utils.check_for_index_targets(tensor):
            raise ValueError(f"tensor must be integer type, current type: {tensor.dtype}")
        index = tensor.clamp(min=0).long().unsqueeze(dim)
        shape = list(index.shape)
        shape[dim] = num_classes
        present = (tensor >= 0).unsqueeze(dim).to(tensor.dtype)
        return torch.zeros(shape, dtype=tensor.dtype, device=tensor.device).scatter_(dim, index, present)

    _one_hot.__rsb_composer_patched__ = True  # type: ignore[attr-defined]
    return _one_hot


def apply() -> None:
    if not getattr(composer.loss.utils._one_hot, "__rsb_composer_patched__", False):
        composer.loss.utils._one_hot = without_reads(composer.loss.utils._one_hot)
