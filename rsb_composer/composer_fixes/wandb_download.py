"""A fresh autoresume run with a W&B logger (Composer 0.32.1's ``WandBLogger.download_file``).

Composer 0.32.1's autoresume asks every logger for a remote ``latest`` checkpoint before W&B is initialised, and
WandBLogger then raises "get_file_artifact can only be called after running init()" on a fresh run. This project
never uploads checkpoints to W&B, so there is nothing to download: :class:`LocalCheckpointWandBLogger` says "not
found" where the installed Composer is in the workaround's range (``rsb_composer.composer_fixes.FIXES``), and is
Composer's own logger elsewhere.
"""

from __future__ import annotations

from composer.loggers import WandBLogger

from rsb_composer.composer_fixes import applies


class LocalCheckpointWandBLogger(WandBLogger):
    """Composer's WandBLogger for a run whose checkpoints live on disk, not in W&B artifacts."""

    def download_file(self, remote_file_name: str, destination: str, overwrite: bool = False,
                      progress_bar: bool = True) -> None:
        if not applies("wandb_download"):
            return super().download_file(remote_file_name, destination, overwrite, progress_bar)
        raise FileNotFoundError(f"{remote_file_name}: checkpoints are not stored in W&B")
