"""``rsb-composer bench-train``: the real trainer against the same model in a plain PyTorch loop.

:func:`bench_train` runs the configured recipe through :func:`rsb_composer.trainer.build_trainer` on synthetic data
(callbacks and algorithms included) and, between its steps, the same model, batch, optimizer, loss and
precision in a bare loop, timing both; the ratio says what the trainer's machinery costs.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from rsb_composer import composer_fixes
from rsb_composer.algorithms import IMAGE_FILE_ALGORITHMS, channels_last_on
from rsb_composer.config import Config, ConfigError, DataConfig, SyntheticConfig
from rsb_composer.data.batching import resolve_batching
from rsb_composer.determinism import make_deterministic
from rsb_composer.devices import resolve_device, resolve_precision
from rsb_composer.losses import build_loss
from rsb_composer.model import build_model
from rsb_composer.optim import build_optimizer, scaled_lr

log = logging.getLogger(__name__)


def synthetic_config(config: Config, steps: int, run_dir: str) -> Config:
    """The recipe on synthetic tensors in one process: same model, batch, resolution, optimizer and algorithms.
    The batch is the recipe's whole global batch on the one device (what a benchmark of one device measures)."""
    resolved, _ = resolve_batching(config.data, world_size=1)
    data: DataConfig = replace(
        resolved, source="synthetic", num_workers=min(config.data.num_workers, 4), repeated_augmentation=0,
        synthetic=SyntheticConfig(num_classes=config.model.num_classes or 1000,
                                  train_samples=resolved.batch_size * steps,
                                  val_samples=resolved.eval_batch_size),
    )
    algorithms = {k: v for k, v in config.algorithms.items() if k not in IMAGE_FILE_ALGORITHMS}
    return replace(config, data=data, algorithms=algorithms, run_dir=run_dir, max_duration=f"{steps}ba",
                   eval_interval=f"{10 * steps}ba", progress_bar=False, loggers={**config.loggers, "wandb": None},
                   checkpoints=replace(config.checkpoints, save_interval=f"{10 * steps}ba", keep_top_k=0))


class PlainLoop:
    """The trainer's model, batch, optimizer, loss and precision in a bare PyTorch step over one device-resident
    batch, in the trainer's microbatches: the unmodified network (no algorithms), no data loading, no callbacks."""

    def __init__(self, config: Config, microbatch_size: int):
        device_kind = resolve_device()
        self.device = torch.device("cuda" if device_kind == "gpu" else "cpu")
        num_classes = config.model.num_classes or 1000
        model = build_model(config.model, num_classes, config.loss).module.to(self.device)
        if config.deterministic:
            make_deterministic(model)  # as the trainer's (torch's deterministic mode is global)
        channels_last = channels_last_on(config.algorithms)
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
        self.microbatch_size = microbatch_size
        if config.model.compile:
            composer_fixes.prepare_compile()
        self.model = torch.compile(model) if config.model.compile else model
        precision = resolve_precision(config.precision, device_kind)
        self.dtype = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}.get(precision)
        self.scaler = torch.amp.GradScaler(enabled=self.dtype == torch.float16)
        self.model.train()

    def step(self) -> None:
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        self.optimizer.zero_grad(set_to_none=True)
        chunks = zip(self.inputs.split(self.microbatch_size), self.targets.split(self.microbatch_size), strict=True)
        for inputs, targets in chunks:
            with autocast:
                loss = self.loss_fn(self.model(inputs), targets) * (len(targets) / len(self.targets))
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

    Steps 1 to ``warmup``: the trainer alone (its peak memory is read at the end of step ``warmup``, or of the
    first later step without an out-of-memory retry); from then on, one plain step after each trainer step, the
    first ``warmup`` + 1 of them its warm-up (autotuning, compilation); after step 2 ``warmup`` both are timed: a
    trainer
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
        self._microbatch_size: int | float | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def batch_start(self, state: State, logger: Logger) -> None:
        self._microbatch_size = state.device_train_microbatch_size

    def batch_end(self, state: State, logger: Logger) -> None:
        _sync()
        arrived = time.perf_counter()
        done = int(state.timestamp.batch)
        # A step in which "auto" microbatching ran out of memory and retried smaller: its peak is the failed
        # attempt's; the peak is read after the first later step that kept the size.
        retried = state.device_train_microbatch_size != self._microbatch_size
        settled = True  # the trainer's peak is read before the plain loop allocates anything
        if torch.cuda.is_available():
            if retried:
                torch.cuda.reset_peak_memory_stats()
            elif done >= self.warmup and self.peak_memory_gib is None:
                self.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
            settled = self.peak_memory_gib is not None
        if done >= self.warmup and self.plain is None and settled:
            self.plain = PlainLoop(self.config, int(state.device_train_microbatch_size))  # Composer's, "auto" too
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
    from rsb_composer.trainer import build_trainer

    with tempfile.TemporaryDirectory(prefix="rsb-bench-") as tmp, quiet_logging():
        cfg = synthetic_config(config, steps + 2 * warmup, run_dir=str(Path(tmp) / "run"))
        timer = PairedTimer(config, warmup)
        trainer = build_trainer(cfg)
        trainer.state.callbacks.append(timer)
        trainer.fit()
        trainer.close()
    return timer


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """build_trainer points logging into its (temporary) run folder; put the root logger back as it was after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def bench_train(config: Config, steps: int, warmup: int = 3, repeats: int = 2) -> dict[str, float]:
    """Images/s of the trainer and of the plain loop from the median of their paired step times, pooled over
    ``repeats`` runs; the median keeps a moment of another process on the machine out of both figures."""
    if steps < 1 or warmup < 1 or repeats < 1:
        raise ConfigError(f"bench-train needs --steps, --warmup and --repeats of at least 1 (got {steps}, {warmup}, "
                          f"{repeats}): the plain loop warms up while the trainer does")
    data, _ = resolve_batching(config.data, world_size=1)  # one process: the recipe's global batch on one device
    config = replace(config, data=data)
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
