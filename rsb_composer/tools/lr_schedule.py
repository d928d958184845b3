"""``rsb-composer lr-schedule``: the LR a recipe will use, per epoch and per step, computed without training."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rsb_composer.config import Config
from rsb_composer.data.batching import batch_geometry
from rsb_composer.data.samplers import steps_per_epoch as sampler_steps
from rsb_composer.optim import scaled_lr
from rsb_composer.schedules import STYLES, lr_multiplier, total_epochs

log = logging.getLogger(__name__)

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k train split


def count_train_images(config: Config) -> tuple[int, str]:
    """How many train images the configured data holds, and where the figure comes from."""
    d = config.data
    if d.source == "toy":
        return d.toy.num_classes * d.toy.train_per_class, "toy set"
    if d.source == "synthetic":
        return d.synthetic.train_samples, "synthetic set"
    train = Path(d.path) / "train" if d.path else None
    if train is not None and train.is_dir():
        from torchvision.datasets.folder import IMG_EXTENSIONS

        count = sum(1 for f in train.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS)
        return count, str(train)
    return IMAGENET_TRAIN_IMAGES, "ImageNet-1k size (data.path not found; pass --steps-per-epoch to change)"


def lr_schedule_report(config: Config, world_size: int, steps_per_epoch: int | None, as_csv: bool = False,
                       png: str | None = None) -> int:
    geometry = batch_geometry(config.data, world_size)
    global_batch = geometry.global_batch
    peak = scaled_lr(config.optimizer, global_batch)
    if steps_per_epoch is None:
        images, source = count_train_images(config)
        steps_per_epoch = max(1, sampler_steps(images, geometry.per_device, config.data.repeated_augmentation,
                                               world_size))
        origin = f"{images} train images ({source})"
    else:
        origin = "--steps-per-epoch"
    epochs = total_epochs(config.max_duration, steps_per_epoch)
    rows = [(e, peak * lr_multiplier(e, epochs, config.scheduler)) for e in range(int(epochs))]

    if as_csv:
        print("epoch,lr")
        for epoch, lr in rows:
            print(f"{epoch},{lr:.10g}")
    else:
        updated = "every step" if STYLES.pick(config.scheduler.style).per_step else "once per epoch"
        print(f"# {config.run_name}: {geometry.describe()}, peak LR {peak:.6g} "
              f"({config.optimizer.lr:g} x {global_batch} / {config.optimizer.reference_batch_size}), "
              f"{steps_per_epoch} steps per epoch from {origin}; scheduler.style={config.scheduler.style} "
              f"(updated {updated})", file=sys.stderr)
        print(f"{'epoch':>7}  {'lr':>12}")
        for epoch, lr in rows:
            print(f"{epoch:>7}  {lr:12.6f}")
    if png:
        draw_curve(config, peak, epochs, steps_per_epoch, Path(png))
        print(f"# per-step curve written to {png}", file=sys.stderr)
    return 0


def draw_curve(config: Config, peak: float, epochs: float, steps_per_epoch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total_steps = int(round(epochs * steps_per_epoch))
    stride = max(1, total_steps // 5000)  # a few thousand points draw the same curve as millions
    steps = list(range(0, total_steps + 1, stride))
    lrs = [peak * lr_multiplier(s / steps_per_epoch, epochs, config.scheduler) for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([s / steps_per_epoch for s in steps], lrs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{config.run_name}: peak {peak:.4g}, {config.scheduler.warmup_epochs:g} warmup epochs")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
