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
from dataclasses import dataclass, field
from typing import Any

from composer.loggers import WandBLogger
from composer.utils import dist

from rsb_composer.composer_fixes.wandb_download import LocalCheckpointWandBLogger
from rsb_composer.config import OK, WARN, Config, PreflightCheck, nothing_to_check
from rsb_composer.loggers.trackers import TRACKERS, Tracker
from rsb_composer.run_folder import RunFolder

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


@dataclass
class WandbOptions:
    """``loggers.wandb``."""

    project: str | None = None
    name: str | None = None  # default: run_name
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


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


def build_wandb(cfg: WandbOptions, run: RunFolder, run_name: str, resolved: dict[str, Any]) -> tuple[WandBLogger, str]:
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


def preflight_wandb(cfg: WandbOptions | None, config: Config) -> PreflightCheck:
    """Whether W&B will log online, or offline (and why)."""
    if cfg is None:
        return PreflightCheck(OK, "W&B", "off (add loggers.wandb.project=NAME to log to W&B)")
    reason = wandb_offline_reason()
    if reason is None:
        return PreflightCheck(OK, "W&B", f"online, project {cfg.project}")
    return PreflightCheck(WARN, "W&B", f"will log offline ({reason}); sync later with `wandb sync`")


TRACKERS.add(
    "wandb", Tracker("W&B", WandbOptions, build_wandb),
    doc="Weights & Biases (``loggers.wandb.{project,name,entity,group,tags}``): every metric key and the resolved "
        "config, online with an API key and a route to api.wandb.ai, else offline into run_dir/wandb (sync later); "
        "an autoresumed run continues the same W&B run.",
    check=nothing_to_check,  # wandb is a dependency, and every option is a free-form name
    preflight=preflight_wandb,
)
