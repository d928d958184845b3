"""A step that runs out of memory and is retried with smaller microbatches (``data.microbatch_size: auto``): train
accuracy counts each image once, and the peak-memory counters restart once Composer has settled the size.

Composer's retry loop runs here for real, on the CPU: Composer refuses "auto" without a GPU at construction, so the
test switches ``state.auto_microbatching`` on afterwards, and the loss raises ``torch.cuda.OutOfMemoryError`` on
the first attempt of the first step, after the forward pass (as a CUDA allocation in the backward pass would). The
CUDA allocator's peak counters cannot run without a GPU: those two functions are replaced by recorders.
"""

from __future__ import annotations

import pytest
import torch
from composer import Trainer
from composer.models import ComposerClassifier
from torch.utils.data import DataLoader, TensorDataset

from callbacks.metrics import ClassificationMetrics
from callbacks.perf import PerfMonitor

IMAGES, BATCH, CLASSES = 32, 8, 4


class OutOfMemoryOnce:
    def __init__(self):
        self.calls = 0

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (raised by the test)")
        return torch.nn.functional.cross_entropy(outputs, targets)


def test_a_retried_step_is_counted_once_and_its_failed_peak_is_dropped(monkeypatch):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(IMAGES, 3, 8, 8), torch.arange(IMAGES) % CLASSES)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, CLASSES))
    metrics, perf = ClassificationMetrics(CLASSES), PerfMonitor(num_workers=0)
    counted: list[float] = []
    epoch_end = ClassificationMetrics.epoch_end

    def record_then_log(self, state, logger):
        counted.append(self._global_counts()[2].item())  # the images the epoch's accuracy is over
        epoch_end(self, state, logger)

    monkeypatch.setattr(ClassificationMetrics, "epoch_end", record_then_log)
    trainer = Trainer(model=ComposerClassifier(network, num_classes=CLASSES, loss_fn=OutOfMemoryOnce()),
                      train_dataloader=DataLoader(data, batch_size=BATCH), max_duration="1ep",
                      device_train_microbatch_size=BATCH, callbacks=[metrics, perf], device="cpu",
                      progress_bar=False, log_to_console=False)
    trainer.state.auto_microbatching = True  # Composer's OOM back-off, which it enables on GPUs only

    resets: list[int] = []  # the step (batches done) at each reset of the peak counters
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: resets.append(int(trainer.state.timestamp.batch)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    fit_start = PerfMonitor.fit_start

    def on_a_gpu(self, state, logger):
        fit_start(self, state, logger)
        self.gpu = torch.device("cuda", 0)  # the recorders above stand in for its allocator

    monkeypatch.setattr(PerfMonitor, "fit_start", on_a_gpu)
    with pytest.warns(RuntimeWarning, match="Train microbatch size will be decreased from 8 -> 4"):  # Composer's
        trainer.fit()

    assert trainer.state.device_train_microbatch_size == BATCH // 2  # the retry halved it, then it stayed
    assert counted == [IMAGES]  # not IMAGES + BATCH: the abandoned attempt's forward is not counted
    # Reset at epoch start (before any step), then at the end of the retried first step; not after later steps.
    assert resets == [0, 1], resets
