"""The lines a run starts with, in place of Composer's hyper-parameter dump: what runs, where, how big, and
where to watch it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Start:
    recipe: str  # the recipe file
    run_dir: Path
    resumed_from: Path | None  # the checkpoint autoresume loaded; None for a new run
    epoch: int  # where the run stands (the checkpoint's epoch and batch)
    batch: int
    max_duration: str
    world_size: int
    nodes: int
    device: str
    precision: str
    batching: str  # the batch geometry in words: global batch, per device, microbatches
    global_batch: int
    lr: float  # the LR the schedule peaks at, scaled to the global batch
    base_lr: float  # optimizer.lr, given at reference_batch
    reference_batch: int
    algorithms: dict[str, dict[str, Any] | None]  # the algorithms: section (null: off)
    trackers: dict[str, str]  # tracker title -> where it writes


def _algorithm(name: str, args: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})" if args else name


def startup_lines(start: Start) -> list[str]:
    if start.resumed_from is None:
        state = "new run"
    else:
        state = f"resuming from {start.resumed_from.name} (epoch {start.epoch}, batch {start.batch})"
    processes = f"{start.world_size} process{'es' if start.world_size > 1 else ''}"
    nodes = f" on {start.nodes} nodes" if start.nodes > 1 else ""
    on = [_algorithm(name, args) for name, args in start.algorithms.items() if args is not None]
    lines = [
        f"recipe {start.recipe} -> {start.run_dir}: {state}, to {start.max_duration}",
        f"world: {processes}{nodes}, {start.device}, {start.precision}",
        f"{start.batching}: LR {start.lr:.6g} = {start.base_lr:g} x {start.global_batch} / {start.reference_batch}",
        f"algorithms: {', '.join(on) or 'none'}",
        f"metrics: {start.run_dir / 'metrics.csv'}, {start.run_dir / 'plots'}, {start.run_dir / 'logs'}",
    ]
    lines += [f"{title}: {where}" for title, where in start.trackers.items()]
    return lines
