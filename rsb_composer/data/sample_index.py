"""An ImageFolder split's sample list held in three numpy arrays rather than a list of Python tuples.

torchvision keeps ``samples`` as a list of ``(path, label)`` tuples: three Python objects per image, spread over the
heap. DataLoader workers are forks that share the training process's memory until they write to it, and Python
writes to every object it reads (its reference count), so each worker turned every page of that list it read into
a private copy: over an epoch of ImageNet, the whole list, in every worker of every rank. Here the paths are one
byte buffer with offsets and the labels one integer array: reading a sample writes nothing but a few array headers,
and the buffers stay shared (docs/benchmarks.md has the figures).

``samples[i]`` still gives torchvision's ``(path, label)``; paths are stored relative to the split folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SampleIndex(Sequence):
    prefix: str  # the split folder with a trailing separator; paths are relative to it
    paths: np.ndarray  # uint8: every relative path's UTF-8 bytes, back to back
    offsets: np.ndarray  # int64, one more than the samples: path i is paths[offsets[i]:offsets[i + 1]]
    labels: np.ndarray  # int64: class index of each sample

    @classmethod
    def build(cls, directory: str, relative_paths: bytes, lengths: np.ndarray, labels: np.ndarray) -> SampleIndex:
        """From the relative paths' bytes back to back and each one's length in bytes."""
        if len(lengths) != len(labels):
            raise ValueError(f"{len(lengths)} paths but {len(labels)} labels")
        offsets = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
        return cls(os.path.join(directory, ""), np.frombuffer(relative_paths, dtype=np.uint8), offsets,
                   np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.prefix + self.paths[start:end].tobytes().decode()

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def __getitem__(self, index: int) -> tuple[str, int]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        index %= len(self)
        return self.path(index), self.label(index)

    @property
    def nbytes(self) -> int:
        return self.paths.nbytes + self.offsets.nbytes + self.labels.nbytes
