"""Throughput measurements: the train loader, the real trainer, and the same model in a plain PyTorch loop.

``bench_train`` runs the configured recipe through :func:`rsb_composer.train.build_trainer` on synthetic data
(callbacks and algorithms included) and times its steps, then times the same model, batch, optimizer, loss and
precision in a bare loop, in the same process; the ratio says what the trainer's machinery costs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torch.utils.data import DataLoader

from rsb_composer.config import Config, DataConfig, SyntheticConfig
from rsb_composer.devices import resolve_device, resolve_precision
from rsb_composer.losses import build_loss
from rsb_composer.model import build_model
from rsb_composer.optim import build_optimizer, scaled_lr

log = logging.getLogger(__name__)


def reference_loader(config: Config) -> DataLoader:
    """The reference train pipeline for the same settings: torchvision's ImageFolder with timm's create_transform
    (RandomResizedCrop, flip, RandAugment from the same string, float tensors normalised on the CPU), with the
    same batch size, workers and sampler as the configured loader."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    from rsb_composer.data.samplers import train_sampler
    from rsb_composer.data.toy import ensure_toy_dataset

    d = config.data
    if d.source == "synthetic":
        raise ValueError("the reference pipeline decodes images: use data.source imagefolder or toy")
    root = ensure_toy_dataset(d.toy, d.path) if d.source == "toy" else Path(d.path)
    transform = create_transform(
        d.train_resolution, is_training=True, scale=tuple(d.crop_scale), interpolation=d.interpolation,
        auto_augment=d.auto_augment, color_jitter=None,  # the configured pipeline has no colour jitter either
    )
    dataset = ImageFolder(str(root / "train"), transform=transform)
    workers = d.num_workers
    return DataLoader(dataset, batch_size=d.batch_size, sampler=train_sampler(dataset, d, config.seed),
                      num_workers=workers, prefetch_factor=d.prefetch_factor if workers else None,
                      persistent_workers=False, pin_memory=d.pin_memory and torch.cuda.is_available(),
                      drop_last=True)


def bench_data(config: Config, batches: int, reference: bool = False) -> dict[str, float]:
    from rsb_composer.data import build_loaders

    result = {"images_per_sec": measure_loader(build_loaders(config).train, batches)}
    if reference:
        result["reference_images_per_sec"] = measure_loader(reference_loader(config), batches)
        result["ratio"] = result["images_per_sec"] / result["reference_images_per_sec"]
    return result


def measure_loader(loader: DataLoader, batches: int, warmup: int = 2) -> float:
    """Images per second the loader delivers (after ``warmup`` batches that pay for worker start-up)."""
    images, start = 0, None
    for index, (inputs, _) in enumerate(loader):
        if index == warmup:
            start = time.perf_counter()
        if index >= warmup:
            images += len(inputs)
        if index + 1 >= warmup + batches:
            break
    if start is None or images == 0:
        raise ValueError("the loader ran out before the measurement: lower --batches")
    return images / (time.perf_counter() - start)


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


def bench_train(config: Config, steps: int, warmup: int = 3) -> dict[str, float]:
    ours = trainer_throughput(config, steps, warmup)
    plain = plain_throughput(config, steps, warmup)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    result = {"images_per_sec": ours, "plain_images_per_sec": plain, "ratio": ours / plain}
    if peak is not None:
        result["peak_memory_gib"] = peak
    return result
