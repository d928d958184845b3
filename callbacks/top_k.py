"""Keeps the k best checkpoints by val/acc1 as ``epoch={E}-val_acc1={A:.4f}.ckpt``; the others are deleted.

Written after every evaluation (EVAL_AFTER_ALL, when the training weights are back in place) through Composer's
own save_checkpoint, so a kept file is a full Composer checkpoint (EMA state included) that ``rsb-composer eval``,
``export`` and ``load_path`` all read. Which files exist is the state: on resume the folder is read again.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from composer.utils.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

NAME = re.compile(r"^epoch=(\d+)-val_acc1=(\d+\.\d+)\.ckpt$")


def top_k_name(epoch: int, acc1: float) -> str:
    return f"epoch={epoch}-val_acc1={acc1:.4f}.ckpt"


def kept_checkpoints(folder: Path) -> list[tuple[float, int, Path]]:
    """(val/acc1, epoch, path) of the top-k files in ``folder``, best first (earlier epoch wins a tie)."""
    found = []
    for path in folder.glob("epoch=*-val_acc1=*.ckpt"):
        match = NAME.match(path.name)
        if match:
            found.append((float(match.group(2)), int(match.group(1)), path))
    return sorted(found, key=lambda item: (-item[0], item[1]))


class TopKCheckpoints(Callback):
    def __init__(self, folder: str | Path, k: int, eval_label: str = "eval"):
        self.folder = Path(folder)
        self.k = k
        self.eval_label = eval_label

    def fit_start(self, state: State, logger: Logger) -> None:
        # Files from epochs past the resumed checkpoint belong to a trajectory that is being re-run.
        if dist.get_global_rank() == 0:
            for _, epoch, path in kept_checkpoints(self.folder):
                if epoch > int(state.timestamp.epoch):
                    path.unlink(missing_ok=True)

    def eval_after_all(self, state: State, logger: Logger) -> None:
        metrics = state.eval_metrics.get(self.eval_label, {})
        # Only evaluations that close an epoch compete: the name carries the epoch, and a mid-epoch evaluation
        # (eval_interval in batches) would collide with its epoch's own.
        if self.k <= 0 or "acc1" not in metrics or int(state.timestamp.batch_in_epoch) != 0:
            return
        acc1 = float(metrics["acc1"].compute())
        epoch = int(state.timestamp.epoch)
        # Saving is collective, so every rank must make the same choice. Rank 0 makes it from its listing of the
        # folder and tells the others: nodes may list the folder differently (a run folder per node, NFS attribute
        # caching, a file rank 0 deleted a moment ago), and a rank that entered the save alone would hang.
        decision: list[str | None] = [None]
        if dist.get_global_rank() == 0:
            kept = [item for item in kept_checkpoints(self.folder) if item[1] != epoch]
            if len(kept) < self.k or round(acc1, 4) > kept[self.k - 1][0]:
                decision[0] = top_k_name(epoch, acc1)
        dist.broadcast_object_list(decision, src=0)
        if decision[0] is None:
            return
        path = self.folder / decision[0]
        save_checkpoint(state, str(path))  # every rank takes part; rank 0 writes
        if dist.get_global_rank() != 0:
            return
        for _, old_epoch, old in kept_checkpoints(self.folder):
            if old_epoch == epoch and old != path:
                old.unlink(missing_ok=True)  # an earlier evaluation in the same epoch, now superseded
        for _, _, old in kept_checkpoints(self.folder)[self.k:]:
            old.unlink(missing_ok=True)
        log.info("top-%d checkpoint: %s", self.k, path.name)
