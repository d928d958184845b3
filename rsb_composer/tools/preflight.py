"""``rsb-composer preflight``: the deployment notes' pre-flight checklist, each line checked for real.

Every line prints a mark (``[ok]``, ``[!!]`` for a warning that does not block, ``[FAIL]``) and what was found;
a failing line says what to fix. The exit code is 0 only when nothing failed.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rsb_composer.algorithms import channels_last_on
from rsb_composer.config import FAIL, OK, WARN, Config, ConfigError, PreflightCheck
from rsb_composer.data.batching import AUTO, batch_geometry, resolve_batching
from rsb_composer.recipe import load_recipe

Check = PreflightCheck  # one line: mark (OK, WARN, FAIL), title, detail; the registries' pre-flight checks give these


def _config(path: str, overrides: Sequence[str]) -> tuple[Config | None, Check]:
    try:
        config = load_recipe(path, overrides, check_paths=False)
    except ConfigError as err:
        return None, Check(FAIL, "configuration", str(err))
    return config, Check(OK, "configuration", f"{path} is valid ({config.run_name}, {config.max_duration})")


def _data(config: Config, world_size: int) -> tuple[object | None, Check]:
    from rsb_composer.data import build_loaders, check_data

    try:
        check_data(config.data, config.model.num_classes, check_paths=True)
        data, geometry = resolve_batching(config.data, world_size)
        loaders = build_loaders(data, config.seed, config.model.num_classes,
                                channels_last=channels_last_on(config.algorithms))
    except ConfigError as err:
        return None, Check(FAIL, "data readable", str(err))
    train, val = loaders.train.dataset, loaders.eval.dataset
    per_rank = len(train) // world_size
    if per_rank < geometry.per_device:
        return None, Check(FAIL, "data readable", f"the per-device batch of {geometry.per_device} is larger than a "
                           f"rank's share of the train split ({len(train)} images / {world_size} ranks = {per_rank})")
    try:
        for index in (0, len(train) - 1):
            train[index]
        val[0]
    except Exception as err:  # noqa: BLE001 - any failure to decode is the finding
        return None, Check(FAIL, "data readable", f"decoding a sample failed: {type(err).__name__}: {err}")
    return loaders, Check(OK, "data readable", f"{config.data.source}: train {len(train)} images, val {len(val)} "
                          f"images, {loaders.num_classes} classes; samples decode")


def _loader_speed(loaders, batches: int) -> tuple[float | None, Check]:
    from rsb_composer.data.throughput import measure_loader

    try:
        speed = measure_loader(loaders.train, batches, loaders.batch_transform)
    except ValueError as err:
        return None, Check(WARN, "train loader speed", str(err))
    return speed, Check(OK, "train loader speed", f"{speed:,.0f} images/s per process over {batches} batches "
                        f"({loaders.train.num_workers} workers)")


def _devices(config: Config) -> Check:
    import torch

    if not torch.cuda.is_available():
        note = f"; precision={config.precision} will fall back to fp32" if config.precision != "fp32" else ""
        if config.data.microbatch_size == AUTO:
            note += f"; data.microbatch_size={AUTO} needs GPUs (refused on the CPU)"
        return Check(WARN, "devices", f"no GPU visible, training runs on the CPU{note}")
    gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    names = ", ".join(f"{g.name} ({g.total_memory / 2**30:.0f} GiB)" for g in gpus)
    return Check(OK, "devices", f"{len(gpus)} GPU(s): {names}")


def _scale(config: Config, world_size: int) -> Check:
    from rsb_composer.optim import scaled_lr

    try:
        geometry = batch_geometry(config.data, world_size)
    except ConfigError as err:
        return Check(FAIL, "world size and LR", str(err))
    lr = scaled_lr(config.optimizer, geometry.global_batch)
    rule = "" if geometry.global_fixed else " (per-device data.batch_size: the LR scales with the world size)"
    return Check(OK, "world size and LR", f"world size {world_size}, {geometry.describe()}, LR {lr:.6g} = "
                 f"{config.optimizer.lr:g} x {geometry.global_batch} / {config.optimizer.reference_batch_size}{rule}")


def _trackers(config: Config) -> list[Check]:
    """Each tracker's own pre-flight line (its options, or None when it is off): where it will log."""
    from rsb_composer.loggers import TRACKERS

    found = (TRACKERS.preflight(name, config.loggers.get(name), config) for name in TRACKERS)
    return [check for check in found if check is not None]


