"""``rsb-composer eval``: a checkpoint's accuracy the way the paper reports it.

- One row per test resolution (``--resolutions``), the recipe's crop ratio kept: A3 trains at 160 px and is tested
  at 224.
- ImageNet-ReaL (``--real-labels real.json``): ``real/acc1`` beside ``val/acc1``, by ReaL's protocol
  (:mod:`rsb_composer.data.real_labels`).
- Another folder labelled with the training classes (``--split-dir``), such as ImageNet-V2, whose folders are named
  by class index (:mod:`rsb_composer.data.split_dirs`).
- Test-time augmentation (``--tta hflip``): the logits of the image and its mirror averaged, FFCV's evaluation.

The network is built once (:func:`rsb_composer.trainer.build_eval_network`) and read by a loop made of Composer's own
pieces: the model's ``eval_forward``, ``update_metric`` and val metrics (the ones training reports), the trainer's
device and precision context, the loader's batch transform, in the order Composer's evaluation runs them. The loop
is ours because ReaL needs each image's prediction, flip TTA a second forward pass, and a resolution sweep several
loaders through one network.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.core import DataSpec, get_precision_context
from composer.utils.misc import model_eval_mode

from rsb_composer.algorithms import channels_last_on
from rsb_composer.checkpoints.safe_load import read_weights
from rsb_composer.config import Choices, Config, ConfigError, nothing_to_check
from rsb_composer.data import EvalSplit, build_eval_split
from rsb_composer.data.real_labels import load_real_labels, real_correct
from rsb_composer.eval_metrics import EVAL_METRICS
from rsb_composer.trainer import build_eval_network

log = logging.getLogger(__name__)

REAL_ACC1 = "real/acc1"
MIN_RESOLUTION = 16

Forward = Callable[[Any, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]


def _plain(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One forward pass per image, as training evaluates."""
    return model.eval_forward(batch)


