"""The run configuration: schema (dataclasses) and loading (YAML + dotted overrides, typed); nothing else.

Imports nothing else of rsb_composer. Which values a section accepts is checked by the module that builds it;
``rsb_composer.recipe.load_recipe`` loads a recipe and runs every check.
"""

from rsb_composer.config.checks import Choices, check, check_choice, check_time, options_set_but_unread
from rsb_composer.config.loading import apply_override, load_config
from rsb_composer.config.schema import (
    CheckpointsConfig,
    Config,
    ConfigError,
    DataConfig,
    LoggersConfig,
    LossConfig,
    MlflowConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    SyntheticConfig,
    TensorboardConfig,
    ToyConfig,
    WandbConfig,
)

__all__ = [
    "CheckpointsConfig", "Choices", "Config", "ConfigError", "DataConfig", "LoggersConfig", "LossConfig",
    "MlflowConfig", "ModelConfig", "OptimizerConfig", "SchedulerConfig", "SyntheticConfig", "TensorboardConfig",
    "ToyConfig", "WandbConfig", "apply_override", "check", "check_choice", "check_time", "load_config",
    "options_set_but_unread",
]
