"""``rsb-composer bench-resume-load``: what reading the autoresume checkpoint as data only costs.

Composer 0.32.1 unpickles checkpoints in full (``torch.load(weights_only=False)``); with
:mod:`rsb_composer.composer_fixes` it reads them with torch's weights-only unpickler and our allow-list instead
(:func:`rsb_composer.checkpoints.safe_load.load_data_only`), a Python unpickler checking every object. This
writes a real checkpoint of the recipe (one step of its network, optimizer and algorithms on synthetic data,
through the real trainer) and times both loads of it, alternating, from the page cache.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from rsb_composer.checkpoints.safe_load import load_data_only
from rsb_composer.config import Config
from rsb_composer.run_folder import RunFolder
from rsb_composer.tools.bench_train import synthetic_config


def write_checkpoint(config: Config, run_dir: Path) -> Path:
    """One training step of the recipe (batch 2, 32 px: the checkpoint's size does not depend on them), saved."""
    from rsb_composer.trainer import build_trainer

    cfg = synthetic_config(config, steps=1, run_dir=str(run_dir))
    cfg = replace(cfg, data=replace(cfg.data, batch_size=2, eval_batch_size=2, train_resolution=32,
                                    eval_resolution=32, num_workers=0,
                                    synthetic=replace(cfg.data.synthetic, train_samples=2, val_samples=2)),
                  checkpoints=replace(cfg.checkpoints, save_interval="1ba"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        trainer = build_trainer(cfg)
        trainer.fit()
        trainer.close()
    finally:  # build_trainer pointed logging into the temporary run folder; undo that
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    return RunFolder(run_dir).latest_checkpoint.resolve()


def time_loads(path: Path, repeats: int) -> dict[str, float]:
    full_s, data_only_s = [], []
    for _ in range(repeats):
        for load, times in ((lambda: torch.load(path, map_location="cpu", weights_only=False), full_s),
                            (lambda: load_data_only(path), data_only_s)):
            start = time.perf_counter()
            load()
            times.append(time.perf_counter() - start)
    full, data_only = statistics.median(full_s), statistics.median(data_only_s)
    return {"checkpoint_mib": os.path.getsize(path) / 2**20, "full_unpickling_s": full, "data_only_s": data_only,
            "added_s": data_only - full}


def bench_resume_load(config: Config, repeats: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rsb-bench-load-") as tmp:
        path = write_checkpoint(config, Path(tmp) / "run")
        result = time_loads(path, repeats)
    return {**result, "repeats": repeats}
