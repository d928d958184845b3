"""The augmentations of training images a recipe switches on (``data.auto_augment``, ``data.augmentations``).

``registry`` holds the registry (AUGMENTATIONS) and builds each pipeline's steps; each augmentation has its own
module here that registers itself. Every module of this package is imported here, so a new augmentation is one
new file.
"""

import sys

from rsb_composer.config import import_submodules
from rsb_composer.data.augmentations.registry import (
    AUGMENTATIONS,
    Augmentation,
    augmentations_on,
    check_augmentations,
    fast_steps,
    reference_steps,
)

# RandAugment first: it had its own key (data.auto_augment) before the section, and runs before the others.
import_submodules(sys.modules[__name__], first=("timm_randaugment",))

__all__ = ["AUGMENTATIONS", "Augmentation", "augmentations_on", "check_augmentations", "fast_steps",
           "reference_steps"]
