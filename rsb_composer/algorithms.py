"""YAML toggles -> Composer algorithms.

``algorithms:`` maps an algorithm's name to its constructor arguments: present means on, a null value (or
``algorithms.NAME=null`` on the command line) means off. With both ``mixup`` and ``cutmix`` on, each batch gets
exactly one of the two, as in the paper's code (timm's Mixup with switch_prob=0.5); Composer alone would apply
both to every batch.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from composer import algorithms as ca
from composer.core import Algorithm, Event, State
from composer.loggers import Logger

from rsb_composer import drop_path
from rsb_composer.config import ConfigError

# stochastic_depth with target_layer_name ResNetBottleneckDropPath: timm's drop-path through Composer's algorithm.
drop_path.register()

# Composer's algorithms that apply to an image classifier, by the names recipes use.
REGISTRY: dict[str, type[Algorithm]] = {
    "augmix": ca.AugMix,
    "blurpool": ca.BlurPool,
    "channels_last": ca.ChannelsLast,
    "colout": ca.ColOut,
    "cutmix": ca.CutMix,
    "cutout": ca.CutOut,
    "ema": ca.EMA,
    "factorize": ca.Factorize,
    "ghost_batchnorm": ca.GhostBatchNorm,
    "gradient_clipping": ca.GradientClipping,
    "label_smoothing": ca.LabelSmoothing,
    "layer_freezing": ca.LayerFreezing,
    "mixup": ca.MixUp,
    "progressive_resizing": ca.ProgressiveResizing,
    "randaugment": ca.RandAugment,
    "sam": ca.SAM,
    "selective_backprop": ca.SelectiveBackprop,
    "squeeze_excite": ca.SqueezeExcite,
    "stochastic_depth": ca.StochasticDepth,
    "swa": ca.SWA,
    "weight_standardization": ca.WeightStandardization,
}

# These insert themselves into the dataset's PIL transforms, so they need image files, not tensors.
IMAGE_FILE_ALGORITHMS = ("augmix", "randaugment")

# The algorithms that change the network itself (surgery at INIT): an evaluation of a checkpoint needs them to
# build the network the checkpoint holds; the others only act during training. Stochastic depth is not among
# them: timm's drop-path is the identity at evaluation, and what Composer's own version does there (scale each
# branch) is folded into the weights as they are read (rsb_composer.drop_path).
NETWORK_ALGORITHMS = ("blurpool", "channels_last", "factorize", "ghost_batchnorm", "squeeze_excite",
                      "weight_standardization")

# A resume must keep these as the run had them (resume.reconcile_resume refuses a change): Composer's
# required_on_load ones (network surgery, which Composer re-applies from the checkpoint even when the command
# drops it), and three measured here: weight standardization and layer freezing (a checkpoint saved without them
# fails to load with them) and SAM (it wraps the optimizer, whose state is dropped when it comes or goes).
_FIXED_BY_CHECKPOINT = ("layer_freezing", "sam", "weight_standardization")


def channels_last_on(section: dict[str, Any]) -> bool:
    """Whether the ``algorithms:`` section turns channels-last on (the batches are then made channels-last)."""
    return section.get("channels_last") is not None


def fixed_by_checkpoint(name: str) -> bool:
    return name in _FIXED_BY_CHECKPOINT or REGISTRY[name].required_on_load()


def canonical_arguments(name: str, kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """An algorithm's YAML arguments with its defaults filled in (None when off), so `{}` equals the defaults."""
    if kwargs is None:
        return None
    bound = inspect.signature(REGISTRY[name].__init__).bind_partial(None, **kwargs)
    bound.apply_defaults()
    return {key: value for key, value in list(bound.arguments.items())[1:]}


# timm's Mixup(switch_prob=0.5), used by the paper's recipes: half the batches get mixup, half cutmix.
MIXUP_CUTMIX_SWITCH_PROB = 0.5


