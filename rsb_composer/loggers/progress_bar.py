"""The terminal's progress bar: Composer's, with the figures a person watches a run by."""

from __future__ import annotations

from typing import Any

from composer.loggers import ProgressBarLogger

# Composer's SpeedMonitor (among the trainer's callbacks): images/s over its last window of steps, all ranks.
THROUGHPUT_KEY = "throughput/samples_per_sec"


class MetricsProgressBar(ProgressBarLogger):
    """Composer's progress bar (batches/s, the epoch's ETA) showing the latest step loss, images/s and val/acc1,
    without Composer's dump of its hyper-parameters above it (the start-up summary says what matters)."""

    SHOWN = ("train/loss", "images/s", "val/acc1")

    def __init__(self) -> None:
        super().__init__()
        self._val_acc1: float | None = None
        self.hparams_already_logged_to_console = True

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        shown: dict[str, Any] = {}
        if "loss/train/total" in metrics:
            shown["train/loss"] = float(metrics["loss/train/total"])
        if THROUGHPUT_KEY in metrics:
            shown["images/s"] = round(float(metrics[THROUGHPUT_KEY]))
        if "val/acc1" in metrics:
            self._val_acc1 = float(metrics["val/acc1"])
        if self._val_acc1 is not None:
            shown["val/acc1"] = self._val_acc1
        if shown:
            # Composer's bars keep only keys containing 'loss/train' or 'eval', whether built new or restored
            # from a checkpoint's progress-bar state, and would drop ours.
            for bar in (self.train_pbar, self.eval_pbar):
                if bar is not None:
                    bar.keys_to_log = list(self.SHOWN)
            self.log_to_pbar(shown)
