"""The run configuration's schema: one dataclass per YAML section, each field with its default and meaning.

What a value may be (a known optimizer, a readable data folder, ...) is checked by the module that builds the
section (``rsb_composer.recipe.check_recipe`` calls them all); here are only the names, types and defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem the user can fix; its message is one line meant for the terminal."""


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    num_classes: int | None = None  # inferred from the dataset when left out
    sync_batchnorm: bool = False  # SyncBatchNorm across GPUs when training on more than one
    compile: bool = False  # torch.compile through Composer's compile_config
    zero_init_residual: bool = False  # zero the last BN gamma of each residual block (timm's zero_init_last)
    # Warm start: the network's weights from a checkpoint, an exported .pth or a .safetensors file, read without
    # running code; a fresh run otherwise (optimizer, schedule, step count). Ignored once the run has its own
    # checkpoint (autoresume wins).
    init_from: str | None = None


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
    # More augmentations of train images, one key each, its value the augmentation's options ({} for the
    # defaults, null off), run in this order after RandAugment (rsb_composer/data/augmentations/).
    augmentations: dict[str, Any] = field(default_factory=dict)
    repeated_augmentation: int = 0  # >1: timm's RepeatAugSampler with this many repeats (the paper's 3)
    batch_size: int | None = None  # per device; 256 when neither it nor global_batch_size is set
    # All devices together, instead of batch_size: each device takes global_batch_size / world size, so the
    # optimizer sees the same batch (and LR) on any number of devices.
    global_batch_size: int | None = None
    # Gradient accumulation: each device's batch runs in microbatches of this size (BatchNorm statistics per
    # microbatch); "auto": Composer's out-of-memory back-off (GPU only); null: the whole per-device batch at once.
    microbatch_size: int | str | None = None
    eval_batch_size: int | None = None  # per device; defaults to the train microbatch (or per-device batch)
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
    betas: list[float] | None = None  # lamb, adamw, lion; null: the optimizer's own ([0.9, 0.999]; lion [0.9, 0.99])
    eps: float = 1.0e-6  # lamb, adamw
    max_grad_norm: float | None = 1.0  # lamb: global gradient-norm clip inside the optimizer (NVIDIA FusedLAMB)


@dataclass
class SchedulerConfig:
    style: str = "per_step"  # per_step: updated every step (the deployment notes'); timm: timm's CosineLRScheduler
    warmup_epochs: float = 5.0  # linear warmup length; where the peak falls depends on the style
    warmup_start_factor: float = 0.01  # epoch 0's LR as a fraction of lr (timm's --warmup-lr / lr)
    min_lr_factor: float = 0.0  # the cosine's floor, as a fraction of lr (timm's --min-lr / lr)


@dataclass
class CheckpointsConfig:
    save_interval: str = "1ep"  # Composer time string; e.g. 2000ba for mid-epoch checkpoints in long epochs
    keep_last: int = 2  # Composer checkpoints kept for autoresume (-1 keeps all)
    keep_top_k: int = 5  # best checkpoints by val/acc1, as epoch={E}-val_acc1={A:.4f}.ckpt (0: none)
    # true: load checkpoints (autoresume) with full unpickling, which can run code stored in them; only for files
    # you trust that need more than tensors and plain data
    trust: bool = False


@dataclass
class Config:
    run_name: str | None = None  # default: the config file's stem, so rerunning a command finds its run
    run_dir: str | None = None  # default: runs/{run_name}
    seed: int = 17
    max_duration: str = "300ep"
    precision: str = "amp_fp16"
    eval_interval: str = "1ep"
    progress_bar: bool = True
    dist_timeout: float = 300.0  # seconds the ranks wait for each other at start and in collectives (Composer's)
    deterministic: bool = False  # bit-exact reruns and resumes on a GPU too, slower (rsb_composer/determinism.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # One key per Composer algorithm, its value the constructor's arguments; a null value switches it off.
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: CheckpointsConfig = field(default_factory=CheckpointsConfig)
    # One key per tracking service (W&B, TensorBoard, MLflow, ...), its value the tracker's options: present means
    # on ({} for its defaults), null or absent off. Each tracker's module reads and checks its own options
    # (rsb_composer.loggers); the checked recipe lists every tracker, with its defaults filled in.
    loggers: dict[str, Any] = field(default_factory=dict)
    config_path: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (what config.yaml and show-config hold)."""
        out = dataclasses.asdict(self)
        out.pop("config_path")
        return out