def _hflip(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The mean of the logits of each image and of its mirror (FFCV's evaluation sums them: the same top-k)."""
    inputs, targets = batch
    return (model.eval_forward(batch) + model.eval_forward((inputs.flip(-1), targets))) / 2


# A test-time augmentation takes no options: its doc is its docstring, and it has nothing to check.
TTA: Choices[Forward] = Choices("--tta")
TTA.add("none", _plain, check=nothing_to_check)
TTA.add("hflip", _hflip, check=nothing_to_check)


@dataclass
class Evaluation:
    """What ``rsb-composer eval`` prints: one row per test resolution."""

    checkpoint: str
    ema: bool
    split: str
    images: int
    crop_pct: float
    tta: str
    real_images: int | None = None  # images ReaL has labels for (the others are left out)
    rows: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checkpoint": self.checkpoint, "weights": "ema" if self.ema else "training",
                               "split": self.split, "images": self.images, "crop_pct": self.crop_pct,
                               "tta": None if self.tta == "none" else self.tta}
        if self.real_images is not None:
            out["real_images"] = self.real_images
        return {**out, "results": self.rows}

    def table(self) -> str:
        about = [f"{self.checkpoint} ({'EMA weights' if self.ema else 'weights'})",
                 f"split {self.split}: {self.images:,} images", f"crop_pct {self.crop_pct:g}"]
        if self.tta != "none":
            about.append(f"TTA {self.tta}")
        if self.real_images is not None:
            about.append(f"ReaL: {self.real_images:,} images with labels")
        keys = [key for key in self.rows[0] if key != "resolution"]
        lines = ["; ".join(about), "  ".join(["resolution", *(f"{key:>9}" for key in keys)])]
        for row in self.rows:
            lines.append("  ".join([f"{row['resolution']:>10}", *(f"{row[key]:>9.6f}" for key in keys)]))
        return "\n".join(lines)


def parse_resolutions(text: str) -> list[int]:
    """``160,224,288`` -> [160, 224, 288]; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--resolutions={text!r}: give pixel sizes separated by commas, e.g. 160,224,288") from None
    small = [value for value in values if value < MIN_RESOLUTION]
    if small:
        raise ConfigError(f"--resolutions={text!r}: {small[0]} is below {MIN_RESOLUTION} pixels")
    return values


def evaluate(config: Config, checkpoint: str | Path, *, trust: bool = False, resolutions: list[int] | None = None,
             split_dir: str | Path | None = None, real_labels: str | Path | None = None,
             tta: str = "none") -> tuple[Evaluation, str | None]:
    """Evaluate ``checkpoint``'s network (EMA weights when it has them) on the val split or ``split_dir``, at each
    of ``resolutions`` (default: the recipe's ``data.eval_resolution``); returns the evaluation and a one-line
    notice about how ``split_dir``'s folders were labelled (or None). Reads no train image."""
    forward = TTA.pick(tta)
    found = read_weights(checkpoint, trust=trust, prefer_ema=True)
    weights, is_ema = found.weights, found.is_ema
    if found.folded:
        log.warning("%s was %s", checkpoint, found.folded)
    split = build_eval_split(config.data, config.seed, config.model.num_classes,
                             channels_last=channels_last_on(config.algorithms), split_dir=split_dir)
    labels = None
    if real_labels is not None:
        paths = split.sample_paths
        if paths is None:
            raise ConfigError(f"--real-labels: data.source={config.data.source} keeps no file names, and ReaL's "
                              "labels follow the val images' file names; evaluate the val folder "
                              "(data.source=imagefolder)")
        labels = load_real_labels(real_labels, paths, split.num_classes)
    trainer = build_eval_network(config, weights, checkpoint, split.num_classes)
    result = Evaluation(str(checkpoint), is_ema, split.name, len(split.dataset), config.data.crop_pct, tta)
    try:
        for resolution in resolutions or [config.data.eval_resolution]:
            row, real_images = _evaluate_at(trainer, split, resolution, labels, forward)
            result.rows.append({"resolution": resolution, **row})
            result.real_images = real_images
    finally:
        trainer.close()
    return result, split.notice


def _evaluate_at(trainer: Trainer, split: EvalSplit, resolution: int, labels: list[list[int]] | None,
                 forward: Forward) -> tuple[dict[str, float], int | None]:
    state = trainer.state
    model = state.model
    metrics = {name: state.device.module_to_device(copy.deepcopy(metric))
               for name, metric in model.get_metrics(is_train=False).items()}
    for metric in metrics.values():
        metric.reset()
    loader = split.loader(resolution)
    spec = loader if isinstance(loader, DataSpec) else DataSpec(loader)
    predictions = []
    with torch.no_grad(), model_eval_mode(model):
        for batch in spec.dataloader:
            batch = state.device.batch_to_device(spec.batch_transforms(batch))
            with get_precision_context(state.precision, state.precision_config):
                outputs = forward(model, batch)
                for metric in metrics.values():
                    model.update_metric(batch, outputs, metric)
            if labels is not None:
                predictions.append(outputs.argmax(dim=1).cpu())
    # Every evaluation metric (rsb_composer.eval_metrics) in the keys' order: val/loss, val/acc1, val/acc5, ...
    row = {f"val/{name}": float(metrics[name].compute()) for name in EVAL_METRICS}
    if labels is None:
        return row, None
    # The sampler says which image each prediction is for (one process reads them all, in order).
    order = list(spec.dataloader.sampler)
    top1 = torch.cat(predictions)
    if len(order) != len(top1):
        raise ConfigError(f"--real-labels: {len(top1)} predictions for {len(order)} images; evaluate in one process")
    right, scored = real_correct(top1, [labels[index] for index in order])
    row[REAL_ACC1] = right / scored
    return row, scored


def print_report(result: Evaluation, notice: str | None, as_json: bool) -> None:
    """The table on the terminal; with ``as_json`` it goes to stderr and stdout holds only the JSON object."""
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    print(result.table(), file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps(result.to_json()))
