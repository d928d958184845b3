"""Per-sample random streams: each train sample's augmentation draws depend on (run seed, epoch, sample index,
copy) and nothing else.

A train sampler yields keys ``(index, epoch, copy)`` (:class:`rsb_composer.data.samplers.TrainSampler`; ``copy``
tells repeated-augmentation copies of one image apart), and the train dataset turns each key into a sample inside
:func:`sample_stream`, which seeds Python's ``random``, numpy's global RNG and torch's CPU generator from a hash of
the key and the run seed. So every draw of the pipeline, whoever makes it (timm's crop box and RandAugment ops and
magnitudes, torchvision's flip, the PIL transforms Composer's RandAugment and AugMix insert), is the same whatever
the worker, the number of workers, the world size or the point a run resumed from. Seeding the global generators
in this one place, rather than passing a generator to each transform, keeps timm's and Composer's transforms
unmodified: they draw from the global state by design.

In a DataLoader worker nothing else uses those generators, so they are simply reseeded; in the training process
itself (``data.num_workers: 0``) their state is saved and put back around the sample, so the trainer's own draws
(mixup, stochastic depth, ...) do not depend on data loading either. docs/benchmarks.md has what the seeding costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

SampleKey = tuple[int, int, int]  # (sample index, epoch, copy)
_owned = False  # set by owned_random_state(): this process's generators serve data loading alone


def split_key(key: Any) -> SampleKey:
    """``(index, epoch, copy)`` from a train sampler's key; a bare index (a benchmark or a check reading the dataset
    directly) is that sample's first copy in epoch 0."""
    if isinstance(key, tuple):
        index, epoch, copy = key
        return int(index), int(epoch), int(copy)
    return int(key), 0, 0


def stream_seed(seed: int, epoch: int, index: int, copy: int) -> bytes:
    """16 bytes that stand for the sample's stream: a hash, so neighbouring keys give unrelated streams."""
    return hashlib.blake2b(struct.pack("<4q", seed, epoch, index, copy), digest_size=16,
                           person=b"rsb-sample").digest()


def _seed_globals(digest: bytes) -> None:
    random.seed(int.from_bytes(digest, "little"))
    # numpy's legacy seeding takes 32 bits cheaply (a longer key costs five times as much); only timm's weighted
    # RandAugment op choice and Composer's PIL algorithms draw from it.
    np.random.seed(int.from_bytes(digest[:4], "little"))
    # The CPU generator alone: torch.manual_seed would also queue a CUDA reseed, at fifty times the cost.
    torch.default_generator.manual_seed(int.from_bytes(digest[8:], "little") & (2**63 - 1))


@contextlib.contextmanager
def owned_random_state() -> Iterator[None]:
    """Read samples as a worker does: without saving and restoring the global generators around each one (a
    benchmark timing what a worker pays); they are restored once, at the end of the block."""
    global _owned
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    _owned = True
    try:
        yield
    finally:
        _owned = False
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


@contextlib.contextmanager
def sample_stream(seed: int, key: SampleKey) -> Iterator[None]:
    """Within the block the global generators draw the stream of sample ``key`` of the run seeded ``seed``."""
    index, epoch, copy = key
    digest = stream_seed(seed, epoch, index, copy)
    if _owned or get_worker_info() is not None:
        _seed_globals(digest)
        yield
        return
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    _seed_globals(digest)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
