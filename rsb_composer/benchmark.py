"""Throughput measurements: the train loader, the real trainer, and the same model in a plain PyTorch loop.

``bench_train`` runs the configured recipe through :func:`rsb_composer.train.build_trainer` on synthetic data
(callbacks and algorithms included) and times its steps, then times the same model, batch, optimizer, loss and
precision in a bare loop, in the same process; the ratio says what the trainer's machinery costs.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

from rsb_composer.config import Config, DataConfig, SyntheticConfig
from rsb_composer.data import index_cache
from rsb_composer.devices import resolve_device, resolve_precision
from rsb_composer.losses import build_loss
from rsb_composer.model import build_model
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


class _StepTimer(Callback):
    """Wall time of the trainer's steps after ``warmup`` steps, synchronised with the device."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.images = 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def batch_end(self, state: State, logger: Logger) -> None:
        done = int(state.timestamp.batch)
        if done == self.warmup:
            self._sync()
            self.start = time.perf_counter()
        elif done > self.warmup:
            self.images += int(state.batch[0].shape[0]) if isinstance(state.batch, (tuple, list)) else 0
            self._sync()
            self.end = time.perf_counter()

    def images_per_sec(self) -> float:
        assert self.start is not None and self.end is not None, "not enough steps were timed"
        return self.images / (self.end - self.start)


def synthetic_config(config: Config, steps: int, warmup: int, run_dir: str) -> Config:
    """The recipe on synthetic tensors: same model, batch, resolution, optimizer and algorithms."""
    data: DataConfig = replace(
        config.data, source="synthetic", num_workers=min(config.data.num_workers, 4), repeated_augmentation=0,
        synthetic=SyntheticConfig(num_classes=config.model.num_classes or 1000,
                                  train_samples=config.data.batch_size * (steps + warmup),
                                  val_samples=config.eval_batch_size),
    )
    algorithms = {k: v for k, v in config.algorithms.items() if k not in ("randaugment", "augmix")}
    return replace(config, data=data, algorithms=algorithms, run_dir=run_dir, max_duration=f"{steps + warmup}ba",
                   eval_interval=f"{10 * (steps + warmup)}ba", progress_bar=False, loggers=replace(config.loggers,
                   wandb=None), checkpoints=replace(config.checkpoints, save_interval=f"{10 * (steps + warmup)}ba",
                                                    keep_top_k=0))


def trainer_throughput(config: Config, steps: int, warmup: int) -> float:
    from rsb_composer.train import build_trainer

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with tempfile.TemporaryDirectory(prefix="rsb-bench-") as tmp:
        cfg = synthetic_config(config, steps, warmup, run_dir=str(Path(tmp) / "run"))
        try:
            trainer = build_trainer(cfg)
            timer = _StepTimer(warmup)
            trainer.state.callbacks.append(timer)
            trainer.fit()
            trainer.close()
        finally:  # build_trainer pointed logging into the temporary run folder; undo that
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
                    handler.close()
            root.setLevel(level)
        return timer.images_per_sec()


def plain_throughput(config: Config, steps: int, warmup: int) -> float:
    """The same model, batch, optimizer, loss and precision in a bare loop over one device-resident batch."""
    device_kind = resolve_device()
    device = torch.device("cuda" if device_kind == "gpu" else "cpu")
    precision = resolve_precision(config.precision, device_kind)
    num_classes = config.model.num_classes or 1000
    model = build_model(config.model, num_classes, config.loss).module.to(device)
    channels_last = config.algorithms.get("channels_last") is not None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optimizer, scaled_lr(config.optimizer, config.data.batch_size))
    loss_fn = build_loss(config.loss)
    res = config.data.train_resolution
    inputs = torch.randn(config.data.batch_size, 3, res, res, device=device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, num_classes, (config.data.batch_size,), device=device)
    if config.model.compile:
        model = torch.compile(model)
    dtype = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    model.train()

    def step() -> None:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.data.batch_size / (time.perf_counter() - start)


def bench_train(config: Config, steps: int, warmup: int = 3, repeats: int = 2) -> dict[str, float]:
    """Trainer and plain loop, alternating ``repeats`` times, each keeping its best figure: on a shared machine a
    single pair can differ by more than the overhead being measured (docs/benchmarks.md)."""
    ours, plain = 0.0, 0.0
    for _ in range(repeats):
        ours = max(ours, trainer_throughput(config, steps, warmup))
        plain = max(plain, plain_throughput(config, steps, warmup))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    result = {"images_per_sec": ours, "plain_images_per_sec": plain, "ratio": ours / plain}
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
