"""Counts the unreadable images the train dataset skipped and stops the run past ``data.max_bad_fraction``.

The dataset (in the loader's worker processes) appends each unreadable path to this rank's
``logs/bad_images_rank{R}.txt``, started afresh by each launch (so a rerun after fixing the files starts clean);
this callback reads it every ``check_every`` batches and at each epoch end and compares the occurrences with the
images this rank has read since the launch. The decision is collective (a MAX all-reduce), so every rank stops
at the same batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger(__name__)


class TooManyBadImages(RuntimeError):
    """More unreadable train images than data.max_bad_fraction allows; the message lists the first ones."""


class BadImageMonitor(Callback):
    def __init__(self, bad_log: str | Path, max_fraction: float, check_every: int = 100):
        self.bad_log = Path(bad_log)
        self.max_fraction = max_fraction
        self.check_every = check_every
        self.reported = 0
        self.start_sample = 0

    def fit_start(self, state: State, logger: Logger) -> None:
        self.bad_log.unlink(missing_ok=True)
        self.start_sample = int(state.timestamp.sample)

    def _occurrences(self) -> list[str]:
        if not self.bad_log.is_file():
            return []
        return self.bad_log.read_text().split("\n")[:-1]

    def _check(self, state: State) -> None:
        occurrences = self._occurrences()
        bad = list(dict.fromkeys(occurrences))  # unique, in order of discovery
        # Images this rank has read since the launch (Composer counts samples over all ranks).
        shard = (int(state.timestamp.sample) - self.start_sample) // max(dist.get_world_size(), 1)
        over = 1.0 if shard and len(occurrences) / shard > self.max_fraction else 0.0
        flags = torch.tensor([over, float(len(bad))])
        if dist.get_world_size() > 1 and dist.is_initialized():
            flags = flags.to(next(state.model.parameters()).device)
            dist.all_reduce(flags, reduce_operation="MAX")
        if flags[0].item() > 0:
            first = ", ".join(bad[:5]) if bad else "(on another rank: see its logs/bad_images_rank*.txt)"
            raise TooManyBadImages(
                f"{len(occurrences)} of the {shard} train images this rank read were unreadable, more than "
                f"data.max_bad_fraction={self.max_fraction}; first: {first}. Fix or remove them (or raise "
                "data.max_bad_fraction), then rerun the same command to resume"
            )
        if len(bad) > self.reported:
            log.warning("%d unreadable images skipped so far on this rank (listed in %s); first: %s", len(bad),
                        self.bad_log, ", ".join(bad[:3]))
            self.reported = len(bad)

    def batch_end(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) % self.check_every == 0:
            self._check(state)

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._check(state)
