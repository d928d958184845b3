"""Headless plots of a run: ``plots/curves.png`` (loss, acc1, acc5 by epoch, redrawn at each epoch end)
and ``plots/lr.png`` (the LR by step, from ``plots/lr.csv``, which records it as the run goes)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from rsb_composer.run_folder import read_rows

POINTS_PER_EPOCH = 100  # LR samples kept per epoch: the curve's shape without millions of rows


class RunPlots(LoggerDestination):
    def __init__(self, plots_dir: str | Path, metrics_csv: str | Path):
        self.plots_dir = Path(plots_dir)
        self.metrics_csv = Path(metrics_csv)
        self.lr_csv = self.plots_dir / "lr.csv"
        self.stride = 1
        self.pending: list[tuple[int, float]] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        steps = int(state.dataloader_len) if state.dataloader_len is not None else POINTS_PER_EPOCH
        self.stride = max(1, steps // POINTS_PER_EPOCH)
        if dist.get_global_rank() == 0:
            # On resume, forget LR samples past the checkpoint (those steps run again).
            done = int(state.timestamp.batch)
            kept = [row for row in self._lr_rows() if row[0] < done]
            self._write_lr(kept, mode="w")

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if "train/lr" in metrics and step is not None and step % self.stride == 0:
            self.pending.append((int(step), float(metrics["train/lr"])))

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self._flush_and_draw()

    def fit_end(self, state: State, logger: Logger) -> None:
        self._flush_and_draw()

    def _flush_and_draw(self) -> None:
        if dist.get_global_rank() != 0:
            self.pending = []  # only rank 0 writes; the others must not accumulate forever
            return
        self._write_lr(self.pending, mode="a")
        self.pending = []
        draw_lr(self._lr_rows(), self.plots_dir / "lr.png")
        draw_curves(read_rows(self.metrics_csv), self.plots_dir / "curves.png")

    def _lr_rows(self) -> list[tuple[int, float]]:
        if not self.lr_csv.is_file():
            return []
        with open(self.lr_csv, newline="") as handle:
            return [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(handle)]

    def _write_lr(self, rows: list[tuple[int, float]], mode: str) -> None:
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        new = mode == "w" or not self.lr_csv.exists()
        with open(self.lr_csv, "w" if new else "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "lr"])
            writer.writerows(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a training node
    import matplotlib.pyplot as plt

    return plt


def draw_lr(rows: list[tuple[int, float]], path: Path) -> None:
    if not rows:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r[0] for r in rows], [r[1] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("train/lr")
    ax.grid(alpha=0.3)
    _save(fig, plt, path)


def draw_curves(rows: list[dict[str, str]], path: Path) -> None:
    if not rows:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric in zip(axes, ("loss", "acc1", "acc5"), strict=True):
        for split, style in (("train", "-"), ("val", "o-")):
            points = [(float(r["epoch"]), float(r[f"{split}/{metric}"])) for r in rows if r.get(f"{split}/{metric}")]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=f"{split}/{metric}", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # a viewer refreshing the file never sees half a PNG
