"""Typed run configuration: YAML recipe + dotted command-line overrides -> validated :class:`Config`.

Everything a user can get wrong in a config is caught here, before any model or data work, and reported as
one :class:`ConfigError` line that names the key, the value and (where it helps) the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem the user can fix; its message is one line meant for the terminal."""


PRECISIONS = ("fp32", "amp_fp16", "amp_bf16")
DATA_SOURCES = ("imagefolder", "toy", "synthetic", "streaming")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
PIPELINES = ("fast", "reference")
TOY_TEXTURES = ("smooth", "fractal")
OPTIMIZERS = ("sgd", "decoupled_sgdw", "lamb", "adamw")
LOSSES = ("cross_entropy", "bce")


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    num_classes: int | None = None  # inferred from the dataset when left out
    sync_batchnorm: bool = False  # SyncBatchNorm across GPUs when training on more than one
    compile: bool = False  # torch.compile through Composer's compile_config
    zero_init_residual: bool = False  # zero the last BN gamma of each residual block (timm's zero_init_last)


@dataclass
class ToyConfig:
    num_classes: int = 10
    train_per_class: int = 300
    val_per_class: int = 50
    image_size: int = 64  # square images of this size; with max_image_size, the smallest width
    max_image_size: int | None = None  # widths uniform in [image_size, max_image_size], heights 2/3 to 1 of that
    texture: str = "smooth"  # fractal: 1/f noise, with the detail (and JPEG size) of photographs, for benchmarks
    seed: int = 0


@dataclass
class SyntheticConfig:
    num_classes: int = 1000
    train_samples: int = 2048
    val_samples: int = 256