class MixUpOrCutMix(Algorithm):
    """Per batch, either Composer's MixUp or its CutMix (never both), chosen with ``switch_prob`` for cutmix.

    Both Composer algorithms act on the same events (BEFORE_FORWARD mixes the inputs, BEFORE_LOSS the
    targets), so the choice made at BEFORE_FORWARD is kept for the rest of the batch's events. With
    ``data.microbatch_size`` Composer runs those events once per microbatch (``state.batch`` is the microbatch),
    so each microbatch gets its own choice and pairs its own images, as each GPU's batch does in timm.
    """

    def __init__(self, mixup: ca.MixUp, cutmix: ca.CutMix, switch_prob: float = MIXUP_CUTMIX_SWITCH_PROB):
        if mixup.interpolate_loss != cutmix.interpolate_loss:
            raise ValueError("mixup and cutmix must agree on interpolate_loss when both are on")
        self.mixup = mixup
        self.cutmix = cutmix
        self.switch_prob = switch_prob
        self.active: Algorithm = mixup

    def match(self, event: Event, state: State) -> bool:
        return self.mixup.match(event, state)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.BEFORE_FORWARD:
            # numpy's global RNG, like Composer's own mixing coefficients: seeded and checkpointed by Composer.
            self.active = self.cutmix if np.random.rand() < self.switch_prob else self.mixup
        self.active.apply(event, state, logger)


def _construct(name: str, kwargs: dict[str, Any]) -> Algorithm:
    cls = REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    for arg in kwargs:
        if arg not in params or arg == "self":
            valid = [p for p in params if p != "self"]
            close = difflib.get_close_matches(arg, valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid arguments: {', '.join(valid) or 'none'}"
            raise ConfigError(f"unknown argument 'algorithms.{name}.{arg}'{hint}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"algorithms.{name}: {err}") from None


def check_algorithms(section: dict[str, Any], decoded_images: bool = True) -> None:
    """Refuse unknown algorithm names and arguments, values Composer rejects (without building a model), and
    algorithms that edit decoded images when the data source has none (``decoded_images`` false)."""
    for name, kwargs in section.items():
        if name not in REGISTRY:
            close = difflib.get_close_matches(name, REGISTRY, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown algorithm 'algorithms.{name}'; {hint}valid: {', '.join(sorted(REGISTRY))}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(
                f"algorithms.{name} must be a mapping of arguments ({{}} for the defaults) or null for off, "
                f"got {kwargs!r}"
            )
    with _quiet_construction():
        build_algorithms(section)
    depth = section.get("stochastic_depth") or {}
    method = depth.get("stochastic_method", "block")  # Composer's default
    if depth.get("target_layer_name") == drop_path.DROP_PATH_TARGET and method != "sample":
        raise ConfigError(f"algorithms.stochastic_depth.stochastic_method={method}: {drop_path.DROP_PATH_TARGET} is "
                          "timm's per-sample drop-path; set stochastic_method: sample")
    if not decoded_images:
        for name in IMAGE_FILE_ALGORITHMS:
            if section.get(name) is not None:
                raise ConfigError(f"algorithms.{name} augments decoded images and cannot run on data.source=synthetic "
                                  f"tensors; use imagefolder or toy data, or set algorithms.{name}=null")


@contextlib.contextmanager
def _quiet_construction() -> Iterator[None]:
    """Composer's StochasticDepth and SAM warn about resuming from checkpoints when they are constructed; a check
    constructs them only to validate their arguments (show-config, preflight), so the warning is left to the
    trainer that runs them."""
    composer_algorithms = logging.getLogger("composer.algorithms")
    level = composer_algorithms.level
    composer_algorithms.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        composer_algorithms.setLevel(level)


# Applied after the mixing algorithms whatever the YAML order: both act at BEFORE_LOSS, and smoothing the mixed
# targets smooths both images' labels (as timm's mixup_target does); smoothing first would leave the permuted
# half of every mixed target unsmoothed.
_AFTER_MIXING = ("label_smoothing",)


def build_algorithms(section: dict[str, Any]) -> list[Algorithm]:
    """The Composer algorithms switched on in the ``algorithms:`` section, in the order written (label
    smoothing moved after mixup/cutmix)."""
    enabled = {name: kwargs or {} for name, kwargs in section.items() if kwargs is not None}
    enabled = dict(sorted(enabled.items(), key=lambda item: item[0] in _AFTER_MIXING))
    algorithms: list[Algorithm] = []
    for name, kwargs in enabled.items():
        if name == "cutmix" and "mixup" in enabled:
            continue  # folded into MixUpOrCutMix where mixup stands
        algorithm = _construct(name, kwargs)
        if name == "mixup" and "cutmix" in enabled:
            try:
                algorithm = MixUpOrCutMix(algorithm, _construct("cutmix", enabled["cutmix"]))
            except ValueError as err:
                raise ConfigError(f"algorithms.mixup/cutmix: {err}") from None
        algorithms.append(algorithm)
    return algorithms
