"""Per-node signal files (Composer 0.32.1; a crash at start of multi-node runs with a shared run folder).

``composer.utils.dist.get_node_signal_file_name`` is meant to give each node its own signal file for the file-based
wait around autoresume, but it broadcasts rank 0's name to every node, node number included. With the checkpoint
folder on shared storage (what autoresume across nodes needs), every node's local rank 0 then creates and deletes
the same file, and the second deletion crashes the run at start ("No such file or directory:
'._signal_file_node0_...'"). The patch keeps the collective broadcast (every rank must still call it) and puts each
node's own number back. Composer's main branch still broadcasts rank 0's name.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

from composer.utils import dist


def per_node(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def get_node_signal_file_name(rng: random.Random | None = None) -> str:
        name = original(rng)  # collective: every rank must still call it
        random_part = name.rsplit("_", 1)[1]
        return f"._signal_file_node{dist.get_node_rank()}_{random_part}"

    get_node_signal_file_name.__rsb_composer_patched__ = True  # type: ignore[attr-defined]
    return get_node_signal_file_name


def apply() -> None:
    if not getattr(dist.get_node_signal_file_name, "__rsb_composer_patched__", False):
        dist.get_node_signal_file_name = per_node(dist.get_node_signal_file_name)
