"""SIGTERM (preemption, scheduler time limit): finish the batch, save a checkpoint, stop cleanly.

The handler only raises a flag. With one process it is read after every batch; with several, every
``check_every`` batches all ranks agree on it with a MAX all-reduce (a signal reaching one rank first stops them
all at the same batch) so the collective costs one small message per ``check_every`` steps. Then training stops:
``state.stop_training()`` ends the run at this batch, and Composer's checkpoint saver, which runs after this
callback at the same BATCH_CHECKPOINT, saves the end of training (and points ``latest`` at it). Rerunning the same
command resumes from there.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger(__name__)


class Preemption(Callback):
    def __init__(self, folder: str | Path, checkpoint_name: Callable[[int, int], str], check_every: int = 10):
        self.folder = Path(folder)
        self.checkpoint_name = checkpoint_name  # (epoch, batch) -> the file Composer saves for them
        self.check_every = check_every
        self.requested = False
        self._previous = None

    def fit_start(self, state: State, logger: Logger) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        flag = torch.tensor([1.0 if self.requested else 0.0])
        if dist.get_world_size() > 1 and dist.is_initialized():
            if int(state.timestamp.batch) % self.check_every:
                return
            device = next(state.model.parameters()).device
            flag = flag.to(device)
            dist.all_reduce(flag, reduce_operation="MAX")
        if flag.item() == 0:
            return
        path = self.folder / self.checkpoint_name(int(state.timestamp.epoch), int(state.timestamp.batch))
        log.warning("SIGTERM: saved %s at epoch %d, batch %d; rerun the same command to resume", path,
                    int(state.timestamp.epoch), int(state.timestamp.batch))
        # No evaluation on the way out (Composer would run one at FIT_END): the grace period is short.
        for evaluator in state.evaluators:
            evaluator.eval_interval = lambda state, event: False
        state.stop_training()

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
