"""Compiling a ResNet's training step with torch 2.7's Inductor (``model.compile: true``).

torch 2.7.0's Inductor fails on ResNet training steps when it lets a kernel write into a dead input buffer
(``InductorError: KeyError: 'op7'`` in ``Scheduler.get_fused_node``, pytorch/pytorch#151423; seen here for
ResNet-18 and ResNet-50 backward on the CPU): compile without that in-place reuse. Freed buffers are still
reused (``allow_buffer_reuse``). torch 2.8 has the fix (pytorch/pytorch#151424).
"""

from __future__ import annotations


def apply() -> None:
    import torch._inductor.config as inductor

    inductor.inplace_buffers = False
