"""Before each evaluation, every rank takes rank 0's BatchNorm statistics: all ranks evaluate one network.

DDP broadcasts buffers from rank 0 at the start of each training forward, then each rank's forward updates its
own running statistics; after the last step of an epoch the ranks' statistics differ by that one update, and
each rank would evaluate its shard of the val split with its own. Rank 0's copy is the one checkpoints hold, so
evaluating with it makes val/* the metrics of the checkpointed model, and the same before and after a resume.
Training is unaffected: the next training forward broadcasts rank 0's buffers anyway.
"""

from __future__ import annotations

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


class BroadcastBuffersBeforeEval(Callback):
    # EVAL_START, not EVAL_BEFORE_ALL: Composer runs algorithms before callbacks, so EMA has swapped its averaged
    # weights in by now and those are the ones broadcast and evaluated.
    def eval_start(self, state: State, logger: Logger) -> None:
        if dist.get_world_size() > 1 and dist.is_initialized():
            for buffer in state.model.buffers():
                dist.broadcast(buffer, src=0)
