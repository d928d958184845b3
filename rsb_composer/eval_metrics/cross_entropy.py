"""``val/loss``: the mean cross-entropy of the logits against the labels (whatever loss the recipe trains with)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsb_composer.config import nothing_to_check
from rsb_composer.eval_metrics.registry import EVAL_METRICS, EvalMetric

if TYPE_CHECKING:
    from composer.metrics import CrossEntropy


def _cross_entropy(num_classes: int) -> CrossEntropy:
    from composer.metrics import CrossEntropy

    return CrossEntropy()


EVAL_METRICS.add(
    "loss", EvalMetric(_cross_entropy),
    doc="val/loss: Composer's CrossEntropy metric, the mean cross-entropy over the evaluated images; validation "
        "always uses cross-entropy, whichever loss.name trains.",
    check=nothing_to_check,
)
