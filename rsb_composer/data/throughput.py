"""How fast a train loader delivers: images per second as the trainer receives them, and CPU time per image."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from rsb_composer.data.sample_rng import owned_random_state


def cpu_ms_per_image(dataset: Any, images: int) -> float:
    """Milliseconds one process spends per train sample (read, decode, augment, seed its random stream), on one
    thread as in a worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    try:
        with owned_random_state():
            dataset[0]
            start = time.perf_counter()
            for index in range(images):
                dataset[index]
            return (time.perf_counter() - start) / images * 1e3
    finally:
        torch.set_num_threads(threads)


def warmup_batches(loader: DataLoader, warmup: int = 2) -> int:
    """Batches before the clock starts: at least ``warmup``, and one per worker. Workers deliver in turn, so when
    worker W's first batch arrives every worker has started and the rate from then on is the steady one; a clock
    started after 2 batches would also count what workers 3 to W had prepared before it started."""
    if warmup < 1:
        raise ValueError("warmup must be at least 1 batch")
    return max(warmup, loader.num_workers)


def timed_batches(num_workers: int, batches: int) -> int:
    """``batches`` rounded up to whole rounds of the workers: the workers started together, so their batches come
    in rounds, and a clock stopped part-way into a round reads a rate too low (or, started part-way, too high)."""
    rounds = max(num_workers, 1)
    return -(-batches // rounds) * rounds


def measure_loader(loader: DataLoader, batches: int, batch_transform: Callable[[Any], Any] | None = None,
                   warmup: int = 2) -> float:
    """Images per second the loader delivers once every worker has delivered its first batch (at least
    ``warmup`` batches, :func:`warmup_batches`), over at least ``batches`` batches in whole rounds of the workers
    (:func:`timed_batches`), with the trainer's ``batch_transform`` (the fast pipeline's normalisation) applied to
    each batch, as in training."""
    warmup = warmup_batches(loader, warmup)
    batches = timed_batches(loader.num_workers, batches)
    images, timed, start = 0, 0, None
    iterator = iter(loader)
    try:
        for index, batch in enumerate(iterator):
            if batch_transform is not None:
                batch = batch_transform(batch)
            if index >= warmup:
                images += len(batch[0])
                timed += 1
            if index == warmup - 1:  # the clock starts once the last warm-up batch is in hand
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if index + 1 >= warmup + batches:
                break
        if timed < batches:
            raise ValueError(f"the loader ran out before the measurement ended ({warmup} warm-up batches, one per "
                             f"worker, then {timed} of {batches}): lower --batches or use more images")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)
    finally:
        del iterator  # without persistent workers this stops the worker processes now
