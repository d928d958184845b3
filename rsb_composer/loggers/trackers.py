"""The logger destinations of a run: the run folder's own (metrics.csv, plots), the progress bar, and the
tracking services a recipe switches on under ``loggers:`` (the TRACKERS registry).

A tracker is one module of this package that registers itself (``rsb_composer.loggers`` imports every module of
the package, so a new tracker is a new file and no other code; its options get their row on
docs/configuration.md; docs/development.md, "A tracker"):

- its options, a dataclass: ``loggers.NAME.KEY`` is read into it, unknown keys refused with the closest valid one,
  values coerced to the field types (``loggers.NAME: {}`` switches the tracker on with its defaults, null off);
- ``Tracker(title, options, build)``, whose ``build(options, run, run_name, resolved)`` returns the Composer
  LoggerDestination and where it writes (in words, for the start-up summary);
- ``TRACKERS.add(name, tracker, doc=..., check=..., preflight=...)``: ``check(options)`` raises ConfigError one-
  liners (:func:`needs_package` for a tracker whose package is a pip extra); ``preflight(options or None,
  config)`` returns the tracker's line of ``rsb-composer preflight`` (None: no line).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from composer.loggers import LoggerDestination

from callbacks.metrics_table import MetricsTable
from callbacks.plots import RunPlots
from rsb_composer.config import Choices, Config, ConfigError, build_section, unknown_key
from rsb_composer.loggers.progress_bar import MetricsProgressBar
from rsb_composer.run_folder import RunFolder

# A tracker's builder: (its options, the run folder, run_name, the resolved config) -> (the destination, where it
# writes, in words for the start-up summary).
Builder = Callable[[Any, RunFolder, str, dict[str, Any]], tuple[LoggerDestination, str]]


@dataclass(frozen=True)
class Tracker:
    title: str  # as the start-up summary and preflight name it
    options: type  # the dataclass loggers.NAME is read into
    build: Builder


TRACKERS: Choices[Tracker] = Choices("loggers")


def needs_package(name: str, module: str, extra: str) -> Callable[[Any], None]:
    """The check of a tracker that needs ``module``, installed by the pip extra ``extra``: refused when absent,
    naming the extra."""

    def installed(options: Any) -> None:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"loggers.{name} is on but the {module} package is not installed: "
                              f"pip install -e \".[{extra}]\" (or set loggers.{name}=null)")

    installed.__doc__ = f"loggers.{name} needs the {module} package (the [{extra}] extra)."
    return installed


def tracker_options(name: str, value: Any) -> Any:
    """``loggers.NAME``'s value as the tracker's options (a mapping read and coerced; options kept as they are)."""
    options = TRACKERS.pick(name).options
    return value if isinstance(value, options) else build_section(options, value, prefix=f"loggers.{name}.")


def trackers_on(section: dict[str, Any]) -> dict[str, Any]:
    """The trackers switched on (present and not null), by name, with their options."""
    return {name: tracker_options(name, value) for name, value in section.items() if value is not None}


def check_loggers(section: dict[str, Any]) -> None:
    """Check the ``loggers:`` section and resolve it in place, as config.yaml shows it: every registered tracker
    by name, in the registry's order, null when off, else its options with the defaults filled in.

    An unknown tracker or option is refused with the closest valid name; each tracker on runs its own check (a
    tracker without its package installed is refused, naming the extra that installs it).
    """
    for name in section:
        if name not in TRACKERS:
            raise unknown_key("loggers.", str(name), TRACKERS)
    resolved = {}
    for name in TRACKERS:
        value = section.get(name)
        resolved[name] = None if value is None else tracker_options(name, value)
        if value is not None:
            TRACKERS.check(name, resolved[name])
    section.clear()
    section.update(resolved)


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
    for name, options in trackers_on(config.loggers).items():
        tracker = TRACKERS.pick(name)
        destination, where = tracker.build(options, run, config.run_name, resolved)
        destinations.append(destination)
        trackers[tracker.title] = where
    return RunLoggers(destinations, trackers)
