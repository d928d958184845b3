"""The random state after a mid-epoch resume through dataset resumption (Composer 0.32.1's ``Trainer._train_loop``).

Composer restores the checkpoint's random state (Python, numpy, torch) at the start of training on an epoch
boundary, or, mid-epoch, just before the first new batch of its replay; when the train dataset resumes by itself
(``state.dataset_resumption``, see callbacks.sampler_resume) there is no replay and it never restores it, so mixup,
cutmix and stochastic depth draw differently from an uninterrupted run. :func:`restore_rng_on_dataset_resume`
restores it at the same point the replay would: before the first batch after the resume is fetched
(BEFORE_DATALOADER).
"""

from __future__ import annotations

from typing import Any

from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import reproducibility


class _RestoreRngState(Callback):
    def __init__(self, rng_state: list[dict[str, Any]]):
        self.rng_state: list[dict[str, Any]] | None = rng_state

    def before_dataloader(self, state: State, logger: Logger) -> None:
        if self.rng_state is not None:
            reproducibility.load_rng_state(self.rng_state)
            self.rng_state = None


def restore_rng_on_dataset_resume(trainer: Trainer) -> None:
    state = trainer.state
    if trainer._rng_state is None or "train" not in state.dataset_resumption or not int(state.timestamp.batch_in_epoch):
        return
    state.callbacks.append(_RestoreRngState(trainer._rng_state))
    trainer._rng_state = None
