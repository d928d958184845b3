"""A tracker: every metric the run logs, one JSON object a line, in run_dir/metrics.jsonl (``loggers.jsonl: {}``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.loggers import LoggerDestination
from composer.utils import dist

from rsb_composer.config import OK, Config, PreflightCheck, check
from rsb_composer.loggers.trackers import TRACKERS, Tracker
from rsb_composer.run_folder import RunFolder


@dataclass
class JsonlOptions:
    file: str = "metrics.jsonl"  # in the run folder


class JsonlLogger(LoggerDestination):
    def __init__(self, path: Path):
        self.path = path

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if dist.get_global_rank() == 0:  # every rank logs the same figures
            with self.path.open("a") as out:
                out.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")


def build_jsonl(options: JsonlOptions, run: RunFolder, run_name: str,
                resolved: dict[str, Any]) -> tuple[JsonlLogger, str]:
    return JsonlLogger(run.root / options.file), str(run.root / options.file)


def check_jsonl(options: JsonlOptions) -> None:
    check(Path(options.file).name == options.file, "loggers.jsonl.file", options.file,
          "must be a file name in the run folder, without folders")


def preflight_jsonl(options: JsonlOptions | None, config: Config) -> PreflightCheck | None:
    if options is None:
        return None  # off: no line
    path = Path(config.run_dir) / options.file
    return PreflightCheck(OK, "JSON lines", f"appends to {path}" if path.exists() else f"writes {path}")


TRACKERS.add(
    "jsonl", Tracker("JSON lines", JsonlOptions, build_jsonl),
    doc="JSON lines (loggers.jsonl: {}): every metric key the run logs, with its step, as one JSON object a line "
        "in run_dir/metrics.jsonl, for scripts that read a run as it goes.",
    check=check_jsonl,
    preflight=preflight_jsonl,
)
