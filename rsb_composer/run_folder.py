"""The run folder (``run_dir``): where each file of a run lives, how its files are written and read (the
resolved config, ``metrics.csv``), how its figures are printed, and the text logs."""

from __future__ import annotations

import csv
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from composer.utils import dist

from rsb_composer.config import Config
from rsb_composer.eval_metrics import val_keys

# Composer's checkpoint names in checkpoints/ (its format strings), and rank 0's, which hold the whole state.
CHECKPOINT_FORMAT = "ep{epoch}-ba{batch}-rank{rank}.pt"
LATEST_FORMAT = "latest-rank{rank}.pt"
LATEST = LATEST_FORMAT.format(rank=0)
CHECKPOINT = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")  # rank 0's files named by CHECKPOINT_FORMAT


# The project's metric keys, identical in every destination; metrics.csv has one column each, after the epoch
# (an older metrics.csv without the later columns reads and resumes as is: its rows leave them empty). The val/
# keys are the evaluation metrics' (rsb_composer.eval_metrics): val/loss, val/acc1, val/acc5, then any added.
METRIC_KEYS = ("train/loss", "train/acc1", "train/acc5", "train/lr", *val_keys(),
               "perf/images_per_sec", "perf/data_wait", "perf/gpu_mem_peak_gib")
GPU_ONLY_KEYS = ("perf/gpu_mem_peak_gib",)  # measured on GPUs only: empty in a CPU run
COLUMNS = ("epoch", *METRIC_KEYS)


def checkpoint_name(epoch: int, batch: int) -> str:
    return CHECKPOINT_FORMAT.format(epoch=epoch, batch=batch, rank=0)


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest_checkpoint(self) -> Path:
        """Composer's ``latest`` link for autoresume."""
        return self.checkpoints / LATEST

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mlruns(self) -> Path:
        """MLflow's local file store: the default tracking URI, and the fallback when the server is unreachable."""
        return self.root / "mlruns"

    @property
    def mlflow_run_ids(self) -> Path:
        """One ``RUN_ID TRACKING_URI`` line per MLflow store this run has logged to, so a resume continues it."""
        return self.root / "mlflow_run_id"

    @property
    def wandb_run_id(self) -> Path:
        return self.root / "wandb_run_id"

    def log_file(self, rank: int) -> Path:
        return self.logs / f"train_rank{rank}.log"

    def bad_images(self, rank: int) -> Path:
        return self.logs / f"bad_images_rank{rank}.txt"

    def create(self) -> None:
        for folder in (self.root, self.checkpoints, self.logs, self.plots):
            folder.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: Config) -> None:
        tmp = self.config.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        tmp.replace(self.config)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv (none when it does not exist yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Write a metrics.csv whole, atomically: a crash never leaves half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def format_value(value: float | None) -> str:
    """A metric as metrics.csv holds it: 6 significant digits, empty when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}"


def format_metrics(values: dict[str, Any], digits: int = 4) -> str:
    """``key=value`` pairs of the metric keys present, in the keys' order (the epoch line, eval's output).

    Figures of ``digits`` digits or more (images/s) print whole rather than in exponent form."""
    def text(value: float) -> str:
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"

    return " ".join(f"{key}={text(values[key])}" for key in METRIC_KEYS if key in values)


def final_metrics(path: Path) -> dict[str, float]:
    """The last row of a metrics.csv as numbers (empty when there is none)."""
    rows = read_rows(path)
    return {k: float(v) for k, v in rows[-1].items() if v and k != "epoch"} if rows else {}


def format_duration(seconds: float) -> str:
    """3d 04h12m, 2h05m, 12m05s or 45s: coarse for long runs, exact enough for short ones."""
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


LOG_FORMAT = "%(asctime)s [rank %(rank)s] %(levelname)s %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


class _QuietComposer(logging.Filter):
    """Composer's own INFO lines (checkpoint searches, seeds...) go to the log file, not the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("composer")


def setup_logging(run: RunFolder, level: int = logging.INFO) -> None:
    """INFO and up to this rank's log file; to the console from rank 0 (other ranks: warnings only)."""
    rank = dist.get_global_rank()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_rsb_composer", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    file_handler = logging.FileHandler(run.log_file(rank))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.addFilter(_QuietComposer())
    for handler in (file_handler, console):
        handler._rsb_composer = True  # type: ignore[attr-defined]
        handler.addFilter(_RankFilter(rank))
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
