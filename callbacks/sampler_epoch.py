"""Advances the epoch of train samplers that Composer does not know about.

Composer 0.32.1 calls ``set_epoch`` only on a torch DistributedSampler; any other sampler with ``set_epoch``
(timm's RepeatAugSampler) would replay epoch 0's order every epoch. EPOCH_START runs before the trainer
creates the epoch's iterator, so setting it there takes effect for the coming epoch; Composer skips EPOCH_START
when it resumes mid-epoch, so FIT_START sets it too.

Remove when the pinned Composer calls ``set_epoch`` on any sampler that has it (``Trainer._get_distributed_sampler``
checks ``isinstance(..., DistributedSampler)``; unchanged on Composer's main branch, no upstream issue yet).
"""

from __future__ import annotations

from composer.core import Callback, State
from composer.loggers import Logger
from torch.utils.data import DataLoader, DistributedSampler


class SamplerEpoch(Callback):
    def fit_start(self, state: State, logger: Logger) -> None:
        self.epoch_start(state, logger)

    def epoch_start(self, state: State, logger: Logger) -> None:
        loader = state.dataloader
        sampler = getattr(loader, "sampler", None) if isinstance(loader, DataLoader) else None
        if sampler is not None and hasattr(sampler, "set_epoch") and not isinstance(sampler, DistributedSampler):
            sampler.set_epoch(int(state.timestamp.epoch))