def checkpoint_bytes(config: Config, num_classes: int) -> int:
    """One Composer checkpoint: weights plus the optimizer's state tensors (its registry entry says how many), fp32."""
    import torchvision

    from rsb_composer.optim import OPTIMIZERS

    model = torchvision.models.get_model(config.model.arch, weights=None, num_classes=num_classes)
    params = sum(p.numel() for p in model.parameters())
    states = OPTIMIZERS.pick(config.optimizer.name).state_tensors
    return params * 4 * (1 + states)


def _disk(config: Config, num_classes: int) -> Check:
    keep = config.checkpoints.keep_last if config.checkpoints.keep_last > 0 else 100
    count = keep + config.checkpoints.keep_top_k + 1  # +1: the next one is written before the oldest goes
    need = checkpoint_bytes(config, num_classes) * count
    folder = Path(config.run_dir)
    probe = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    detail = f"{free / 2**30:,.1f} GiB free at {probe}; {count} checkpoints need about {need / 2**30:,.1f} GiB"
    return Check(OK if free > need else FAIL, "disk for checkpoints",
                 detail if free > need else detail + ": free space or lower checkpoints.keep_last/keep_top_k")


def _estimate(config: Config, world_size: int, images: int, speed: float | None) -> Check:
    from rsb_composer.data.samplers import steps_per_epoch
    from rsb_composer.run_folder import format_duration
    from rsb_composer.schedules import total_epochs

    if not speed:
        return Check(WARN, "time estimate", "no loader speed measured")
    per_device = batch_geometry(config.data, world_size).per_device
    steps = steps_per_epoch(images, per_device, config.data.repeated_augmentation, world_size)
    epoch_seconds = steps * per_device / speed  # every rank reads its shard in parallel
    epochs = total_epochs(config.max_duration, max(steps, 1))
    return Check(OK, "time estimate", f"data-bound: an epoch ({steps} steps) takes at least "
                 f"{format_duration(epoch_seconds)}, the run ({epochs:g} epochs) at least "
                 f"{format_duration(epoch_seconds * epochs)}; `rsb-composer bench-train` measures the model's side")


def run_preflight(path: str, overrides: Sequence[str], world_size: int, batches: int,
                  out: Callable[[str], None] = print) -> int:
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        out(f"[{check.mark:>4}] {check.title}: {check.detail}")

    config, check = _config(path, overrides)
    report(check)
    if config is None:
        out("preflight: NOT READY (the configuration must be fixed before anything else can be checked)")
        return 1
    loaders, check = _data(config, world_size)
    report(check)
    speed = None
    if loaders is not None:
        speed, check = _loader_speed(loaders, batches)
        report(check)
    report(_devices(config))
    report(_scale(config, world_size))
    for check in _trackers(config):
        report(check)
    num_classes = config.model.num_classes or (loaders.num_classes if loaders is not None else 1000)
    report(_disk(config, num_classes))
    if loaders is not None:
        report(_estimate(config, world_size, len(loaders.train.dataset), speed))
    failed = [c for c in checks if c.mark == FAIL]
    out(f"preflight: {'NOT READY' if failed else 'ready'} ({len(failed)} failing, "
        f"{sum(c.mark == WARN for c in checks)} warnings)")
    sys.stdout.flush()
    return 1 if failed else 0
