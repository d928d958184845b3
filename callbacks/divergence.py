"""Stops the run when the loss becomes NaN or infinite, before any checkpoint of the broken weights is saved.

Composer averages the loss over ranks before BATCH_END, so every rank sees the same value and all stop at the
same step. Raising at BATCH_END comes before BATCH_CHECKPOINT, EPOCH_CHECKPOINT and evaluation, so no checkpoint
(latest or top-k) is written from the diverged weights.
"""

from __future__ import annotations

import math
from pathlib import Path

from composer.core import Callback, State
from composer.loggers import Logger


class TrainingDiverged(RuntimeError):
    """The loss is not finite; the message names the step and the last good checkpoint."""


class DivergenceGuard(Callback):
    def __init__(self, latest_checkpoint: str | Path):
        self.latest = Path(latest_checkpoint)  # the link Composer keeps to the newest checkpoint

    def batch_end(self, state: State, logger: Logger) -> None:
        losses = state.total_loss_dict or {}
        loss = losses.get("loss/train/total")
        if loss is None or math.isfinite(float(loss)):
            return
        good = self.latest.resolve().name if self.latest.exists() else "none yet"
        step = int(state.timestamp.batch)
        raise TrainingDiverged(
            f"the training loss became {float(loss)} at step {step} (epoch {int(state.timestamp.epoch) + 1}); "
            f"last good checkpoint: {good} in {self.latest.parent}. Lower optimizer.lr or check the data, then "
            "rerun the same command to resume from it"
        )
