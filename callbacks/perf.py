"""Per-epoch speed of the training steps: ``perf/images_per_sec``, ``perf/data_wait`` and, on GPUs,
``perf/gpu_mem_peak_gib``; a warning when the input pipeline holds the devices back.

All from host timestamps, with no device synchronisation inside a step: a step runs from BEFORE_DATALOADER to
BATCH_END, and its data wait from BEFORE_DATALOADER to AFTER_DATALOADER: the loader's ``next()`` and the batch
transform, which in the fast pipeline copies the batch to the device and normalises it there. (The reference
pipeline's batch is copied inside the step, by Composer, from pinned memory without blocking.) Evaluation,
checkpoint saving and what runs between BATCH_END and the next BEFORE_DATALOADER are outside the steps.

After each ``next()`` Composer 0.32.1 all-reduces whether every rank got a batch, so a rank's data wait ends when
the last rank has its batch: every rank waits for the slowest loader. A rank that arrives late (rank 0 after
saving a checkpoint, which the others wait for there) has the shortest window, the part that no rank spent on
anything but loading. So at EPOCH_END one collective (which waits for the device) gathers, over ranks:
- ``perf/images_per_sec``: the epoch's images over all ranks (the trainer's own count) / the smallest step time;
- ``perf/data_wait``: the smallest data wait / step time, a fraction;
- ``perf/gpu_mem_peak_gib``: the peak of memory allocated by tensors during the epoch's steps, GiB (2**30
  bytes), the largest over ranks (PyTorch's allocator counters, read on the host; evaluation between epochs
  excluded). With ``data.microbatch_size: auto`` the counters are reset again at the end of a step in which
  Composer changed the microbatch size (an out-of-memory retry): the peak is that of the size it settled on, not of
  the attempt that failed.

A resumed epoch reports the steps trained since the restart.
"""

from __future__ import annotations

import logging
import time

import torch
from composer.core import State
from composer.core.callback import Callback
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger("rsb_composer.perf")

GIB = 2**30


class PerfMonitor(Callback):
    def __init__(self, num_workers: int, warn_above: float = 0.10):
        self.num_workers = num_workers  # data.num_workers, named in the warning
        self.warn_above = warn_above
        self.device = torch.device("cpu")  # the model's: NCCL all-reduces only device tensors
        self.gpu: torch.device | None = None  # the model's GPU, whose allocator counts the peak memory
        self._reset(0)

    def _reset(self, samples: int) -> None:
        self.samples_at_start = samples
        self.step_seconds = 0.0
        self.wait_seconds = 0.0
        self.steps = 0
        self._step_start: float | None = None
        self._microbatch_size: int | float | None = None
        if self.gpu is not None:
            torch.cuda.reset_peak_memory_stats(self.gpu)

    def fit_start(self, state: State, logger: Logger) -> None:
        self.device = next(state.model.parameters()).device
        self.gpu = self.device if self.device.type == "cuda" else None
        self._reset(int(state.timestamp.sample))  # a mid-epoch resume measures from here

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._reset(int(state.timestamp.sample))

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._step_start = time.perf_counter()

    def batch_start(self, state: State, logger: Logger) -> None:
        self._microbatch_size = state.device_train_microbatch_size

    def after_dataloader(self, state: State, logger: Logger) -> None:
        if self._step_start is not None:
            self.wait_seconds += time.perf_counter() - self._step_start

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.gpu is not None and state.device_train_microbatch_size != self._microbatch_size:
            torch.cuda.reset_peak_memory_stats(self.gpu)  # an out-of-memory retry settled on a smaller microbatch
        if self._step_start is not None:
            self.step_seconds += time.perf_counter() - self._step_start
            self.steps += 1
            self._step_start = None

    def epoch_end(self, state: State, logger: Logger) -> None:
        wait = self.wait_seconds / self.step_seconds if self.step_seconds > 0 else 0.0
        peak = torch.cuda.max_memory_allocated(self.gpu) / GIB if self.gpu is not None else 0.0
        # One MAX all-reduce for two minima and a maximum.
        figures = torch.tensor([-self.step_seconds, -wait, peak], dtype=torch.float64, device=self.device)
        if dist.get_world_size() > 1 and dist.is_initialized():
            dist.all_reduce(figures, reduce_operation="MAX")
        seconds, wait, peak = -figures[0].item(), -figures[1].item(), figures[2].item()
        if not self.steps or seconds <= 0:
            return  # the epoch trained no step in this launch (a resume at its very end)
        metrics = {
            "perf/images_per_sec": (int(state.timestamp.sample) - self.samples_at_start) / seconds,
            "perf/data_wait": wait,
        }
        if self.gpu is not None:
            metrics["perf/gpu_mem_peak_gib"] = peak
        logger.log_metrics(metrics)
        if wait > self.warn_above and dist.get_global_rank() == 0:
            log.warning("epoch %d: the input pipeline holds the devices back (data_wait %.0f%% of step time): raise "
                        "data.num_workers (now %d) or see rsb-composer bench-data", int(state.timestamp.epoch),
                        100 * wait, self.num_workers)
