"""The trainer's assembly: a recipe's config built into a Composer Trainer, for training and for evaluation.

:func:`build_trainer` is what ``rsb_composer/train.py`` (the launcher-facing script), the ``rsb-composer train``
command, the benchmarks and the tests build; :func:`prepare` and :func:`fit` are the script's two steps. Importing
this module imports Composer, which reads the launcher's rank variables: the script checks them first
(:func:`rsb_composer.launch.check_integers`).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.callbacks import RuntimeEstimator, SpeedMonitor
from composer.utils import dist, reproducibility

from callbacks.bad_images import BadImageMonitor, TooManyBadImages
from callbacks.buffer_sync import BroadcastBuffersBeforeEval
from callbacks.divergence import DivergenceGuard, TrainingDiverged
from callbacks.metrics import ClassificationMetrics
from callbacks.perf import PerfMonitor
from callbacks.preemption import Preemption
from callbacks.sampler_resume import SamplerResume
from callbacks.top_k import TopKCheckpoints
from rsb_composer import composer_fixes, determinism
from rsb_composer.algorithms import NETWORK_ALGORITHMS, build_algorithms, channels_last_on
from rsb_composer.checkpoints.resume import (
    check_resume_classes,
    check_resume_geometry,
    has_own_checkpoint,
    reconcile_resume,
    repair_latest,
    resumed_run_settings,
)
from rsb_composer.checkpoints.safe_load import load_network, read_weights
from rsb_composer.checkpoints.saving import save_arguments
from rsb_composer.checkpoints.warm_start import warm_start
from rsb_composer.config import Config, ConfigError
from rsb_composer.data import build_eval_loader, build_loaders
from rsb_composer.data.batching import AUTO, BatchGeometry, resolve_batching
from rsb_composer.devices import cpu_report, resolve_device, resolve_precision, visible_gpus
from rsb_composer.launch import check_devices, init_distributed
from rsb_composer.launch import prepare as prepare_launch
from rsb_composer.loggers import Start, build_loggers, startup_lines
from rsb_composer.model import build_model, convert_sync_batchnorm
from rsb_composer.optim import build_optimizer, scaled_lr
from rsb_composer.recipe import load_recipe
from rsb_composer.run_folder import RunFolder, checkpoint_name, final_metrics, format_metrics, setup_logging
from rsb_composer.schedules import build_scheduler

# The name the run's start-up and completion lines have carried since the assembly lived in train.py.
log = logging.getLogger("rsb_composer.train")

# Composer advises its own progress_bar=True over a ProgressBarLogger among the loggers; ours (MetricsProgressBar)
# is one deliberately, with progress_bar=False, so the advice is only noise above the start-up summary.
warnings.filterwarnings("ignore", message="Specifying the ProgressBarLogger via `loggers` is not recommended")


def build_trainer(config: Config) -> Trainer:
    """Build data, model, optimizer, schedule, algorithms and callbacks into a Composer Trainer (no training).

    ``config`` as :func:`rsb_composer.recipe.load_recipe` returns it. Completes the launcher's environment
    (:mod:`rsb_composer.launch`) and starts torch.distributed, waiting ``dist_timeout`` for the other ranks. Fills
    in inferred values (``model.num_classes``) and writes the resolved config to ``run_dir/config.yaml``. With a
    checkpoint in ``run_dir/checkpoints`` the trainer resumes from it, reading it as data only unless
    ``checkpoints.trust``.
    """
    if config.deterministic:
        determinism.configure()
    launch = prepare_launch()
    device = resolve_device()
    data, geometry = resolve_batching(config.data, launch.world_size)
    if geometry.microbatch_size == AUTO and device != "gpu":
        raise ConfigError(f"data.microbatch_size={AUTO}: Composer's out-of-memory back-off needs GPUs; on the CPU give "
                          f"a number of images (a divisor of the per-device batch of {geometry.per_device})")
    check_devices(launch, visible_gpus() if device == "gpu" else 0)
    init_distributed(launch, device, config.dist_timeout)
    composer_fixes.apply(trust_checkpoints=config.checkpoints.trust)
    run = RunFolder(Path(config.run_dir))
    run.create()
    setup_logging(run)
    log.info("%s", launch.summary())  # the console shows rank 0's; each rank's log file has its own
    cpus, too_few = cpu_report(config.data.num_workers)
    log.info("%s", cpus)
    if too_few:
        log.warning("%s", too_few)
    previous = resumed_run_settings(run)
    if previous is not None:
        reconcile_resume(config, previous)
    # Seed before the model exists: its random initialisation must be the same on every start of the same
    # recipe (Composer seeds again inside Trainer, after the model has been built).
    reproducibility.seed_all(config.seed)
    world_size = dist.get_world_size()

    loaders = build_loaders(data, config.seed, config.model.num_classes,
                            channels_last=channels_last_on(config.algorithms),
                            bad_log=run.bad_images(dist.get_global_rank()))
    num_classes = config.model.num_classes or loaders.num_classes
    if previous is not None:
        check_resume_classes(previous, num_classes)
    config.model.num_classes = num_classes

    model = build_model(config.model, num_classes, config.loss)
    if config.deterministic:
        determinism.make_deterministic(model.module)
    if config.model.init_from and has_own_checkpoint(run):
        log.warning("model.init_from=%s ignored: this run resumes from its own checkpoint in %s (autoresume wins)",
                    config.model.init_from, run.checkpoints)
    elif config.model.init_from:
        warm_start(model.module, config.model.init_from, config.model.arch)
    if config.model.compile:
        composer_fixes.prepare_compile()
    if config.model.sync_batchnorm and world_size > 1 and device == "gpu":
        model.module = convert_sync_batchnorm(model.module)

    global_batch = geometry.global_batch
    lr = scaled_lr(config.optimizer, global_batch)
    optimizer = build_optimizer(model, config.optimizer, lr)
    scheduler = build_scheduler(optimizer, config.scheduler, config.max_duration, len(loaders.train))

    if dist.get_global_rank() == 0:
        run.write_config(config)
    if dist.get_local_rank() == 0:
        # The other ranks of this node load only after Composer's autoresume barrier, which local rank 0
        # reaches after this repair.
        repair_latest(run.checkpoints)
    # A progress bar in a log file is a line per update; without a terminal the epoch lines say enough.
    loggers = build_loggers(config, run, progress_bar=config.progress_bar and sys.stderr.isatty())

    trainer = Trainer(
        run_name=config.run_name,
        model=model,
        train_dataloader=loaders.spec(loaders.train),
        eval_dataloader=loaders.spec(loaders.eval),
        max_duration=config.max_duration,
        eval_interval=config.eval_interval,
        optimizers=optimizer,
        schedulers=scheduler,
        step_schedulers_every_batch=True,
        device_train_microbatch_size=geometry.microbatch_size,
        algorithms=build_algorithms(config.algorithms),
        callbacks=[ClassificationMetrics(num_classes), SamplerResume(), RuntimeEstimator(time_unit="seconds"),
                   DivergenceGuard(run.latest_checkpoint), Preemption(run.checkpoints, checkpoint_name),
                   BroadcastBuffersBeforeEval(), PerfMonitor(config.data.num_workers),
                   # images/s over its last 20 steps for the progress bar, from the trainer's own counts
                   SpeedMonitor(window_size=20, time_unit="seconds"),
                   BadImageMonitor(run.bad_images(dist.get_global_rank()), config.data.max_bad_fraction),
                   TopKCheckpoints(run.checkpoints, config.checkpoints.keep_top_k)],
        loggers=loggers.destinations,
        progress_bar=False,  # ours (MetricsProgressBar) is among the loggers when wanted
        log_to_console=False,
        device=device,
        precision=resolve_precision(config.precision, device),
        seed=config.seed,
        deterministic_mode=config.deterministic,
        dist_timeout=config.dist_timeout,
        compile_config={} if config.model.compile else None,
        **save_arguments(config.checkpoints, run),
    )
    try:
        # Reads Composer's record of the devices that saved the checkpoint (trainer._rng_state), so before the
        # random-state restore below takes it.
        check_resume_geometry(trainer, global_batch, world_size)
    except ConfigError:
        trainer.close()
        raise
    composer_fixes.restore_rng_on_dataset_resume(trainer)
    _log_start(config, run, trainer, geometry, lr, loggers.trackers)
    return trainer


def _log_start(config: Config, run: RunFolder, trainer: Trainer, geometry: BatchGeometry, lr: float,
               trackers: dict[str, str]) -> None:
    """The start-up summary, once the trainer knows whether it resumed."""
    timestamp = trainer.state.timestamp
    world_size = dist.get_world_size()
    start = Start(
        recipe=config.config_path or "", run_dir=run.root,
        resumed_from=run.latest_checkpoint.resolve() if int(timestamp.batch) else None,
        epoch=int(timestamp.epoch), batch=int(timestamp.batch), max_duration=config.max_duration,
        world_size=world_size, nodes=world_size // dist.get_local_world_size(), device=trainer.state.device.name,
        precision=trainer.state.precision.value, batching=geometry.describe(), global_batch=geometry.global_batch,
        lr=lr, base_lr=config.optimizer.lr, reference_batch=config.optimizer.reference_batch_size,
        algorithms=config.algorithms, trackers=trackers,
    )
    for line in startup_lines(start):
        log.info("%s", line)


def build_eval_trainer(config: Config, checkpoint: str | Path, trust: bool = False) -> Trainer:
    """A trainer that evaluates ``checkpoint``'s network on the val split (``trainer.eval()``), writing nothing.

    The network is the recipe's, shaped by the algorithms that change it (BlurPool, ...), with the checkpoint's
    weights (EMA's when it has them, as training evaluated them), read without running pickled code unless
    ``trust``. Only the val split is read: the classes come from the train split's folder names.
    """
    found = read_weights(checkpoint, trust=trust, prefer_ema=True)
    if found.folded:
        log.warning("%s was %s", checkpoint, found.folded)
    reproducibility.seed_all(config.seed)
    data, _ = resolve_batching(config.data, dist.get_world_size())
    loaders = build_eval_loader(data, config.seed, config.model.num_classes,
                                channels_last=channels_last_on(config.algorithms))
    return build_eval_network(config, found.weights, checkpoint, loaders.num_classes, loaders.spec(loaders.eval))


def build_eval_network(config: Config, weights: dict[str, torch.Tensor], source: str | Path, num_classes: int,
                       eval_dataloader: Any = None) -> Trainer:
    """A trainer holding the recipe's network with ``weights`` (read from ``source``) and no training state.

    The algorithms that change the network (BlurPool, channels-last, ...) shape it, as in training; a checkpoint
    of another network is refused with what differs. ``eval_dataloader``: what ``trainer.eval()`` reads, if any.
    """
    reproducibility.seed_all(config.seed)
    device = resolve_device()
    config.model.num_classes = config.model.num_classes or num_classes
    shaping = {name: args for name, args in config.algorithms.items() if name in NETWORK_ALGORITHMS}
    with warnings.catch_warnings():
        # It never steps an optimizer; Composer's advice that it made a default one is noise in eval and export.
        warnings.filterwarnings("ignore", message="No optimizer was specified", category=UserWarning)
        trainer = Trainer(
            run_name=config.run_name, model=build_model(config.model, config.model.num_classes, config.loss),
            eval_dataloader=eval_dataloader, algorithms=build_algorithms(shaping), loggers=[],
            progress_bar=False, log_to_console=False, device=device,
            precision=resolve_precision(config.precision, device), seed=config.seed,
        )
    load_network(trainer.state.model.module, weights, source)
    return trainer


def is_complete(trainer: Trainer) -> bool:
    state = trainer.state
    return state.max_duration is not None and state.timestamp.get(state.max_duration.unit) >= state.max_duration


# What ends a run early with a one-line reason rather than a traceback (train.py's exit status 1).
RUN_FAILURES: tuple[type[Exception], ...] = (TrainingDiverged, TooManyBadImages)


def prepare(config_path: str, overrides: Sequence[str]) -> tuple[Config, Trainer]:
    """Load and check the recipe, then build its trainer; raises ConfigError (one line) for a bad recipe or launch."""
    config = load_recipe(config_path, overrides)
    return config, build_trainer(config)


def fit(config: Config, trainer: Trainer) -> None:
    """Train to ``max_duration`` (a run already complete logs its final metrics instead), then close the trainer.

    Raises one of :data:`RUN_FAILURES` when training stops itself (the trainer closed first).
    """
    if is_complete(trainer):
        final = format_metrics(final_metrics(RunFolder(Path(config.run_dir)).metrics_csv))
        log.info("run %s is already complete (%s); final metrics: %s", config.run_name, config.max_duration,
                 final or "none recorded")
    else:
        try:
            trainer.fit()
        except RUN_FAILURES:
            trainer.close()
            raise
    trainer.close()
