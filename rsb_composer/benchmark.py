"""Throughput measurements: the train loader, the real trainer, and the same model in a plain PyTorch loop.

``bench_train`` runs the configured recipe through :func:`rsb_composer.train.build_trainer` on synthetic data
(callbacks and algorithms included) and, between its steps, the same model, batch, optimizer, loss and
precision in a bare loop, timing both; the ratio says what the trainer's machinery costs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torch.utils.data import DataLoader

from rsb_composer.config import Config, ConfigError, DataConfig, SyntheticConfig
from rsb_composer.data import index_cache
from rsb_composer.devices import resolve_device, resolve_precision
from rsb_composer.losses import build_loss
from rsb_composer.model import build_model, prepare_compile
from rsb_composer.optim import build_optimizer, scaled_lr

log = logging.getLogger(__name__)


def reference_config(config: Config) -> Config:
    """The same settings through the reference pipeline: torchvision's ImageFolder (PIL decoding) with timm's
    create_transform (RandomResizedCrop, flip, RandAugment from the same string, float tensors normalised on the
    CPU), and the same batch size, workers and sampler."""
    return replace(config, data=replace(config.data, pipeline="reference"))


def bench_data(config: Config, batches: int, reference: bool = False) -> dict[str, float]:
    """Images per second of the configured train loader; with ``reference``, of the reference pipeline too.

    With both, each pipeline's CPU time per image (read, decode, augment; one process, one thread, as in a
    worker) is measured first, then each loader twice, alternating (ours, reference, ours, reference), keeping
    the better figures: whichever went first would otherwise pay alone for a cold file cache or a busy machine.
    Worker processes are shut down after each measurement, so one loader's prefetching never runs beside the
    other's timing.
    """
    from rsb_composer.data import build_loaders

    if config.data.source == "synthetic":
        raise ValueError("data.source=synthetic has no images to decode: use imagefolder, toy or streaming")
    config = replace(config, data=replace(config.data, persistent_workers=False))
    candidates = [build_loaders(config)]
    if reference:
        candidates.append(build_loaders(reference_config(config)))
    result: dict[str, float] = {}
    if reference:
        images = min(256, len(candidates[0].train.dataset))
        costs = [[cpu_ms_per_image(c.train.dataset, images) for c in candidates] for _ in range(2)]
        result["ms_per_image"] = min(c[0] for c in costs)
        result["reference_ms_per_image"] = min(c[1] for c in costs)
    speeds: list[list[float]] = [[] for _ in candidates]
    for _ in range(2 if reference else 1):
        for loaders, measured in zip(candidates, speeds, strict=True):
            measured.append(measure_loader(loaders.train, batches, loaders.batch_transform))
    result["images_per_sec"] = max(speeds[0])
    if reference:
        result["reference_images_per_sec"] = max(speeds[1])
        result["ratio"] = result["images_per_sec"] / result["reference_images_per_sec"]
    return result


def cpu_ms_per_image(dataset: Any, images: int) -> float:
    """Milliseconds one process spends per train sample (read, decode, augment), on one thread as in a worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    try:
        dataset[0]
        start = time.perf_counter()
        for index in range(images):
            dataset[index]
        return (time.perf_counter() - start) / images * 1e3
    finally:
        torch.set_num_threads(threads)


def measure_loader(loader: DataLoader, batches: int, batch_transform: Callable[[Any], Any] | None = None,
                   warmup: int = 2) -> float:
    """Images per second the loader delivers (after ``warmup`` batches that pay for worker start-up), with the
    trainer's ``batch_transform`` (the fast pipeline's normalisation) applied to each batch, as in training."""
    if warmup < 1:
        raise ValueError("warmup must be at least 1 batch")
    images, start = 0, None
    iterator = iter(loader)
    try:
        for index, batch in enumerate(iterator):
            if batch_transform is not None:
                batch = batch_transform(batch)
            if index >= warmup:
                images += len(batch[0])
            if index == warmup - 1:  # the clock starts once the last warm-up batch is in hand
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if index + 1 >= warmup + batches:
                break
        if start is None or images == 0:
            raise ValueError("the loader ran out before the measurement: lower --batches")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)
    finally:
        del iterator  # without persistent workers this stops the worker processes now


