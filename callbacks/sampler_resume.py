"""Starts the train sampler at the checkpoint's position on a mid-epoch resume, so nothing before it is read.

Composer 0.32.1 resumes a mid-epoch checkpoint of a plain DataLoader by loading and discarding every earlier batch
of the epoch (``spin_dataloaders``): minutes per restart at ImageNet scale, more the later the checkpoint. It skips
that replay when the train dataset takes part in its dataset resumption (it has ``state_dict`` and
``load_state_dict``; Composer then marks ``state.dataset_resumption['train']``), and leaves the position to the
data. Then this callback tells a sampler that can start mid-epoch (``start_at``, rsb_composer's TrainSampler) to
begin at this rank's position: the batches already trained in the epoch times the batch size. Streaming datasets
do the same through their own state and have no sampler.

FIT_START comes after the checkpoint is loaded and before the epoch's iterator is made.
"""

from __future__ import annotations

import logging

from composer.core import Callback, State
from composer.loggers import Logger
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


class SamplerResume(Callback):
    def fit_start(self, state: State, logger: Logger) -> None:
        loader = state.dataloader
        sampler = getattr(loader, "sampler", None) if isinstance(loader, DataLoader) else None
        if "train" not in state.dataset_resumption or not hasattr(sampler, "start_at"):
            return
        batch = int(state.timestamp.batch_in_epoch)
        sampler.start_at(batch * loader.batch_size)
        log.info("resuming epoch %d at batch %d: the train sampler starts at sample %d of this rank's order, "
                 "nothing before it is read", int(state.timestamp.epoch) + 1, batch, batch * loader.batch_size)
