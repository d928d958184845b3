"""``rsb-composer bench-resume``: how long a mid-epoch resume takes to train its first batch, early and late in an
epoch.

For each point (a fraction of an epoch) the recipe trains from scratch up to that batch in a temporary run folder
and checkpoints there, untimed; then the same recipe is started again, resumes from that checkpoint, and is timed
from the start (building the trainer, which loads the checkpoint) to the end of its first trained batch. With the
train sampler starting at the checkpoint's position, that time should not grow with the point. ``replay`` strips
the train dataset's state from the checkpoint first, so Composer falls back to its own way (loading and discarding
every earlier batch of the epoch), for comparison.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from rsb_composer.config import Config, ConfigError
from rsb_composer.run_folder import RunFolder
from rsb_composer.tools.bench_train import quiet_logging


class _FirstBatch(Callback):
    """Notes when the first batch of this fit ends, and stops training there, without the closing evaluation."""

    def __init__(self) -> None:
        self.done_at: float | None = None

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.done_at is None:
            self.done_at = time.perf_counter()
            for evaluator in state.evaluators:
                evaluator.eval_interval = lambda state, event: False
            state.stop_training()


def _strip_dataset_state(checkpoint: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own checkpoint, just written
    state["state"].pop("dataset_state", None)
    torch.save(state, checkpoint)


def _fit(config: Config, batches: int, timed: bool) -> float | None:
    from rsb_composer.trainer import build_trainer

    cfg = replace(config, max_duration=f"{batches}ba")
    start = time.perf_counter()
    trainer = build_trainer(cfg)
    first = _FirstBatch()
    if timed:
        trainer.state.callbacks.append(first)
    trainer.fit()
    trainer.close()
    del trainer
    gc.collect()  # the loader's persistent workers go now, not during the next measurement
    return first.done_at - start if timed and first.done_at is not None else None


def bench_resume(config: Config, points: Sequence[float], replay: bool = False) -> dict:
    """Seconds from the start of a resumed run to the end of its first batch, for a resume at each fraction of the
    first epoch in ``points``."""
    from rsb_composer.data import build_loaders

    with quiet_logging():
        steps = len(build_loaders(config.data, config.seed, config.model.num_classes).train)
    results = []
    for fraction in points:
        batch = int(round(fraction * steps))
        if not 0 < batch < steps:
            raise ConfigError(f"--points {fraction}: lands on batch {batch} of a {steps}-batch epoch; give fractions "
                              "strictly inside the epoch (or a larger data set)")
        with tempfile.TemporaryDirectory(prefix="rsb-bench-resume-") as tmp, quiet_logging():
            cfg = replace(config, run_dir=str(Path(tmp) / "run"), progress_bar=False,
                          eval_interval=f"{10 * steps}ba", loggers={**config.loggers, "wandb": None},
                          checkpoints=replace(config.checkpoints, save_interval=f"{batch}ba", keep_top_k=0))
            _fit(cfg, batch, timed=False)
            if replay:
                _strip_dataset_state(RunFolder(Path(cfg.run_dir)).latest_checkpoint.resolve())
            seconds = _fit(cfg, batch + 1, timed=True)
        results.append({"fraction": fraction, "batch_in_epoch": batch, "seconds_to_first_batch": seconds})
    return {"steps_per_epoch": steps, "replay": replay, "points": results}
