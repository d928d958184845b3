"""The metrics every evaluation reports (the EVAL_METRICS registry): ``val/NAME`` at each of training's evaluations
(every destination: console, metrics.csv, W&B, ...) and in each row of ``rsb-composer eval``.

An evaluation metric is one module of this package that registers itself (``rsb_composer.eval_metrics`` imports
every module of the package, so a new metric is a new file and no other code; docs/development.md, "An evaluation
metric"):

- ``EvalMetric(build)``: ``build(num_classes)`` returns a torchmetrics ``Metric`` that the model's evaluation
  updates with each batch's (logits, labels) and whose ``compute()`` is the figure (accuracies as fractions in
  [0, 1]); it runs on every rank and is reduced across ranks by torchmetrics;
- ``EVAL_METRICS.add(name, metric, doc=..., check=...)``: ``check(num_classes)`` raises ConfigError one-liners when
  the metric cannot be measured for this model (``nothing_to_check`` when it always can).

The key ``val/NAME`` is a contract once published: rename none. Train figures (``train/acc1``, measured against
each batch's labels before mixing) and ImageNet-ReaL's ``real/acc1`` (an evaluation option with its own labels)
are not entries here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rsb_composer.config import Choices

if TYPE_CHECKING:
    from torchmetrics import Metric


@dataclass(frozen=True)
class EvalMetric:
    build: Callable[[int], Metric]  # num_classes -> the metric, updated with (logits, labels)


EVAL_METRICS: Choices[EvalMetric] = Choices("evaluation metric")


def build_eval_metrics(num_classes: int) -> dict[str, Metric]:
    """Every registered metric for a ``num_classes``-way classifier, each checked first, by name."""
    for name in EVAL_METRICS:
        EVAL_METRICS.check(name, num_classes)
    return {name: metric.build(num_classes) for name, metric in EVAL_METRICS.items()}


def val_keys() -> tuple[str, ...]:
    """The metric keys the evaluations report, in the registry's order: val/loss, val/acc1, val/acc5, ..."""
    return tuple(f"val/{name}" for name in EVAL_METRICS)
