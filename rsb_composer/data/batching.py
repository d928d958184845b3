"""How a step's batch is split: over devices (``data.global_batch_size`` or a per-device ``data.batch_size``) and,
on each device, into microbatches whose gradients add up (``data.microbatch_size``, Composer's
``device_train_microbatch_size``).

With ``data.global_batch_size`` the optimizer sees the same batch, and so the same scaled LR and the same steps
per epoch, on 1, 2, 4 or 8 devices: each device takes ``global / world size`` images per step, in microbatches
that fit its memory. BatchNorm normalises each microbatch on its own (as each GPU's batch in the paper's runs).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from rsb_composer.config import ConfigError, DataConfig, check

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256  # per device, when neither data.batch_size nor data.global_batch_size is set
AUTO = "auto"  # data.microbatch_size: Composer finds the largest microbatch that fits (halving on out-of-memory)


@dataclass(frozen=True)
class BatchGeometry:
    world_size: int
    per_device: int  # images per device per optimizer step
    microbatch_size: int | str  # images per forward/backward pass on a device, or "auto"
    eval_batch_size: int  # per device
    global_fixed: bool  # data.global_batch_size set: the global batch does not change with the world size

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world_size

    @property
    def microbatches(self) -> int | None:
        """Microbatches per device per step; None with "auto" (Composer decides on the GPU)."""
        return None if self.microbatch_size == AUTO else self.per_device // int(self.microbatch_size)

    def describe(self) -> str:
        """E.g. ``global batch 2048 (512 per device x 4 devices, 2 microbatches of 256)``."""
        if self.microbatch_size == AUTO:
            split = "microbatches found by Composer on the GPU"
        elif self.microbatches == 1:
            split = "no microbatches"
        else:
            split = f"{self.microbatches} microbatches of {self.microbatch_size}"
        return (f"global batch {self.global_batch} ({self.per_device} per device x {self.world_size} "
                f"device{'s' if self.world_size > 1 else ''}, {split})")

    def derived(self) -> dict[str, Any]:
        """The figures show-config's ``derived`` block reports."""
        return {"world_size": self.world_size, "global_batch_size": self.global_batch,
                "per_device_batch_size": self.per_device, "microbatch_size": self.microbatch_size,
                "microbatches_per_step": self.microbatches if self.microbatches is not None else AUTO,
                "eval_batch_size": self.eval_batch_size}


def check_batching(cfg: DataConfig) -> None:
    """What can be checked without knowing the world size."""
    check(cfg.batch_size is None or cfg.batch_size >= 1, "data.batch_size", cfg.batch_size, "must be at least 1")
    check(cfg.global_batch_size is None or cfg.global_batch_size >= 1, "data.global_batch_size",
          cfg.global_batch_size, "must be at least 1")
    if cfg.batch_size is not None and cfg.global_batch_size is not None:
        raise ConfigError(
            f"data.batch_size={cfg.batch_size} and data.global_batch_size={cfg.global_batch_size} are both set: give "
            "one (data.global_batch_size=null for a per-device batch; data.microbatch_size=N to need less memory "
            "per device while keeping the global batch)")
    micro = cfg.microbatch_size
    check(micro is None or micro == AUTO or (isinstance(micro, int) and micro >= 1), "data.microbatch_size", micro,
          f"must be a number of images (at least 1), {AUTO} (Composer's out-of-memory back-off, GPU only) or null")
    if cfg.eval_batch_size is not None:
        check(cfg.eval_batch_size >= 1, "data.eval_batch_size", cfg.eval_batch_size, "must be at least 1")


def batch_geometry(cfg: DataConfig, world_size: int) -> BatchGeometry:
    """The per-device batch and microbatches on ``world_size`` devices; an indivisible combination is a
    ConfigError naming the numbers."""
    if cfg.global_batch_size is not None:
        total = cfg.global_batch_size
        if total % world_size:
            raise ConfigError(
                f"data.global_batch_size={total} cannot be split over {world_size} devices ({total} / {world_size} "
                f"is not a whole number of images); use a device count that divides {total}, or another global "
                "batch")
        per_device = total // world_size
        origin = f"data.global_batch_size={total} / {world_size} devices"
    else:
        per_device = cfg.batch_size if cfg.batch_size is not None else DEFAULT_BATCH_SIZE
        origin = "data.batch_size"
    micro = cfg.microbatch_size
    if micro is None or (micro != AUTO and int(micro) >= per_device):
        micro = per_device  # one pass per step (a microbatch larger than the device's batch is the whole batch)
    elif micro != AUTO and per_device % int(micro):
        divisors = [d for d in range(int(micro), 0, -1) if per_device % d == 0][:3]
        raise ConfigError(
            f"data.microbatch_size={micro} does not divide the per-device batch of {per_device} ({origin}); use a "
            f"divisor of {per_device}, e.g. {', '.join(map(str, divisors))}")
    # An evaluation pass needs less memory than a training microbatch of the same size; with "auto" the
    # microbatch is found only on the GPU, so evaluation takes at most the default per-device batch.
    default_eval = min(per_device, DEFAULT_BATCH_SIZE) if micro == AUTO else int(micro)
    eval_batch = cfg.eval_batch_size if cfg.eval_batch_size is not None else default_eval
    return BatchGeometry(world_size=world_size, per_device=per_device, microbatch_size=micro,
                         eval_batch_size=eval_batch, global_fixed=cfg.global_batch_size is not None)


def resolve_batching(cfg: DataConfig, world_size: int) -> tuple[DataConfig, BatchGeometry]:
    """``cfg`` with ``batch_size`` and ``eval_batch_size`` set to this world size's per-device figures (what the
    loaders read), and the geometry. The recipe itself is left as written (config.yaml keeps the global batch)."""
    geometry = batch_geometry(cfg, world_size)
    resolved = dataclasses.replace(cfg, batch_size=geometry.per_device, global_batch_size=None,
                                   eval_batch_size=geometry.eval_batch_size)
    return resolved, geometry
