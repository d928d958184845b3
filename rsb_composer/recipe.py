"""A recipe, loaded and checked: the one entry point train.py, the CLI and the tools read configs through.

:func:`load_recipe` reads the YAML and the overrides (:func:`rsb_composer.config.load_config`) and asks each
module that builds a section to check it, so a bad value fails in seconds, before any model or data work, with
one line naming the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rsb_composer.algorithms import check_algorithms
from rsb_composer.checkpoints.saving import check_checkpoints
from rsb_composer.config import Config, ConfigError, check_time, load_config
from rsb_composer.data.batching import AUTO
from rsb_composer.data.loaders import check_data, decodes_images
from rsb_composer.devices import check_precision
from rsb_composer.launch import check_dist_timeout
from rsb_composer.loggers import check_loggers
from rsb_composer.losses import check_loss
from rsb_composer.model import check_model
from rsb_composer.optim import check_optimizer
from rsb_composer.run_folder import RunFolder
from rsb_composer.schedules import check_scheduler

log = logging.getLogger(__name__)


def check_recipe(config: Config, check_paths: bool = True) -> None:
    """Every section checked by its owner; ``check_paths=False`` skips the data folders (for tools that only
    read the recipe, such as show-config, on a machine without the data)."""
    check_precision(config.precision)
    check_time("max_duration", config.max_duration)
    check_time("eval_interval", config.eval_interval)
    check_dist_timeout(config.dist_timeout)
    check_checkpoints(config.checkpoints)
    check_model(config.model)
    check_data(config.data, config.model.num_classes, check_paths=check_paths)
    check_loss(config.loss)
    check_optimizer(config.optimizer)
    check_scheduler(config.scheduler)
    check_algorithms(config.algorithms, decoded_images=decodes_images(config.data))
    check_loggers(config.loggers)
    check_combinations(config)


def check_combinations(config: Config) -> None:
    """Settings of different sections that each work alone and cannot work together, refused in one line naming
    both keys (docs/configuration.md lists them)."""
    if config.model.sync_batchnorm and config.data.microbatch_size == AUTO:
        raise ConfigError("model.sync_batchnorm=true with data.microbatch_size=auto: when one rank runs out of memory "
                          "mid-forward and retries, the others wait inside SyncBatchNorm's collective, a hang (neither "
                          "Composer nor torch checks it); set data.microbatch_size to a number, or "
                          "model.sync_batchnorm=false")
    if config.model.sync_batchnorm and config.algorithms.get("ghost_batchnorm") is not None:
        raise ConfigError("model.sync_batchnorm=true with algorithms.ghost_batchnorm: ghost BatchNorm normalises small "
                          "virtual batches, SyncBatchNorm the batch of every GPU together; set one of them off")


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = (), *, check_paths: bool = True) -> Config:
    """Load a recipe YAML with ``key.sub=value`` overrides and check it; raises ConfigError (one line)."""
    config = load_config(path, overrides)
    check_recipe(config, check_paths=check_paths)
    return config


def recipe_of_checkpoint(checkpoint: str | Path, config: str | None) -> Config:
    """The recipe to describe the export with: ``--config``, else the run folder's ``config.yaml`` (a checkpoint
    in ``run_dir/checkpoints/`` has it at ``run_dir/config.yaml``)."""
    if config is not None:
        return load_recipe(config, check_paths=False)
    run_config = RunFolder(Path(checkpoint).parent.parent).config
    if not run_config.is_file():
        raise ConfigError(f"--format timm records the recipe's resolution, crop and interpolation, and there is no "
                          f"run config at {run_config}: pass --config RECIPE.yaml (the recipe it was trained with)")
    log.info("recipe: %s", run_config)
    return load_recipe(run_config, check_paths=False)
