"""The run folder (``run_dir``): where each file of a run lives, the resolved config, and the text logs."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from composer.utils import dist

from rsb_composer.config import Config

# Composer's checkpoint names in checkpoints/ (its format strings), and rank 0's, which hold the whole state.
CHECKPOINT_FORMAT = "ep{epoch}-ba{batch}-rank{rank}.pt"
LATEST_FORMAT = "latest-rank{rank}.pt"
LATEST = LATEST_FORMAT.format(rank=0)
CHECKPOINT = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")  # rank 0's files named by CHECKPOINT_FORMAT


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
