"""What the trainer saves: Composer's checkpoints for autoresume, in the run folder's ``checkpoints/``."""

from __future__ import annotations

from typing import Any

from rsb_composer.config import CheckpointsConfig, check, check_time
from rsb_composer.run_folder import CHECKPOINT_FORMAT, LATEST_FORMAT, RunFolder


def check_checkpoints(cfg: CheckpointsConfig) -> None:
    check_time("checkpoints.save_interval", cfg.save_interval)
    check(cfg.keep_last == -1 or cfg.keep_last >= 1, "checkpoints.keep_last", cfg.keep_last,
          "keep at least 1 checkpoint (or -1 for all)")
    check(cfg.keep_top_k >= 0, "checkpoints.keep_top_k", cfg.keep_top_k, "must be 0 (none) or more")


def save_arguments(cfg: CheckpointsConfig, run: RunFolder) -> dict[str, Any]:
    """Composer Trainer arguments: save into the run folder, keep ``keep_last``, resume from it automatically."""
    return {
        "save_folder": str(run.checkpoints),
        "save_filename": CHECKPOINT_FORMAT,
        "save_latest_filename": LATEST_FORMAT,
        "save_interval": cfg.save_interval,
        "save_num_checkpoints_to_keep": cfg.keep_last,
        "autoresume": True,
    }
