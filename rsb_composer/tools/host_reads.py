"""Counting the tensor-to-Python reads a training step makes between the start of its forward pass and the end of
its backward pass.

On a GPU every such read (``.item()``, ``bool(tensor)``, ``float(tensor)``, ``.tolist()``, ...) of a device tensor
waits until the GPU has computed it, so the CPU stops queueing work: the backward pass can no longer be queued while
the forward pass runs. On a CPU nothing waits, but the reads are the same calls, so they can be counted anywhere:
:func:`counting_host_reads` patches torch's Tensor methods for the duration, and :class:`HostReadWindow` (a
Composer callback) opens the count at BEFORE_FORWARD (after the algorithms of that event, e.g. mixup's input
mixing) and closes it at AFTER_BACKWARD. Tensors a module keeps as plain attributes (not parameters or buffers)
stay on the host when the model moves to the GPU, so reading them costs no synchronisation and is not counted
(Composer's stochastic depth keeps its ``drop_rate`` so).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator

import torch
from composer.core import Callback, State
from composer.loggers import Logger

READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__complex__")


class HostReadWindow(Callback):
    """Counts reads inside each step's forward-to-backward window; ``reads`` by method, ``steps`` windows seen."""

    def __init__(self) -> None:
        self.open = False
        self.steps = 0
        self.reads: Counter[str] = Counter()
        self._host_tensors: set[int] = set()

    def fit_start(self, state: State, logger: Logger) -> None:
        for module in state.model.modules():
            placed = {id(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))}
            self._host_tensors |= {id(v) for v in vars(module).values()
                                   if isinstance(v, torch.Tensor) and id(v) not in placed}

    def before_forward(self, state: State, logger: Logger) -> None:
        self.open = True

    def after_backward(self, state: State, logger: Logger) -> None:
        self.open = False
        self.steps += 1

    def note(self, name: str, tensor: torch.Tensor) -> None:
        if self.open and id(tensor) not in self._host_tensors:
            self.reads[name] += 1

    @property
    def per_step(self) -> float:
        return sum(self.reads.values()) / max(self.steps, 1)


@contextlib.contextmanager
def counting_host_reads(window: HostReadWindow) -> Iterator[HostReadWindow]:
    """Patch torch.Tensor's reading methods so that each call is noted by ``window``; undone on exit."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name, original):
        @functools.wraps(original)
        def read(self, *args, **kwargs):
            window.note(name, self)
            return original(self, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield window
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