def synthetic_config(config: Config, steps: int, run_dir: str) -> Config:
    """The recipe on synthetic tensors: same model, batch, resolution, optimizer and algorithms."""
    data: DataConfig = replace(
        config.data, source="synthetic", num_workers=min(config.data.num_workers, 4), repeated_augmentation=0,
        synthetic=SyntheticConfig(num_classes=config.model.num_classes or 1000,
                                  train_samples=config.data.batch_size * steps,
                                  val_samples=config.eval_batch_size),
    )
    algorithms = {k: v for k, v in config.algorithms.items() if k not in ("randaugment", "augmix")}
    return replace(config, data=data, algorithms=algorithms, run_dir=run_dir, max_duration=f"{steps}ba",
                   eval_interval=f"{10 * steps}ba", progress_bar=False, loggers=replace(config.loggers, wandb=None),
                   checkpoints=replace(config.checkpoints, save_interval=f"{10 * steps}ba", keep_top_k=0))


class PlainLoop:
    """The trainer's model, batch, optimizer, loss and precision in a bare PyTorch step over one device-resident
    batch: the unmodified network (no algorithms), no data loading, no callbacks."""

    def __init__(self, config: Config):
        device_kind = resolve_device()
        self.device = torch.device("cuda" if device_kind == "gpu" else "cpu")
        num_classes = config.model.num_classes or 1000
        model = build_model(config.model, num_classes, config.loss).module.to(self.device)
        channels_last = config.algorithms.get("channels_last") is not None
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(model, config.optimizer,
                                         scaled_lr(config.optimizer, config.data.batch_size))
        self.loss_fn = build_loss(config.loss)
        res = config.data.train_resolution
        self.inputs = torch.randn(config.data.batch_size, 3, res, res, device=self.device)
        if channels_last:
            self.inputs = self.inputs.contiguous(memory_format=torch.channels_last)
        self.targets = torch.randint(0, num_classes, (config.data.batch_size,), device=self.device)
        if config.model.compile:
            prepare_compile()
        self.model = torch.compile(model) if config.model.compile else model
        precision = resolve_precision(config.precision, device_kind)
        self.dtype = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}.get(precision)
        self.scaler = torch.amp.GradScaler(enabled=self.dtype == torch.float16)
        self.model.train()

    def step(self) -> None:
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast:
            loss = self.loss_fn(self.model(self.inputs), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PairedTimer(Callback):
    """Times the trainer's steps and, between them, one step of the plain loop each, so both see the machine in
    the same state: on a shared machine, runs of each one after the other differ by more than the overhead being
    measured (docs/benchmarks.md).

    Steps 1 to ``warmup``: the trainer alone (its peak memory is read at the end of step ``warmup``); from the
    end of step ``warmup`` on, one plain step after each trainer step, the first ``warmup`` + 1 of them its warm-up
    (autotuning, compilation); after step 2 ``warmup`` both are timed: a trainer
    step from the end of one BATCH_END to the start of the next (data loading, events, algorithms, the step,
    Composer's per-step bookkeeping), a plain step inside BATCH_END. Each ends at a device synchronisation;
    Composer synchronises every step anyway (it reads the loss), the plain loop alone would not, so on a GPU the
    plain figure may be a little low (the first kernels of a step no longer overlap the previous step's end).
    """

    def __init__(self, config: Config, warmup: int):
        self.config = config
        self.warmup = warmup
        self.plain: PlainLoop | None = None
        self.trainer_s: list[float] = []
        self.plain_s: list[float] = []
        self.peak_memory_gib: float | None = None
        self._left: float | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def batch_end(self, state: State, logger: Logger) -> None:
        _sync()
        arrived = time.perf_counter()
        done = int(state.timestamp.batch)
        if done == self.warmup:
            if torch.cuda.is_available():
                self.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
            self.plain = PlainLoop(self.config)
        timed = done > 2 * self.warmup
        if timed and self._left is not None:
            self.trainer_s.append(arrived - self._left)
        if self.plain is not None:
            start = time.perf_counter()
            self.plain.step()
            _sync()
            if timed:
                self.plain_s.append(time.perf_counter() - start)
        self._left = time.perf_counter()


def paired_steps(config: Config, steps: int, warmup: int) -> PairedTimer:
    """One run of the recipe through the real trainer on synthetic data with a PairedTimer; ``steps`` timed."""
    from rsb_composer.train import build_trainer

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with tempfile.TemporaryDirectory(prefix="rsb-bench-") as tmp:
        cfg = synthetic_config(config, steps + 2 * warmup, run_dir=str(Path(tmp) / "run"))
        timer = PairedTimer(config, warmup)
        try:
            trainer = build_trainer(cfg)
            trainer.state.callbacks.append(timer)
            trainer.fit()
            trainer.close()
        finally:  # build_trainer pointed logging into the temporary run folder; undo that
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
                    handler.close()
            root.setLevel(level)
    return timer


def bench_train(config: Config, steps: int, warmup: int = 3, repeats: int = 2) -> dict[str, float]:
    """Images/s of the trainer and of the plain loop from the median of their paired step times, pooled over
    ``repeats`` runs; the median keeps a moment of another process on the machine out of both figures."""
    if steps < 1 or warmup < 1 or repeats < 1:
        raise ConfigError(f"bench-train needs --steps, --warmup and --repeats of at least 1 (got {steps}, {warmup}, "
                          f"{repeats}): the plain loop warms up while the trainer does")
    trainer_s: list[float] = []
    plain_s: list[float] = []
    peak = None
    for _ in range(repeats):
        timer = paired_steps(config, steps, warmup)
        trainer_s += timer.trainer_s
        plain_s += timer.plain_s
        peak = timer.peak_memory_gib if peak is None else peak
    batch = config.data.batch_size
    ours, plain = batch / statistics.median(trainer_s), batch / statistics.median(plain_s)
    result = {"images_per_sec": ours, "plain_images_per_sec": plain, "ratio": ours / plain,
              "timed_steps": min(len(trainer_s), len(plain_s))}
    if peak is not None:
        result["peak_memory_gib"] = peak
    return result


def _drop_file_caches() -> None:
    """Empty the kernel's page, dentry and inode caches (root only): the next listing reads the disk, as a first
    listing on a network file system does."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def generate_tree(split: Path, files: int, classes: int = 1000) -> None:
    """An ImageNet-shaped split of empty .JPEG files (listing never opens them): ``files`` of them over
    ``classes`` folders (fewer for small trees)."""
    classes = min(classes, files)
    per_class = files // classes
    for c in range(classes):
        folder = split / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"n{c:08d}_{i}.JPEG").touch()
    # The index distrusts folders modified within MTIME_SLACK_NS before its walk; a real tree is older than that.
    time.sleep(index_cache.MTIME_SLACK_NS / 1e9 + 0.5)


def bench_index(root: Path, files: int, drop_caches: bool = False) -> dict[str, float]:
    """Start-up listing of ``root/train``: torchvision's walk against the kept index (first start: walk and write
    the index; later starts: check the folders and read it). A tree of ``files`` empty files is generated there
    first if ``root/train`` does not exist. Each timing is the best of three, or a single cold one with
    ``drop_caches``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    from rsb_composer.data.datasets import list_classes

    split = root / "train"
    if not split.exists():
        generate_tree(split, files)
    classes = list_classes(split)
    class_to_idx = {name: i for i, name in enumerate(classes)}

    def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
        best, result = float("inf"), None
        for _ in range(1 if drop_caches else repeats):
            if drop_caches:
                _drop_file_caches()
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        return best, result

    plain, expected = timed(lambda: make_dataset(str(split), class_to_idx, IMG_EXTENSIONS))

    def first_start() -> list:
        for path in index_cache.index_paths(split):
            path.unlink(missing_ok=True)
        return index_cache.list_samples(split, class_to_idx, IMG_EXTENSIONS)

    first, _ = timed(first_start)
    later, samples = timed(lambda: index_cache.list_samples(split, class_to_idx, IMG_EXTENSIONS))
    if samples != expected:
        raise RuntimeError("the kept index gave other samples than torchvision's listing")
    kept = next(p for p in index_cache.index_paths(split) if p.exists())
    return {"files": len(expected), "classes": len(classes), "torchvision_listing_s": plain,
            "first_start_s": first, "later_start_s": later, "speedup": plain / later,
            "index_mib": kept.stat().st_size / 2**20}
