"""Two changes to Composer 0.32.1 that its later code makes (or should make) itself; :func:`apply` puts both in.

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
"""

from __future__ import annotations

import functools
import os
import pickle

from composer.utils import checkpoint, dist

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


def apply(trust_checkpoints: bool = False) -> None:
    global _trust_checkpoints
    _trust_checkpoints = trust_checkpoints
    if not getattr(dist.get_node_signal_file_name, "__rsb_composer_patched__", False):
        dist.get_node_signal_file_name = _per_node(dist.get_node_signal_file_name)
    if not getattr(checkpoint._torch_load_with_validation, "__rsb_composer_patched__", False):
        checkpoint._torch_load_with_validation = _data_only(checkpoint._torch_load_with_validation)
