"""Composer 0.32.1's ``composer.loss.soft_cross_entropy`` without its reads of the targets.

The same signature (for the algorithms that call the loss with ``reduction="none"``, such as selective backprop),
the same arithmetic in the same order, without its two checks of the targets' total probability in Python
(``total_prob <= 0`` raises, ``< num_examples`` warns): on a GPU each one waits for the forward pass, inside every
step. Targets with no probability at all give a NaN loss instead (0 x inf), which stops the run
(callbacks.divergence).
Composer's ``ignore_index`` warning for dense targets goes too (the argument is ignored there, as in Composer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from composer.loss.utils import infer_target_type


def soft_cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on class indices or soft targets, as Composer's, without reading the targets."""
    if infer_target_type(input, target) == "indices":
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"{reduction} reduction not supported.")
    xentropy = -(target * F.log_softmax(input, dim=1))
    if weight is not None:
        xentropy = torch.movedim(torch.movedim(xentropy, 1, -1) * weight, -1, 1)
    xentropy = xentropy.sum(dim=1)
    num_examples = torch.numel(xentropy)
    if reduction == "sum":
        return xentropy.sum()
    if reduction == "none":
        return xentropy
    # Composer renormalises by the targets' total probability (mixed targets may sum to a hair under 1 each).
    return xentropy.mean() * (num_examples / target.sum())
