"""Changes to Composer 0.32.1 that its later code makes (or should make) itself, each saying what removes it;
:func:`apply` puts 1, 2 and 4 in, :func:`restore_rng_on_dataset_resume` adds 3 to a trainer.

1. Per-node signal files (a bug multi-node runs with a shared run folder hit).
   ``composer.utils.dist.get_node_signal_file_name`` is meant to give each node its own signal file for the
   file-based wait around autoresume, but it broadcasts rank 0's name to every node, node number included. With the
   checkpoint folder on shared storage (what autoresume across nodes needs), every node's local rank 0 then creates
   and deletes the same file, and the second deletion crashes the run at start ("No such file or directory:
   '._signal_file_node0_...'"). The patch keeps the collective broadcast and puts each node's own number back.
   Remove it when the pinned Composer gives each node its own name: mosaicml/composer#2363 ("Add node rank to
   signal files", open) or a fix of mosaicml/llm-foundry#1736; Composer's main branch still broadcasts rank 0's name.

2. Checkpoints load as data only (autoresume and any ``load_path``).
   Composer 0.32.1 reads checkpoints with ``torch.load(weights_only=False)`` (utils/checkpoint.py,
   ``_torch_load_with_validation``), so whoever can write into ``run_dir/checkpoints/`` (shared storage) runs code in
   every rank of the next restart. Its main branch replaced that with ``weights_only=True`` and an allow-list
   (mosaicml/composer#3937, merged after 0.32.1); this is the same change, with our allow-list and a one-line
   refusal naming the file and ``checkpoints.trust``. Every rank refuses the same file at the same point, so a
   refusal stops the whole run (exit 2) without anything in the file having run. Remove it when the pinned Composer
   includes #3937.

3. The random state after a mid-epoch resume through dataset resumption. Composer restores the checkpoint's
   random state (Python, numpy, torch) at the start of training on an epoch boundary, or, mid-epoch, just before
   the first new batch of its replay; when the train dataset resumes by itself (``state.dataset_resumption``, see
   callbacks.sampler_resume) there is no replay and it never restores it (trainer.py ``_train_loop``), so mixup,
   cutmix and stochastic depth draw differently from an uninterrupted run. :func:`restore_rng_on_dataset_resume`
   restores it at the same point the replay would: before the first batch after the resume is fetched
   (BEFORE_DATALOADER). Remove it when Composer restores the random state on that path too.

4. Device synchronisations inside every step. ``composer.loss.utils._one_hot`` (behind ``ensure_targets_one_hot``,
   which MixUp, CutMix, LabelSmoothing and Composer's BCE call between the forward and the backward pass) checks
   ``tensor.max()`` and ``tensor.min() < 0`` in Python: on a GPU each check waits for the forward pass to finish,
   so the backward pass cannot be queued behind it. The replacement builds the same one-hot tensor with tensor
   operations alone: a negative label becomes an all-zero row, as in Composer (without Composer's warning, which
   needs the read), and a label past the last class fails in ``scatter_`` (an index error on the CPU, a device
   assertion on a GPU) where Composer raised a ValueError. Our labels come from the class folders, always in
   range. Remove it when Composer's ``_one_hot`` stops reading its input (unchanged on Composer's main branch).
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import composer.loss.utils
import torch
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import checkpoint, dist, reproducibility

from rsb_composer.checkpoints.safe_load import load_data_only, refusal

_trust_checkpoints = False  # checkpoints.trust of the run being built (one run per process)


def _per_node(original):
    @functools.wraps(original)
    def get_node_signal_file_name(rng=None) -> str:
        name = original(rng)  # collective: every rank must still call it
        random_part = name.rsplit("_", 1)[1]
        return f"._signal_file_node{dist.get_node_rank()}_{random_part}"

    get_node_signal_file_name.__rsb_composer_patched__ = True
    return get_node_signal_file_name


def _data_only(original):
    @functools.wraps(original)
    def _torch_load_with_validation(checkpoint_filepath, map_location):
        if _trust_checkpoints:
            return original(checkpoint_filepath, map_location)
        path = checkpoint._ensure_valid_checkpoint(checkpoint_filepath)
        try:
            return load_data_only(path, map_location=map_location)
        except pickle.UnpicklingError as err:
            # Composer loads through a symlink in a temporary folder: name the run folder's file.
            refused = refusal(os.path.realpath(path), err, "set checkpoints.trust=true")
            if refused is None:
                raise
            raise refused from None

    _torch_load_with_validation.__rsb_composer_patched__ = True
    return _torch_load_with_validation


def _one_hot_without_reads(original):
    @functools.wraps(original)
    def _one_hot(tensor: torch.Tensor, num_classes: int = -1, dim: int = -1) -> torch.Tensor:
        if num_classes == -1:  # the size itself comes from the data: only a read can tell it
            return original(tensor, num_classes, dim)
        if not composer.loss.utils.check_for_index_targets(tensor):
            raise ValueError(f"tensor must be integer type, current type: {tensor.dtype}")
        index = tensor.clamp(min=0).long().unsqueeze(dim)
        shape = list(index.shape)
        shape[dim] = num_classes
        present = (tensor >= 0).unsqueeze(dim).to(tensor.dtype)
        return torch.zeros(shape, dtype=tensor.dtype, device=tensor.device).scatter_(dim, index, present)

    _one_hot.__rsb_composer_patched__ = True
    return _one_hot


def apply(trust_checkpoints: bool = False) -> None:
    global _trust_checkpoints
    _trust_checkpoints = trust_checkpoints
    if not getattr(dist.get_node_signal_file_name, "__rsb_composer_patched__", False):
        dist.get_node_signal_file_name = _per_node(dist.get_node_signal_file_name)
    if not getattr(checkpoint._torch_load_with_validation, "__rsb_composer_patched__", False):
        checkpoint._torch_load_with_validation = _data_only(checkpoint._torch_load_with_validation)
    if not getattr(composer.loss.utils._one_hot, "__rsb_composer_patched__", False):
        composer.loss.utils._one_hot = _one_hot_without_reads(composer.loss.utils._one_hot)


class _RestoreRngState(Callback):
    def __init__(self, rng_state: list[dict[str, Any]]):
        self.rng_state: list[dict[str, Any]] | None = rng_state

    def before_dataloader(self, state: State, logger: Logger) -> None:
        if self.rng_state is not None:
            reproducibility.load_rng_state(self.rng_state)
            self.rng_state = None


def restore_rng_on_dataset_resume(trainer: Trainer) -> None:
    """After the trainer has loaded a mid-epoch checkpoint whose train dataset resumes by itself, restore the
    checkpoint's random state before the first batch (workaround 3 above)."""
    state = trainer.state
    if trainer._rng_state is None or "train" not in state.dataset_resumption or not int(state.timestamp.batch_in_epoch):
        return
    state.callbacks.append(_RestoreRngState(trainer._rng_state))
    trainer._rng_state = None
