"""One row per epoch of the project's metric keys: ``metrics.csv`` in the run folder and a summary log line.

A LoggerDestination, so it sees exactly what every other destination (console, W&B) is sent. Rows are
written at EPOCH_CHECKPOINT, after the epoch's evaluation. On resume, rows past the checkpoint's epoch (an
epoch that ran again after a crash) are dropped, so each epoch appears once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from rsb_composer.run_folder import METRIC_KEYS, format_duration, format_metrics, format_value, read_rows, write_rows

log = logging.getLogger("rsb_composer.metrics")


class MetricsTable(LoggerDestination):
    def __init__(self, csv_path: str | Path):
        self.csv_path = Path(csv_path)
        self.latest: dict[str, float] = {}
        self.remaining_seconds: float | None = None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for key, value in metrics.items():
            if key in METRIC_KEYS:
                self.latest[key] = float(value)
        if "time/remaining_estimate" in metrics:  # Composer's RuntimeEstimator, in seconds, evaluations included
            self.remaining_seconds = float(metrics["time/remaining_estimate"])

    def state_dict(self) -> dict[str, Any]:
        # A resume at the very end of an epoch trains no batch before writing its row: keep what was logged.
        return {"latest": dict(self.latest)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.latest = {k: float(v) for k, v in state.get("latest", {}).items() if k in METRIC_KEYS}

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        done = int(state.timestamp.epoch)
        rows = [row for row in read_rows(self.csv_path) if float(row["epoch"]) <= done]
        write_rows(self.csv_path, rows)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self._emit(float(state.timestamp.epoch), state)

    def fit_end(self, state: State, logger: Logger) -> None:
        # A max_duration in batches can end mid-epoch; its final evaluation still deserves a row.
        if any(key.startswith("val/") for key in self.latest) and int(state.timestamp.batch_in_epoch) > 0:
            steps = state.dataloader_len
            fraction = int(state.timestamp.batch_in_epoch) / int(steps) if steps else 0.0
            self._emit(float(state.timestamp.epoch) + fraction, state)

    def _emit(self, epoch: float, state: State) -> None:
        values = dict(self.latest)
        epoch_text = str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.3f}"
        total = state.max_duration
        left = ""
        if self.remaining_seconds is not None:
            left = f" | run time left {format_duration(self.remaining_seconds)}"
        log.info("epoch %s%s: %s%s", epoch_text, f"/{total.value}" if total and total.unit.value == "ep" else "",
                 format_metrics(values), left)
        if dist.get_global_rank() == 0:
            row = {"epoch": epoch_text, **{k: format_value(values.get(k)) for k in METRIC_KEYS}}
            write_rows(self.csv_path, [*read_rows(self.csv_path), row])
        # val/* belong to one evaluation: an epoch without one must not repeat the previous figures.
        for key in [k for k in self.latest if k.startswith("val/")]:
            del self.latest[key]
