"""TensorBoard, through Composer's TensorboardLogger: event files in ``run_dir/tensorboard/{run_name}/``, the
metric keys as scalars at the trainer's batch count, the resolved config in the HParams tab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from composer.core import State
from composer.loggers import Logger, TensorboardLogger
from composer.utils import dist

from rsb_composer.loggers.hparams import flat_hyperparameters
from rsb_composer.loggers.trackers import TRACKERS, Tracker, needs_package
from rsb_composer.run_folder import RunFolder


@dataclass
class TensorboardOptions:
    """``loggers.tensorboard: {}``: event files in ``run_dir/tensorboard/``; no options yet."""


NEVER = 365 * 24 * 3600  # SummaryWriter's flush_secs: the logger flushes at its own events, as Composer's does


class RunTensorboardLogger(TensorboardLogger):
    """Composer's TensorboardLogger with one event file per launch and a step axis that a resume continues.

    - Composer closes its writer at every flush (every ``flush_interval`` batches, each epoch and evaluation), so
      that each closed file can be uploaded whole, starting a new file each time: thousands of files over a run,
      and files opened within one second sort out of order. This project uploads nothing: a flush only flushes.
    - A resumed launch starts its file with a SessionLog START at the checkpoint's batch + 1, which tells
      TensorBoard to drop what an earlier launch logged after the checkpoint (steps that run again), keeping the
      checkpoint's own epoch-end figures, logged at its batch count before it was saved.
    - Only rank 0 logs, so only rank 0 opens a file (Composer opens one on every rank and writes an empty
      hyper-parameter file from each of them at every evaluation).
    """

    def _logs(self) -> bool:
        return not self.rank_zero_only or dist.get_global_rank() == 0

    def init(self, state: State, logger: Logger) -> None:
        if self._logs():
            super().init(state, logger)

    def eval_end(self, state: State, logger: Logger) -> None:
        if self._logs():
            super().eval_end(state, logger)

    def fit_start(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch)
        if step and self.writer is not None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = self.writer.log_dir
            self.writer.close()
            self.writer = SummaryWriter(log_dir=log_dir, flush_secs=NEVER, purge_step=step + 1)

    def _flush(self, logger: Logger) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, state: State, logger: Logger) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


def build_tensorboard(cfg: TensorboardOptions, run: RunFolder, run_name: str,
                      resolved: dict[str, Any]) -> tuple[TensorboardLogger, str]:
    """The logger and where it writes; ``resolved`` (the resolved config) becomes its hyper-parameters."""
    logger = RunTensorboardLogger(log_dir=str(run.tensorboard))
    logger.log_hyperparameters(flat_hyperparameters(resolved))
    return logger, f"{run.tensorboard} (tensorboard --logdir {run.tensorboard})"


TRACKERS.add(
    "tensorboard", Tracker("TensorBoard", TensorboardOptions, build_tensorboard),
    doc="TensorBoard (``loggers.tensorboard: {}``, the [tensorboard] extra): event files in run_dir/tensorboard/, "
        "every metric key as a scalar at the trainer's batch count, the resolved config in the HParams tab; a "
        "resumed launch continues the step axis.",
    check=needs_package("tensorboard", "tensorboard", "tensorboard"),
)
