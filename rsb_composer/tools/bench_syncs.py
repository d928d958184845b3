"""``rsb-composer bench-syncs``: what a training step of the recipe reads back from the device.

The recipe runs through the real trainer on synthetic data (bench-train's configuration: same model, batch,
precision, callbacks and algorithms) for ``warmup`` untimed and ``steps`` counted steps. Counted, per step:

- on any machine, the tensor-to-Python reads between the start of the forward pass and the end of the backward
  pass (:mod:`rsb_composer.tools.host_reads`), each a stall on a GPU;
- on a GPU, every synchronisation torch's ``torch.cuda.set_sync_debug_mode("warn")`` reports, over the whole step
  (from fetching its batch to BATCH_END) and between the forward and the end of the backward pass, with the
  Python lines that caused them.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from rsb_composer.config import Config
from rsb_composer.tools.bench_train import quiet_logging, synthetic_config
from rsb_composer.tools.host_reads import HostReadWindow, counting_host_reads

SYNC_WARNING = "called a synchronizing CUDA operation"


class SyncWindows(Callback):
    """Counts the sync warnings recorded in ``log`` per counted step, and those between forward and backward."""

    def __init__(self, log: list[warnings.WarningMessage], warmup: int, cuda: bool):
        self.log = log
        self.warmup = warmup
        self.cuda = cuda
        self.counting = False
        self.steps = 0
        self.in_step = 0
        self.in_window = 0
        self.sites: Counter[str] = Counter()
        self._marks: dict[str, int] = {}

    def _syncs(self) -> int:
        return sum(SYNC_WARNING in str(w.message) for w in self.log)

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self.counting = int(state.timestamp.batch) >= self.warmup
        if self.counting and self.cuda:
            torch.cuda.set_sync_debug_mode("warn")
        self._marks["step"] = self._syncs()
        self._marks["seen"] = len(self.log)

    def before_forward(self, state: State, logger: Logger) -> None:
        self._marks["window"] = self._syncs()

    def after_backward(self, state: State, logger: Logger) -> None:
        if self.counting:
            self.in_window += self._syncs() - self._marks["window"]

    def batch_end(self, state: State, logger: Logger) -> None:
        if not self.counting:
            return
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        self.steps += 1
        self.in_step += self._syncs() - self._marks["step"]
        new = [w for w in self.log[self._marks["seen"]:] if SYNC_WARNING in str(w.message)]
        self.sites.update(f"{w.filename}:{w.lineno}" for w in new)


def bench_syncs(config: Config, steps: int = 8, warmup: int = 2) -> dict[str, Any]:
    from rsb_composer.trainer import build_trainer

    cuda = torch.cuda.is_available()
    reads = HostReadWindow()
    with tempfile.TemporaryDirectory(prefix="rsb-bench-syncs-") as tmp, quiet_logging():
        trainer = build_trainer(synthetic_config(config, steps + warmup, run_dir=str(Path(tmp) / "run")))
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            syncs = SyncWindows(log, warmup, cuda)
            trainer.state.callbacks.extend([reads, syncs])
            with counting_host_reads(reads):
                trainer.fit()
        trainer.close()
    result: dict[str, Any] = {
        "steps": syncs.steps, "reads_between_forward_and_backward_per_step": reads.per_step,
        "reads": dict(reads.reads)}
    if cuda:
        result.update({"cuda_syncs_per_step": syncs.in_step / max(syncs.steps, 1),
                       "cuda_syncs_between_forward_and_backward_per_step": syncs.in_window / max(syncs.steps, 1),
                       "cuda_sync_sites": dict(syncs.sites.most_common())})
    return result
