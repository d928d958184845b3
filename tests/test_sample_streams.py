"""Per-sample random streams: a train sample's augmentation depends on (run seed, epoch, index, copy) only, not
on the worker, the number of workers or the order of reading, and reading it leaves the trainer's random state
alone."""

import random

import numpy as np
import pytest
import torch

from rsb_composer.config import DataConfig, ToyConfig
from rsb_composer.data import build_loaders

TOY = ToyConfig(4, 16, 6, 40)


def _loaders(toy_dir, pipeline="fast", workers=0, seed=0):
    data = DataConfig(source="toy", path=str(toy_dir), toy=TOY, train_resolution=32, batch_size=8,
                      num_workers=workers, pipeline=pipeline, auto_augment="rand-m9-mstd0.5-inc1",
                      persistent_workers=True)
    return build_loaders(data, seed=seed)


def _random_state():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_a_key_gives_one_augmentation_in_any_order_and_the_trainers_random_state_is_left_alone(toy_dir, pipeline):
    dataset = _loaders(toy_dir, pipeline).train.dataset
    keys = [(i, epoch, copy) for i in (0, 5) for epoch in (0, 1) for copy in (0, 1)]
    random.seed(1)
    before = _random_state()
    forward = {key: dataset[key][0] for key in keys}
    assert _random_state() == before  # read in the training process (num_workers 0): state put back
    backward = {key: dataset[key][0] for key in reversed(keys)}
    for key in keys:
        assert torch.equal(forward[key], backward[key])
    # Another epoch or another copy of the same image is another draw.
    assert not torch.equal(forward[(0, 0, 0)], forward[(0, 1, 0)])
    assert not torch.equal(forward[(0, 0, 0)], forward[(0, 0, 1)])
    assert not torch.equal(_loaders(toy_dir, pipeline, seed=1).train.dataset[(0, 0, 0)][0], forward[(0, 0, 0)])


def _two_epochs(loader):
    batches = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        batches += list(loader)
    return batches


def test_batches_are_the_same_whatever_the_number_of_workers(toy_dir):
    """Persistent workers never see set_epoch: the epoch reaches them in the keys."""
    alone = _two_epochs(_loaders(toy_dir, workers=0).train)
    shared = _two_epochs(_loaders(toy_dir, workers=2).train)
    assert len(alone) == len(shared) == 16
    for (a, a_labels), (b, b_labels) in zip(alone, shared, strict=True):
        assert torch.equal(a, b) and torch.equal(a_labels, b_labels)
    assert not torch.equal(alone[0][0], alone[8][0])  # the second epoch is drawn afresh
