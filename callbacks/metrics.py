"""Logs the project's metric keys: train/{loss,acc1,acc5} per epoch, train/lr per step, val/* per evaluation.

Train accuracy is measured against each batch's original labels, read at AFTER_FORWARD, before MixUp, CutMix
or label smoothing replace the targets (they act at BEFORE_LOSS). On a mixed batch the logits describe a blend
of two images, so train accuracy then counts how often the dominant-or-not original label wins: a lower,
noisier number than val/acc1, useful for trends only.
"""

from __future__ import annotations

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torchmetrics.classification import MulticlassAccuracy

VAL_METRICS = ("loss", "acc1", "acc5")


class ClassificationMetrics(Callback):
    def __init__(self, num_classes: int, eval_label: str = "eval"):
        self.num_classes = num_classes
        self.eval_label = eval_label
        self.acc1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.acc5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro")
        self.loss_sum = 0.0
        self.loss_batches = 0

    def _reset(self) -> None:
        self.acc1.reset()
        self.acc5.reset()
        self.loss_sum = 0.0
        self.loss_batches = 0

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._reset()

    def batch_start(self, state: State, logger: Logger) -> None:
        # The scheduler steps at the end of each batch, so the LR read here is the one this batch trains with.
        logger.log_metrics({"train/lr": state.optimizers[0].param_groups[0]["lr"]})

    def after_forward(self, state: State, logger: Logger) -> None:
        targets = state.batch[1]
        outputs = state.outputs
        if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor) and targets.ndim == 1):
            return
        if self.acc1.device != outputs.device:
            self.acc1.to(outputs.device)
            self.acc5.to(outputs.device)
        logits = outputs.detach().float()
        self.acc1.update(logits, targets)
        self.acc5.update(logits, targets)

    def batch_end(self, state: State, logger: Logger) -> None:
        # Composer has already averaged the loss over ranks (total_loss_dict); None when AMP skipped the step.
        losses = state.total_loss_dict
        if losses and "loss/train/total" in losses:
            self.loss_sum += float(losses["loss/train/total"])
            self.loss_batches += 1

    def epoch_end(self, state: State, logger: Logger) -> None:
        if self.acc1.update_count == 0 and self.loss_batches == 0:
            return
        metrics = {}
        if self.loss_batches:
            metrics["train/loss"] = self.loss_sum / self.loss_batches
        # compute() synchronises the counts over all ranks, so every rank logs the global figure.
        metrics["train/acc1"] = float(self.acc1.compute())
        metrics["train/acc5"] = float(self.acc5.compute())
        logger.log_metrics(metrics)
        self._reset()

    def eval_end(self, state: State, logger: Logger) -> None:
        if state.dataloader_label != self.eval_label:
            return
        computed = state.eval_metrics[self.eval_label]
        # Composer has computed (and cached) these at EVAL_END already; compute() returns the cached value.
        logger.log_metrics({f"val/{name}": float(computed[name].compute()) for name in VAL_METRICS})
