"""Where the fast pipeline's uint8 images become normalised floats, and the ImageNet statistics they use.

The workers hand over uint8 batches (a quarter of the bytes of float ones), stacked channels-last by
:class:`ChannelsLastCollate`; :class:`DeviceNormalize`, a Composer ``batch_transforms``, moves them to the
training device and normalises them there, before any algorithm sees the batch.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import get_worker_info

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ChannelsLastCollate:
    """The fast pipeline's ``collate_fn``: (3, H, W) uint8 images over (H, W, 3) memory, stacked into one
    (N, H, W, 3) block (a plain copy, where default_collate's (N, 3, H, W) stack transposes every image) and
    handed on as its (N, 3, H, W) channels-last view, which normalises into either memory format fastest.

    In a worker the block is allocated in shared memory, as default_collate does, so it reaches the training
    process without another copy.
    """

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*samples, strict=True)
        channels, height, width = images[0].shape
        shape = (len(images), height, width, channels)
        if get_worker_info() is not None:
            storage = torch.UntypedStorage._new_shared(math.prod(shape))
            block = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
        else:
            block = torch.empty(shape, dtype=torch.uint8)
        torch.stack([image.permute(1, 2, 0) for image in images], out=block)
        return block.permute(0, 3, 1, 2), torch.tensor(labels)


def normalize_uint8(inputs: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    channels_last: bool = False) -> torch.Tensor:
    """A uint8 image batch as float32 ``inputs * scale + shift`` (see :func:`affine`), in one new buffer.

    Converting into one buffer and scaling it in place is much cheaper on a CPU than
    ``inputs.float().sub(mean).div(std)``, which allocates (and page-faults) more batch-sized tensors.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(inputs.shape, dtype=torch.float32, device=inputs.device, memory_format=memory_format)
    if channels_last and inputs.is_contiguous(memory_format=torch.channels_last):
        # Per-channel constants against channels-last memory broadcast along an inner dimension of 3, which torch
        # runs a few elements at a time; the same arithmetic on rows of W pixels x 3 channels, against one row of
        # repeated constants, vectorises and gives the same floats (docs/benchmarks.md has both timings).
        n, c, h, w = inputs.shape
        rows = out.permute(0, 2, 3, 1).view(n * h, w * c)
        rows.copy_(inputs.permute(0, 2, 3, 1).reshape(n * h, w * c))
        rows.mul_(scale.view(c).repeat(w)).add_(shift.view(c).repeat(w))
        return out
    return out.copy_(inputs).mul_(scale).add_(shift)


def affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``x * scale + shift == (x / 255 - mean) / std`` per channel, on ``device``."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return 1.0 / (255 * std), -mean / std


class DeviceNormalize:
    """A Composer ``batch_transforms``: uint8 batches to the training device, normalised there.

    Composer applies it to each batch before AFTER_DATALOADER, so every algorithm (progressive resizing, mixup,
    ...) sees the normalised float batch the reference pipeline would have given it. With channels-last on,
    the batch comes out channels-last, as the model wants it. On a GPU this work and three quarters of the
    host-to-device copy leave the CPU; on a CPU it runs in the training process instead of the workers.
    """

    def __init__(self, device: str, channels_last: bool = False):
        self.device = device
        self.channels_last = channels_last
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        if self.device == "gpu":  # Composer has set each rank's current device
            device = torch.device("cuda", torch.cuda.current_device())
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if inputs.device not in self._constants:  # made once: each would be a blocking host-to-device copy
            self._constants[inputs.device] = affine(inputs.device)
        return normalize_uint8(inputs, *self._constants[inputs.device], self.channels_last), targets
