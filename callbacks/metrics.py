"""Logs the project's metric keys: train/{loss,acc1,acc5} per epoch, train/lr per step, val/* per evaluation
(one key per metric of the model's evaluation, val/NAME).

Train accuracy is measured against each batch's original labels, read at AFTER_FORWARD, before MixUp, CutMix
or label smoothing replace the targets (they act at BEFORE_LOSS). On a mixed batch the logits describe a blend
of two images, so train accuracy scores them against the first image's label only: a lower, noisier number
than val/acc1, useful for trends. With gradient accumulation (``data.microbatch_size``) Composer runs
AFTER_FORWARD once per microbatch with ``state.batch`` set to it; the loss Composer reports per step is already
the mean over the microbatches. With ``data.microbatch_size: auto`` a step whose microbatch ran out of memory (on
this rank or another) is run again from its first microbatch, and AFTER_FORWARD fires on every attempt: the counts
of a step are kept apart from BEFORE_TRAIN_BATCH (the start of each attempt) and added to the epoch's at
BATCH_END (after the attempt that succeeded), so every image is counted once. SAM runs a step's forward pass twice
(BEFORE_TRAIN_BATCH fires for each): the second, at the perturbed weights, is the one counted.

The epoch's running counts are part of the checkpoint (state_dict), so an epoch resumed mid-way still reports
figures over all of its batches.
"""

from __future__ import annotations

from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


class ClassificationMetrics(Callback):
    def __init__(self, num_classes: int, eval_label: str = "eval"):
        self.top_k = min(5, num_classes)
        self.eval_label = eval_label
        self.counts: torch.Tensor | None = None  # this rank's [top-1 hits, top-5 hits], on the device
        self.images = 0
        self._step_counts: torch.Tensor | None = None  # the current attempt of the current step
        self._step_images = 0
        self.device = torch.device("cpu")  # the model's: NCCL all-reduces only device tensors
        self.loss_sum = 0.0
        self.loss_batches = 0
        self._resumed_counts = torch.zeros(3, dtype=torch.float64)

    def _reset(self) -> None:
        self.counts = None
        self.images = 0
        self.loss_sum = 0.0
        self.loss_batches = 0
        self._resumed_counts = torch.zeros(3, dtype=torch.float64)

    def fit_start(self, state: State, logger: Logger) -> None:
        self.device = next(state.model.parameters()).device
        if int(state.timestamp.batch_in_epoch) == 0:
            self._reset()  # a fresh epoch; a mid-epoch resume keeps the counts restored from the checkpoint

    def epoch_start(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch_in_epoch) == 0:
            self._reset()

    def batch_start(self, state: State, logger: Logger) -> None:
        # The scheduler steps at the end of each batch, so the LR read here is the one this batch trains with.
        logger.log_metrics({"train/lr": state.optimizers[0].param_groups[0]["lr"]})

    def before_train_batch(self, state: State, logger: Logger) -> None:
        self._step_counts = None  # a new attempt at this step: an abandoned one's counts go
        self._step_images = 0

    def after_forward(self, state: State, logger: Logger) -> None:
        targets = state.batch[1]
        outputs = state.outputs
        if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor) and targets.ndim == 1):
            return
        with torch.no_grad():
            top = outputs.detach().topk(self.top_k, dim=1).indices
            hits = top == targets[:, None]
            batch = torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()]).double()
        # Hits stay on the device (no sync per step); the image count is known on the host.
        self._step_counts = batch if self._step_counts is None else self._step_counts + batch
        self._step_images += len(targets)

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._step_counts is not None:
            self.counts = self._step_counts if self.counts is None else self.counts + self._step_counts
            self.images += self._step_images
        self._step_counts = None
        self._step_images = 0
        # Composer has already averaged the loss over ranks (total_loss_dict); None when AMP skipped the step.
        losses = state.total_loss_dict
        if losses and "loss/train/total" in losses:
            self.loss_sum += float(losses["loss/train/total"])
            self.loss_batches += 1

    def _global_counts(self) -> torch.Tensor:
        """[top-1 hits, top-5 hits, images] over all ranks; every rank must call this together."""
        local = self._resumed_counts.clone().to(self.device)
        local[2] += self.images
        if self.counts is not None:
            local[:2] += self.counts.to(self.device)
        if dist.get_world_size() > 1 and dist.is_initialized():
            dist.all_reduce(local, reduce_operation="SUM")
        return local.cpu()

    def epoch_end(self, state: State, logger: Logger) -> None:
        correct1, correct5, images = self._global_counts().tolist()
        metrics = {}
        if self.loss_batches:
            metrics["train/loss"] = self.loss_sum / self.loss_batches
        if images:
            metrics["train/acc1"] = correct1 / images
            metrics["train/acc5"] = correct5 / images
        if metrics:
            logger.log_metrics(metrics)
        self._reset()

    def eval_end(self, state: State, logger: Logger) -> None:
        if state.dataloader_label != self.eval_label:
            return
        computed = state.eval_metrics[self.eval_label]
        # Every metric of the model's evaluation (rsb_composer.eval_metrics), as val/NAME. Composer has computed
        # (and cached) them at EVAL_END already; compute() returns the cached value.
        logger.log_metrics({f"val/{name}": float(metric.compute()) for name, metric in computed.items()})

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank when a checkpoint is saved; only rank 0's copy is written, so it holds the global
        # counts and the other ranks start from zero when it is loaded.
        return {"counts": self._global_counts().tolist(), "loss_sum": self.loss_sum,
                "loss_batches": self.loss_batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = None
        self.images = 0
        self.loss_sum = float(state.get("loss_sum", 0.0))
        self.loss_batches = int(state.get("loss_batches", 0))
        counts = state.get("counts", [0.0, 0.0, 0.0]) if dist.get_global_rank() == 0 else [0.0, 0.0, 0.0]
        self._resumed_counts = torch.tensor(counts, dtype=torch.float64)
