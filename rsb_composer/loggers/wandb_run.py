"""Weights & Biases, through Composer's WandBLogger.

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

from composer.loggers import WandBLogger
from composer.utils import dist

from rsb_composer.config import WandbConfig
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
    if not run.wandb_run_id.exists():
        run.wandb_run_id.write_text(secrets.token_hex(4) + "\n")
    return run.wandb_run_id.read_text().strip()


def build_wandb(cfg: WandbConfig, run: RunFolder, run_name: str, resolved: dict[str, Any]) -> tuple[WandBLogger, str]:
    """The logger and where it writes; ``resolved`` (the resolved config) becomes the W&B run config."""
    rank_zero = dist.get_global_rank() == 0  # only rank 0 starts a W&B run (rank_zero_only)
    run_id = wandb_run_id(run) if rank_zero else None
    init_kwargs: dict[str, Any] = {"id": run_id, "resume": "allow", "dir": str(run.root), "config": resolved}
    reason = wandb_offline_reason() if rank_zero else None
    where = f"project {cfg.project}, run {run_id}"
    if reason is not None:
        if reason != "WANDB_MODE=disabled":
            init_kwargs["mode"] = "offline"
        where = f"offline in {run.root / 'wandb'} (run {run_id})"
        log.warning("W&B: logging offline to %s (%s); upload later with `wandb sync %s/wandb/offline-run-*`",
                    run.root / "wandb", reason, run.root)
    logger = LocalCheckpointWandBLogger(project=cfg.project, name=cfg.name or run_name, entity=cfg.entity,
                                        group=cfg.group, tags=cfg.tags or None, init_kwargs=init_kwargs)
    return logger, where
