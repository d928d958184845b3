"""An evaluation metric: val/acc1_macro, top-1 accuracy averaged over the classes, each class weighing the same."""

from __future__ import annotations

from torchmetrics.classification import MulticlassAccuracy

from rsb_composer.config import nothing_to_check
from rsb_composer.eval_metrics.registry import EVAL_METRICS, EvalMetric


def build_balanced_accuracy(num_classes: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=num_classes, top_k=1, average="macro")


EVAL_METRICS.add(
    "acc1_macro", EvalMetric(build_balanced_accuracy),
    doc="val/acc1_macro: top-1 accuracy per class, averaged over the classes (balanced accuracy); equal to val/acc1 "
        "on a val set with as many images of each class, lower when the rare classes are the ones missed.",
    check=nothing_to_check,  # any classifier has it
)
