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
from rsb_composer.config.loading import apply_override, build_section, load_config, unknown_key
from rsb_composer.config.schema import (
    CheckpointsConfig,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    SyntheticConfig,
    ToyConfig,
)

__all__ = [
    "FAIL", "OK", "WARN", "About", "CheckpointsConfig", "Choices", "Config", "ConfigError", "DataConfig", "LossConfig",
    "ModelConfig", "OptimizerConfig", "PreflightCheck", "SchedulerConfig", "SyntheticConfig", "ToyConfig",
    "apply_override", "build_section", "check", "check_choice", "check_time", "import_submodules", "load_config",
    "nothing_to_check", "options_set_but_unread", "unknown_key",
]
