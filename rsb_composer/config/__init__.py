"""The run configuration: schema (dataclasses) and loading (YAML + dotted overrides, typed); nothing else.

Imports nothing else of rsb_composer. Which values a section accepts is checked by the module that builds it;
``rsb_composer.recipe.load_recipe`` loads a recipe and runs every check.
"""

from rsb_composer.config.checks import (
    FAIL,
    OK,
    WARN,
    About,
    Choices,
    PreflightCheck,
    check,
    check_choice,
    check_time,
    import_submodules,
    nothing_to_check,
    options_set_but_unread,
)
from rsb_composer.config.loading import apply_override, build_section, load_config
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
    "FAIL", "OK", "WARN", "About", "CheckpointsConfig", "Choices", "PreflightCheck", "build_section",
    "import_submodules", "nothing_to_check", "Config", "ConfigError", "DataConfig", "LoggersConfig", "LossConfig",
    "MlflowConfig", "ModelConfig", "OptimizerConfig", "SchedulerConfig", "SyntheticConfig", "TensorboardConfig",
    "ToyConfig", "WandbConfig", "apply_override", "check", "check_choice", "check_time", "load_config",
    "options_set_but_unread",
]
