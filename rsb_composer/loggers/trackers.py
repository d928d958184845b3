"""The logger destinations of a run: the run folder's own (metrics.csv, plots), the progress bar, and the
tracking services a recipe switches on under ``loggers:`` (the TRACKERS registry), with their checks."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from composer.loggers import LoggerDestination

from callbacks.metrics_table import MetricsTable
from callbacks.plots import RunPlots
from rsb_composer.config import Choices, Config, ConfigError, LoggersConfig
from rsb_composer.loggers.mlflow_run import build_mlflow
from rsb_composer.loggers.progress_bar import MetricsProgressBar
from rsb_composer.loggers.tensorboard_events import build_tensorboard
from rsb_composer.loggers.wandb_run import build_wandb
from rsb_composer.run_folder import RunFolder

# A tracker's builder: (its loggers.NAME section, the run folder, run_name, the resolved config) -> (the
# destination, where it writes, in words for the start-up summary).
Builder = Callable[[Any, RunFolder, str, dict[str, Any]], tuple[LoggerDestination, str]]


@dataclass(frozen=True)
class Tracker:
    title: str  # as the start-up summary names it
    module: str  # the package it needs
    extra: str | None  # the pip extra that installs that package; None: always installed
    build: Builder


TRACKERS: Choices[Tracker] = Choices("loggers")
TRACKERS.add("wandb", Tracker("W&B", "wandb", None, build_wandb))
TRACKERS.add("tensorboard", Tracker("TensorBoard", "tensorboard", "tensorboard", build_tensorboard))
TRACKERS.add("mlflow", Tracker("MLflow", "mlflow", "mlflow", build_mlflow))


def trackers_on(cfg: LoggersConfig) -> dict[str, Any]:
    """The ``loggers:`` sections switched on (present), by tracker name."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) is not None}


def check_loggers(cfg: LoggersConfig) -> None:
    """A tracker switched on without its package installed is refused, naming the extra that installs it."""
    for name in trackers_on(cfg):
        tracker = TRACKERS.pick(name)
        if tracker.extra is not None and importlib.util.find_spec(tracker.module) is None:
            raise ConfigError(f"loggers.{name} is on but the {tracker.module} package is not installed: "
                              f"pip install -e \".[{tracker.extra}]\" (or set loggers.{name}=null)")


@dataclass
class RunLoggers:
    destinations: list[LoggerDestination]
    trackers: dict[str, str]  # tracker title -> where it writes


def build_loggers(config: Config, run: RunFolder, progress_bar: bool) -> RunLoggers:
    """Order matters: the table writes metrics.csv at EPOCH_CHECKPOINT before the plots read it."""
    destinations: list[LoggerDestination] = [MetricsTable(run.metrics_csv), RunPlots(run.plots, run.metrics_csv)]
    if progress_bar:
        destinations.append(MetricsProgressBar())
    trackers = {}
    resolved = config.to_dict()
    assert config.run_name is not None  # load_config fills it in
    for name, section in trackers_on(config.loggers).items():
        tracker = TRACKERS.pick(name)
        destination, where = tracker.build(section, run, config.run_name, resolved)
        destinations.append(destination)
        trackers[tracker.title] = where
    return RunLoggers(destinations, trackers)