@dataclass
class DataConfig:
    source: str = "imagefolder"
    path: str | None = None  # imagefolder: root with train/ and val/; toy: where to generate (default: cache)
    remote: str | None = None  # streaming: where the MDS shards are (s3://..., gs://..., or a folder)
    local: str | None = None  # streaming: local cache of the shards
    train_resolution: int = 224
    eval_resolution: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    crop_pct: float = 0.875  # eval: resize to eval_resolution / crop_pct, then centre-crop eval_resolution
    interpolation: str = "bilinear"
    pipeline: str = "fast"  # fast: uint8 arrays, normalised on the device; reference: timm's PIL transforms
    index_cache: bool = True  # keep the ImageFolder file list beside the data (or in ~/.cache); relist on change
    auto_augment: str | None = None  # timm RandAugment string, e.g. rand-m7-mstd0.5-inc1 (the paper's)
    repeated_augmentation: int = 0  # >1: timm's RepeatAugSampler with this many repeats (the paper's 3)
    batch_size: int = 256  # per device
    eval_batch_size: int | None = None  # per device; defaults to batch_size
    num_workers: int = 8
    prefetch_factor: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    max_bad_fraction: float = 0.001  # unreadable train images tolerated (skipped); past it the run stops
    toy: ToyConfig = field(default_factory=ToyConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class LossConfig:
    name: str = "cross_entropy"  # training loss on (mixed) soft targets; validation always uses cross-entropy
    target_threshold: float | None = None  # bce: targets above it become 1, the rest 0 (timm; the paper 0.2)
    sum_classes: bool = False  # bce: sum over classes, mean over images (Composer's scale) instead of mean over all


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1  # LR at reference_batch_size; scaled linearly to the real global batch
    reference_batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1.0e-4
    decay_bn_and_bias: bool = True  # false: no weight decay on BatchNorm and bias parameters (timm's recipes)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # lamb, adamw
    eps: float = 1.0e-6  # lamb, adamw
    max_grad_norm: float | None = 1.0  # lamb: global gradient-norm clip inside the optimizer (NVIDIA FusedLAMB)


@dataclass
class SchedulerConfig:
    warmup_epochs: float = 5.0  # the first warmup epoch runs at warmup_start_factor * lr, the last at lr
    warmup_start_factor: float = 0.01
    min_lr_factor: float = 0.0  # cosine ends at min_lr_factor * lr when training ends


@dataclass
class CheckpointsConfig:
    save_interval: str = "1ep"  # Composer time string; e.g. 2000ba for mid-epoch checkpoints in long epochs
    keep_last: int = 2  # Composer checkpoints kept for autoresume (-1 keeps all)
    keep_top_k: int = 5  # best checkpoints by val/acc1, as epoch={E}-val_acc1={A:.4f}.ckpt (0: none)


@dataclass
class WandbConfig:
    project: str | None = None
    name: str | None = None  # default: run_name
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggersConfig:
    wandb: WandbConfig | None = None  # present means on; offline by itself without a key or network


@dataclass
class Config:
    run_name: str | None = None  # default: the config file's stem, so rerunning a command finds its run
    run_dir: str | None = None  # default: runs/{run_name}
    seed: int = 17
    max_duration: str = "300ep"
    precision: str = "amp_fp16"
    eval_interval: str = "1ep"
    progress_bar: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # One key per Composer algorithm, its value the constructor's arguments; a null value switches it off.
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: CheckpointsConfig = field(default_factory=CheckpointsConfig)
    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    config_path: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (what config.yaml and show-config hold)."""
        out = dataclasses.asdict(self)
        out.pop("config_path")
        return out

    @property
    def eval_batch_size(self) -> int:
        return self.data.eval_batch_size or self.data.batch_size


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str], overrides: typing.Sequence[str] = (), *,
                check_paths: bool = True) -> Config:
    """Read a recipe YAML, apply ``key.sub=value`` overrides and return the validated :class:`Config`.

    ``check_paths=False`` skips the data-folder checks, for tools that only read the recipe (show-config,
    lr-schedule) on a machine without the data.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override)
    if raw.get("run_name") is None:
        raw["run_name"] = path.stem
    config = _build(Config, raw, prefix="")
    config.config_path = str(path)
    if config.run_dir is None:
        config.run_dir = str(Path("runs") / config.run_name)
    validate(config, check_paths=check_paths)
    return config


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"malformed override {override!r}: expected key.sub=value, e.g. optimizer.lr=0.1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # an unquoted string YAML cannot parse (e.g. 'a: b'); the typed check decides
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _unknown_key(prefix: str, key: str, valid: typing.Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    name = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise _unknown_key(prefix, str(key), fields)
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    if origin is list:  # a list of numbers (crop_scale); element type from the hint
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. [0.08, 1.0], got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:  # algorithms: name -> kwargs mapping; the algorithm registry validates the contents
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads 5e-3 (no dot) as a string; a number written that way is still a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in the dataclasses, not user input


# ----------------------------------------------------------------------------------------------------------------
# Validation: impossible values are refused here, with the key and value named.


def _check(condition: bool, key: str, value: Any, why: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: {why}")


def _check_choice(key: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(choices)}{hint}")


def _check_time(key: str, value: str, units: str) -> None:
    from composer.core import Time, TimeUnit

    try:
        time = Time.from_timestring(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}={value!r}: not a Composer time string; use e.g. 300ep or 1000ba") from None
    allowed = {"ep": TimeUnit.EPOCH, "ba": TimeUnit.BATCH}
    _check(time.unit in [allowed[u] for u in units.split(",")], key, value, f"the unit must be one of: {units}")
    _check(time.value > 0, key, value, "must be positive")


def _check_auto_augment(spec: str) -> None:
    from timm.data.auto_augment import rand_augment_transform

    if not spec.startswith("rand"):
        raise ConfigError(f"data.auto_augment={spec!r}: expected a timm RandAugment string such as "
                          "rand-m7-mstd0.5-inc1")
    try:
        rand_augment_transform(spec, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"data.auto_augment={spec!r}: not a valid timm RandAugment string ({err})") from None


def validate(config: Config, check_paths: bool = True) -> None:
    _check_choice("precision", config.precision, PRECISIONS)
    _check_time("max_duration", config.max_duration, "ep,ba")
    _check_time("eval_interval", config.eval_interval, "ep,ba")
    _check_time("checkpoints.save_interval", config.checkpoints.save_interval, "ep,ba")
    _check(config.checkpoints.keep_last == -1 or config.checkpoints.keep_last >= 1, "checkpoints.keep_last",
           config.checkpoints.keep_last, "keep at least 1 checkpoint (or -1 for all)")
    _check(config.checkpoints.keep_top_k >= 0, "checkpoints.keep_top_k", config.checkpoints.keep_top_k,
           "must be 0 (none) or more")

    m = config.model
    _check(m.arch.startswith(("resnet", "resnext", "wide_resnet")), "model.arch", m.arch,
           "must name a torchvision ResNet (resnet18 ... resnet152, resnext*, wide_resnet*)")
    import torchvision

    _check(m.arch in torchvision.models.list_models(module=torchvision.models), "model.arch", m.arch,
           "torchvision has no model of this name")
    if m.num_classes is not None:
        _check(m.num_classes >= 2, "model.num_classes", m.num_classes, "need at least 2 classes")

    d = config.data
    _check_choice("data.source", d.source, DATA_SOURCES)
    _check_choice("data.interpolation", d.interpolation, INTERPOLATIONS)
    _check_choice("data.pipeline", d.pipeline, PIPELINES)
    for key in ("train_resolution", "eval_resolution"):
        _check(getattr(d, key) >= 16, f"data.{key}", getattr(d, key), "must be at least 16 pixels")
    _check(len(d.crop_scale) == 2 and 0.0 < d.crop_scale[0] <= d.crop_scale[1] <= 1.0, "data.crop_scale",
           d.crop_scale, "must be [min, max] with 0 < min <= max <= 1")
    _check(0.0 < d.crop_pct <= 1.0, "data.crop_pct", d.crop_pct, "must be in (0, 1]")
    _check(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be at least 1")
    if d.eval_batch_size is not None:
        _check(d.eval_batch_size >= 1, "data.eval_batch_size", d.eval_batch_size, "must be at least 1")
    _check(d.num_workers >= 0, "data.num_workers", d.num_workers, "must be 0 or more")
    _check(d.prefetch_factor >= 1, "data.prefetch_factor", d.prefetch_factor, "must be at least 1")
    _check(0 <= d.max_bad_fraction <= 1, "data.max_bad_fraction", d.max_bad_fraction, "must be in [0, 1]")
    _check(d.repeated_augmentation >= 0, "data.repeated_augmentation", d.repeated_augmentation, "must be >= 0")
    if d.auto_augment is not None:
        _check_auto_augment(d.auto_augment)
    if d.source == "imagefolder" and check_paths:
        if d.path is None:
            raise ConfigError("data.path is not set: point it at an ImageNet-style folder with train/ and val/ "
                              "(e.g. data.path=/fsx/imagenet), or use data.source=toy")
        for split in ("train", "val"):
            folder = Path(d.path) / split
            _check(folder.is_dir(), "data.path", d.path, f"no '{split}' folder at {folder}")
        from rsb_composer.data.datasets import list_classes

        train_classes = list_classes(Path(d.path) / "train")
        _check(bool(train_classes), "data.path", d.path, "train/ holds no class folders")
        empty = [name for name in train_classes if not any(True for _ in os.scandir(Path(d.path) / "train" / name))]
        _check(not empty, "data.path", d.path,
               f"{len(empty)} class folders in train/ are empty (first: {empty[0] if empty else ''})")
        extra = sorted(set(list_classes(Path(d.path) / "val")) - set(train_classes))
        _check(not extra, "data.path", d.path,
               f"val/ has {len(extra)} classes that train/ lacks (first: {extra[0] if extra else ''})")
    if d.source == "streaming":
        if not (d.remote or d.local):
            raise ConfigError("data.source=streaming needs data.remote (s3://..., gs://... or a folder of MDS shards "
                              "from `rsb-composer convert-mds`) and/or data.local (the local cache)")
        from rsb_composer.data.streaming import local_classes

        if config.model.num_classes is None and local_classes(d.remote, d.local) is None:
            raise ConfigError("model.num_classes is not set and data.remote is not a local folder to read "
                              "classes.txt from; set model.num_classes (1000 for ImageNet)")
        if check_paths and d.remote and "://" not in d.remote:
            index = Path(d.remote) / "train" / "index.json"
            _check(index.is_file(), "data.remote", d.remote, f"no MDS shards at {index.parent} (no index.json)")
    if d.source == "toy":
        t = d.toy
        _check(2 <= t.num_classes <= 10, "data.toy.num_classes", t.num_classes, "the toy set has 2 to 10 classes")
        _check(t.train_per_class >= 1, "data.toy.train_per_class", t.train_per_class, "must be at least 1")
        _check(t.val_per_class >= 1, "data.toy.val_per_class", t.val_per_class, "must be at least 1")
        _check(t.image_size >= 16, "data.toy.image_size", t.image_size, "must be at least 16 pixels")
        if t.max_image_size is not None:
            _check(t.max_image_size >= t.image_size, "data.toy.max_image_size", t.max_image_size,
                   f"must be at least data.toy.image_size={t.image_size}")
        _check_choice("data.toy.texture", t.texture, TOY_TEXTURES)
    if d.source == "synthetic":
        s = d.synthetic
        _check(s.num_classes >= 2, "data.synthetic.num_classes", s.num_classes, "need at least 2 classes")
        _check(s.train_samples >= 1, "data.synthetic.train_samples", s.train_samples, "must be at least 1")
        _check(s.val_samples >= 1, "data.synthetic.val_samples", s.val_samples, "must be at least 1")

    loss = config.loss
    _check_choice("loss.name", loss.name, LOSSES)
    if loss.target_threshold is not None:
        _check(loss.name == "bce", "loss.target_threshold", loss.target_threshold, "only applies to loss.name=bce")
        _check(0 <= loss.target_threshold < 1, "loss.target_threshold", loss.target_threshold, "must be in [0, 1)")

    o = config.optimizer
    _check_choice("optimizer.name", o.name, OPTIMIZERS)
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optimizer.betas", o.betas,
           "must be [beta1, beta2], each in [0, 1)")
    _check(o.eps > 0, "optimizer.eps", o.eps, "must be > 0")
    if o.max_grad_norm is not None:
        _check(o.max_grad_norm > 0, "optimizer.max_grad_norm", o.max_grad_norm, "must be > 0 (or null for none)")
    _check(o.lr > 0, "optimizer.lr", o.lr, "must be > 0")
    _check(o.reference_batch_size >= 1, "optimizer.reference_batch_size", o.reference_batch_size, "must be >= 1")
    _check(0 <= o.momentum < 1, "optimizer.momentum", o.momentum, "must be in [0, 1)")
    _check(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "must be >= 0")
    _check(not o.nesterov or o.momentum > 0, "optimizer.nesterov", o.nesterov, "needs optimizer.momentum > 0")

    s = config.scheduler
    _check(s.warmup_epochs == 0 or s.warmup_epochs >= 1, "scheduler.warmup_epochs", s.warmup_epochs,
           "must be 0 (none) or at least 1: epoch 0 starts the ramp and epoch warmup_epochs - 1 runs at the peak")
    _check(0 <= s.warmup_start_factor <= 1, "scheduler.warmup_start_factor", s.warmup_start_factor,
           "must be in [0, 1]")
    _check(0 <= s.min_lr_factor < 1, "scheduler.min_lr_factor", s.min_lr_factor, "must be in [0, 1)")
    if config.max_duration.endswith("ep"):
        epochs = float(config.max_duration[:-2])
        _check(s.warmup_epochs < epochs, "scheduler.warmup_epochs", s.warmup_epochs,
               f"must be shorter than max_duration={config.max_duration}")

    from rsb_composer.algorithms import IMAGE_FILE_ALGORITHMS, validate_algorithms

    validate_algorithms(config.algorithms)
    if d.source == "synthetic":
        for name in IMAGE_FILE_ALGORITHMS:
            if config.algorithms.get(name) is not None:
                raise ConfigError(f"algorithms.{name} augments decoded images and cannot run on data.source=synthetic "
                                  f"tensors; use imagefolder or toy data, or set algorithms.{name}=null")
