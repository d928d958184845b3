"""``val/acc1`` and ``val/acc5``: micro-averaged top-1 and top-5 accuracy, fractions in [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsb_composer.config import nothing_to_check
from rsb_composer.eval_metrics.registry import EVAL_METRICS, EvalMetric

if TYPE_CHECKING:
    from torchmetrics.classification import MulticlassAccuracy


def top_k_accuracy(num_classes: int, k: int) -> MulticlassAccuracy:
    """The fraction of images whose label is among the k largest logits (k capped at the class count)."""
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_classes, top_k=min(k, num_classes), average="micro")


def _acc1(num_classes: int) -> MulticlassAccuracy:
    return top_k_accuracy(num_classes, 1)


def _acc5(num_classes: int) -> MulticlassAccuracy:
    return top_k_accuracy(num_classes, 5)


EVAL_METRICS.add("acc1", EvalMetric(_acc1), check=nothing_to_check,
                 doc="val/acc1: top-1 accuracy, micro-averaged (images right over images), the paper's figure.")
EVAL_METRICS.add("acc5", EvalMetric(_acc5), check=nothing_to_check,
                 doc="val/acc5: top-5 accuracy, micro-averaged; with fewer than 5 classes, top-k of all of them.")
