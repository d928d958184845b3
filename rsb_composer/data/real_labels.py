"""ImageNet-ReaL (Beyer et al. 2020, "Are we done with ImageNet?"): re-assessed labels for ImageNet's val images.

``real.json`` (google-research/reassessed-imagenet; timm installs the same file as
``timm/data/_info/imagenet_real_labels.json``) is a JSON list with one entry per val image, in the order of the
images' file names (``ILSVRC2012_val_00000001.JPEG`` first), each the list of the label indices that are right
for that image. An empty list means the raters found no valid label: the image is left out. A prediction is right
when it is in the list. The val split here sits in class folders, so the order is that of the file names across
all folders, not ImageFolder's order (class folder, then name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rsb_composer.config import ConfigError


def name_order(paths: Sequence[str]) -> list[int]:
    """For each sample, its position among all samples sorted by file name (ties broken by the whole path)."""
    ranked = sorted(range(len(paths)), key=lambda i: (os.path.basename(paths[i]), paths[i]))
    position = [0] * len(paths)
    for rank, index in enumerate(ranked):
        position[index] = rank
    return position


def load_real_labels(path: str | Path, sample_paths: Sequence[str], num_classes: int) -> list[list[int]]:
    """The valid labels of each sample of a split (in the split's own order), read from a ``real.json``.

    Refused in one line: a file that is not such a list, one whose length is not the split's number of images,
    or one with a label outside ``0 .. num_classes - 1``.
    """
    where = f"--real-labels {path}"
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: not readable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(entries, list) or not all(isinstance(e, list) for e in entries):
        raise ConfigError(f"{where}: not ReaL's format (a JSON list holding one list of label indices per image)")
    if len(entries) != len(sample_paths):
        raise ConfigError(f"{where}: {len(entries):,} entries, but the split evaluated has {len(sample_paths):,} "
                          "images (ReaL's real.json has one entry per ImageNet val image, 50,000)")
    for index, labels in enumerate(entries):
        for label in labels:
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < num_classes:
                raise ConfigError(f"{where}: entry {index} has label {label!r}, outside the recipe's {num_classes} "
                                  f"classes (0-{num_classes - 1})")
    if not any(entries):
        raise ConfigError(f"{where}: every entry is empty; no image would be scored")
    return [list(entries[rank]) for rank in name_order(sample_paths)]


def real_correct(top1: torch.Tensor, labels: Sequence[Sequence[int]]) -> tuple[int, int]:
    """(right, scored): of the samples whose label list is not empty, how many have their top-1 prediction in it.

    ``top1[i]`` is the prediction for the sample whose valid labels are ``labels[i]``.
    """
    right = scored = 0
    for prediction, valid in zip(top1.tolist(), labels, strict=True):
        if valid:
            scored += 1
            right += prediction in valid
    return right, scored
