"""Logger destinations of a run: metrics.csv, plots, the progress bar and Weights & Biases.

W&B never blocks a run: without an API key, with WANDB_MODE=offline or without a network it logs offline into
``run_dir/wandb`` (sync later with ``wandb sync``), saying so once. The W&B run id is kept in the run folder, so
an autoresumed run continues the same W&B run.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import socket
from typing import Any

from composer.loggers import LoggerDestination, ProgressBarLogger, WandBLogger
from composer.utils import dist

from callbacks.metrics_table import MetricsTable
from callbacks.plots import RunPlots
from rsb_composer.config import Config
from rsb_composer.run_folder import RunFolder

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


class LocalCheckpointWandBLogger(WandBLogger):
    """Composer's WandBLogger for a run whose checkpoints live on disk, not in W&B artifacts.

    Composer 0.32.1's autoresume asks every logger for a remote ``latest`` checkpoint before W&B is initialised,
    and WandBLogger then raises "get_file_artifact can only be called after running init()" on a fresh run.
    This project never uploads checkpoints to W&B, so there is nothing to download: say "not found".
    Remove when the pinned Composer answers FileNotFoundError there itself (mosaicml/composer#2680, open).
    """

    def download_file(self, remote_file_name: str, destination: str, overwrite: bool = False,
                      progress_bar: bool = True) -> None:
        raise FileNotFoundError(f"{remote_file_name}: checkpoints are not stored in W&B")


class MetricsProgressBar(ProgressBarLogger):
    """Composer's progress bar (batches/s, the epoch's ETA) showing the latest step loss and val/acc1."""

    SHOWN = ("train/loss", "val/acc1")

    def __init__(self) -> None:
        super().__init__()
        self._val_acc1: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        shown: dict[str, Any] = {}
        if "loss/train/total" in metrics:
            shown["train/loss"] = float(metrics["loss/train/total"])
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


def wandb_offline_reason() -> str | None:
    """Why W&B must run offline here, or None when it can go online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if not os.environ.get("WANDB_API_KEY"):
        try:
            has_key = netrc.netrc().authenticators(WANDB_HOST) is not None
        except (OSError, netrc.NetrcParseError):
            has_key = False
        if not has_key:
            return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    try:
        socket.create_connection((WANDB_HOST, 443), timeout=3).close()
    except OSError:
        return f"{WANDB_HOST} is unreachable"
    return None


def wandb_run_id(run: RunFolder) -> str:
    """The W&B run id of this run folder, created on the first start and reused on every resume."""
    path = run.root / "wandb_run_id"
    if not path.exists():
        path.write_text(secrets.token_hex(4) + "\n")
    return path.read_text().strip()


def build_wandb(config: Config, run: RunFolder) -> WandBLogger:
    cfg = config.loggers.wandb
    assert cfg is not None
    rank_zero = dist.get_global_rank() == 0  # only rank 0 starts a W&B run (rank_zero_only)
    init_kwargs: dict[str, Any] = {
        "id": wandb_run_id(run) if rank_zero else None,
        "resume": "allow",
        "dir": str(run.root),
        "config": config.to_dict(),
    }
    reason = wandb_offline_reason() if rank_zero else None
    if reason is not None:
        if reason != "WANDB_MODE=disabled":
            init_kwargs["mode"] = "offline"
        log.warning("W&B: logging offline to %s (%s); upload later with `wandb sync %s/wandb/offline-run-*`",
                    run.root / "wandb", reason, run.root)
    return LocalCheckpointWandBLogger(project=cfg.project, name=cfg.name, entity=cfg.entity, group=cfg.group,
                                      tags=cfg.tags or None, init_kwargs=init_kwargs)


def build_loggers(config: Config, run: RunFolder, progress_bar: bool) -> list[LoggerDestination]:
    """Order matters: the table writes metrics.csv at EPOCH_CHECKPOINT before the plots read it."""
    loggers: list[LoggerDestination] = [MetricsTable(run.metrics_csv), RunPlots(run.plots, run.metrics_csv)]
    if progress_bar:
        loggers.append(MetricsProgressBar())
    if config.loggers.wandb is not None:
        loggers.append(build_wandb(config, run))
    return loggers
