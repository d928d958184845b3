"""``rsb-composer bench-data``: images/s of the configured train loader, and of the reference pipeline beside it."""

from __future__ import annotations

from dataclasses import replace

from rsb_composer.algorithms import channels_last_on
from rsb_composer.config import Config
from rsb_composer.data import Loaders, build_loaders
from rsb_composer.data.throughput import cpu_ms_per_image, measure_loader


def reference_config(config: Config) -> Config:
    """The same settings through the reference pipeline: torchvision's ImageFolder (PIL decoding) with timm's
    create_transform (RandomResizedCrop, flip, RandAugment from the same string, float tensors normalised on the
    CPU), and the same batch size, workers and sampler."""
    return replace(config, data=replace(config.data, pipeline="reference"))


def _loaders(config: Config) -> Loaders:
    return build_loaders(config.data, config.seed, config.model.num_classes,
                         channels_last=channels_last_on(config.algorithms))


def bench_data(config: Config, batches: int, reference: bool = False) -> dict[str, float]:
    """Images per second of the configured train loader; with ``reference``, of the reference pipeline too.

    With both, each pipeline's CPU time per image (read, decode, augment; one process, one thread, as in a
    worker) is measured first, then each loader twice, alternating (ours, reference, ours, reference), keeping
    the better figures: whichever went first would otherwise pay alone for a cold file cache or a busy machine.
    Worker processes are shut down after each measurement, so one loader's prefetching never runs beside the
    other's timing.
    """
    if config.data.source == "synthetic":
        raise ValueError("data.source=synthetic has no images to decode: use imagefolder, toy or streaming")
    config = replace(config, data=replace(config.data, persistent_workers=False))
    candidates = [_loaders(config)]
    if reference:
        candidates.append(_loaders(reference_config(config)))
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
