"""Checkpoints load as data only (Composer 0.32.1's autoresume and any ``load_path``).

Composer 0.32.1 reads checkpoints with ``torch.load(weights_only=False)`` (utils/checkpoint.py,
``_torch_load_with_validation``), so whoever can write into ``run_dir/checkpoints/`` (shared storage) runs code in
every rank of the next restart. Its main branch replaced that with ``weights_only=True`` and an allow-list
(mosaicml/composer#3937, merged after 0.32.1); this is the same change, with our allow-list
(:mod:`rsb_composer.checkpoints.safe_load`) and a one-line refusal naming the file and ``checkpoints.trust``.
Every rank refuses the same file at the same point, so a refusal stops the whole run (exit 2) without anything in
the file having run. ``checkpoints.trust: true`` (:func:`trust`) lets Composer's own loading through.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable
from typing import Any

from composer.utils import checkpoint

from rsb_composer.checkpoints.safe_load import load_data_only, refusal

_trust_checkpoints = False  # checkpoints.trust of the run being built (one run per process)


def trust(trust_checkpoints: bool) -> None:
    global _trust_checkpoints
    _trust_checkpoints = trust_checkpoints


def data_only(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    @functools.wraps(original)
    def _torch_load_with_validation(checkpoint_filepath: Any, map_location: str) -> Any:
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

    _torch_load_with_validation.__rsb_composer_patched__ = True  # type: ignore[attr-defined]
    return _torch_load_with_validation


def apply() -> None:
    if not getattr(checkpoint._torch_load_with_validation, "__rsb_composer_patched__", False):
        checkpoint._torch_load_with_validation = data_only(checkpoint._torch_load_with_validation)
