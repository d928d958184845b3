"""The augmentations a recipe switches on for training images (the AUGMENTATIONS registry), after the crop and
flip every train image gets (``data.crop_scale``) and before the image becomes a tensor.

An augmentation is one module of this package that registers itself (``rsb_composer.data.augmentations`` imports
every module of the package, so a new augmentation is a new file and no other code; its options get their row on
docs/configuration.md; docs/development.md, "An augmentation"):

- its options, a dataclass: ``data.augmentations.NAME.KEY`` is read into it, unknown keys refused with the closest
  valid one, values coerced to the field types (``data.augmentations.NAME: {}`` switches it on with its defaults,
  null or absent off); the augmentations run in the order the section lists them;
- ``Augmentation(options, fast, reference)``: ``fast(options, data)`` builds the step of the fast pipeline, which
  gets (H, W, 3) uint8 RGB arrays when it declares ``takes_arrays = True`` (else a PIL image) and returns the
  same kind; ``reference(options, data)`` builds the reference pipeline's step on PIL images (None: the fast step,
  on the PIL image's pixels). ``data`` is the ``data:`` section (``train_resolution``, ``interpolation``). Steps
  are classes, not closures, so they pickle into DataLoader workers started by spawn;
- ``AUGMENTATIONS.add(name, augmentation, doc=..., check=...)``: ``check(options, data)`` raises ConfigError
  one-liners naming the key.

Randomness: draw from Python's ``random``, numpy's global generator or torch's; each sample reseeds them from its
own stream (:mod:`rsb_composer.data.sample_rng`), so a resumed epoch draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from rsb_composer.config import Choices, ConfigError, DataConfig, build_section, unknown_key

Builder = Callable[[Any, DataConfig], Callable]


@dataclass(frozen=True)
class Augmentation:
    options: type  # the dataclass data.augmentations.NAME is read into (with data_key: that key's type)
    fast: Builder  # (options, data section) -> the fast pipeline's step
    reference: Builder | None = None  # (options, data section) -> the reference pipeline's PIL step; None: fast's
    # Switched on by data.<data_key> (its value is the options) instead of data.augmentations.NAME: the
    # augmentations that had a key of their own before the section existed (data.auto_augment). They run first.
    data_key: str | None = None


AUGMENTATIONS: Choices[Augmentation] = Choices("data.augmentations")


def _options(name: str, value: Any) -> Any:
    entry = AUGMENTATIONS[name]
    if isinstance(value, entry.options):
        return value
    if entry.data_key is not None:
        return entry.options(value)
    return build_section(entry.options, value, prefix=f"data.augmentations.{name}.")


def augmentations_on(cfg: DataConfig) -> list[tuple[str, Any]]:
    """The augmentations switched on, in the order they run, each with its options."""
    on = [(name, _options(name, getattr(cfg, entry.data_key))) for name, entry in AUGMENTATIONS.items()
          if entry.data_key is not None and getattr(cfg, entry.data_key) is not None]
    return on + [(name, _options(name, value)) for name, value in cfg.augmentations.items() if value is not None]


def check_augmentations(cfg: DataConfig) -> None:
    """Check every augmentation switched on with its own check, and resolve ``data.augmentations`` in place (each
    one's options typed, their defaults filled in, as config.yaml shows them); an unknown name or option is
    refused with the closest valid one."""
    section = cfg.augmentations
    for name, value in section.items():
        if name not in AUGMENTATIONS:
            valid = [known for known, entry in AUGMENTATIONS.items() if entry.data_key is None]
            if not valid:
                own_keys = ", ".join(f"{known} by data.{entry.data_key}" for known, entry in AUGMENTATIONS.items())
                raise ConfigError(f"data.augmentations.{name}: no augmentation is switched on under "
                                  f"data.augmentations yet ({own_keys}); docs/development.md says how to add one")
            raise unknown_key("data.augmentations.", str(name), valid)
        data_key = AUGMENTATIONS[name].data_key
        if data_key is not None:
            raise ConfigError(f"data.augmentations.{name}: {name} is switched on by data.{data_key}; set that key")
        if value is not None and not isinstance(value, (dict, AUGMENTATIONS[name].options)):
            raise ConfigError(f"data.augmentations.{name} must be a mapping of options ({{}} for the defaults) or "
                              f"null for off, got {value!r}")
    section.update({name: None if value is None else _options(name, value) for name, value in section.items()})
    for name, options in augmentations_on(cfg):
        AUGMENTATIONS.check(name, options, cfg)


def fast_steps(cfg: DataConfig) -> list[Callable]:
    """The fast pipeline's augmentation steps, in order."""
    return [AUGMENTATIONS[name].fast(options, cfg) for name, options in augmentations_on(cfg)]


def reference_steps(cfg: DataConfig) -> list[Callable]:
    """The reference pipeline's augmentation steps (on PIL images), in order."""
    steps = []
    for name, options in augmentations_on(cfg):
        entry = AUGMENTATIONS[name]
        if entry.reference is not None:
            steps.append(entry.reference(options, cfg))
        else:
            step = entry.fast(options, cfg)
            steps.append(OnPixels(step) if getattr(step, "takes_arrays", False) else step)
    return steps


class OnPixels:
    """An array step on a PIL image: its pixels in, a PIL image of the result out."""

    def __init__(self, step: Callable[[np.ndarray], np.ndarray]):
        self.step = step

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(self.step(np.array(image.convert("RGB"), dtype=np.uint8)))

    def __repr__(self) -> str:
        return f"OnPixels({self.step!r})"
