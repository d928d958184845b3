"""The ``rsb-composer`` benchmark and check subcommands: ``bench-data``, ``bench-index``, ``bench-memory``,
``bench-resume``, ``bench-resume-load``, ``bench-syncs``, ``bench-train`` and ``gpu-check``, each a thin front to its
tool module here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from rsb_composer.config import Config, ConfigError


def recipe_from_args(args: argparse.Namespace, check_paths: bool = True) -> Config:
    """The command's recipe and overrides, loaded and checked (imported here: ``--help`` needs no torch)."""
    from rsb_composer.recipe import load_recipe

    return load_recipe(args.config, args.overrides, check_paths=check_paths)


def _bench_train(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_train import bench_train

    config = recipe_from_args(args, check_paths=False)
    result = bench_train(config, steps=args.steps, warmup=args.warmup, repeats=args.repeats)
    lines = [f"trainer (callbacks and algorithms on): {result['images_per_sec']:,.1f} images/s",
             f"plain PyTorch loop, same model/batch:  {result['plain_images_per_sec']:,.1f} images/s",
             f"ratio: {result['ratio']:.3f}"]
    if "peak_memory_gib" in result:
        lines.append(f"peak GPU memory: {result['peak_memory_gib']:.1f} GiB")
    return report(result, args.json, lines)


def _bench_resume_load(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_resume_load import bench_resume_load

    config = recipe_from_args(args, check_paths=False)
    result = bench_resume_load(config, repeats=args.repeats)
    lines = [f"checkpoint of {config.model.arch} ({args.config}): {result['checkpoint_mib']:,.1f} MiB",
             f"full unpickling (Composer 0.32.1): {result['full_unpickling_s']:.3f} s",
             f"as data only (autoresume here):    {result['data_only_s']:.3f} s",
             f"added by reading as data only:     {result['added_s']:+.3f} s (medians of {args.repeats})"]
    return report(result, args.json, lines)


def report(result: dict[str, float], as_json: bool, lines: list[str]) -> int:
    """A benchmark's figures: one JSON object, or the lines for people."""
    print(json.dumps(result) if as_json else "\n".join(lines))
    return 0


def _bench_data(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_data import bench_data

    config = recipe_from_args(args)
    try:
        result = bench_data(config, batches=args.batches, reference=args.reference)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    lines = [f"configured train loader (data.pipeline={config.data.pipeline}): {result['images_per_sec']:,.1f} "
             "images/s"]
    if args.reference:
        lines += [f"reference (data.pipeline=reference: ImageFolder + timm create_transform): "
                  f"{result['reference_images_per_sec']:,.1f} images/s; ratio {result['ratio']:.2f}",
                  f"CPU time per image, one process: {result['ms_per_image']:.2f} ms, reference "
                  f"{result['reference_ms_per_image']:.2f} ms; ratio "
                  f"{result['reference_ms_per_image'] / result['ms_per_image']:.2f}"]
    return report(result, args.json, lines)


def _bench_index(args: argparse.Namespace) -> int:
    import os

    from rsb_composer.tools.bench_index import bench_index

    if args.drop_caches and os.geteuid() != 0:
        raise ConfigError("--drop-caches empties the kernel's file caches and needs root; run without it")
    result = bench_index(Path(args.root), args.files, drop_caches=args.drop_caches)
    return report(result, args.json, [
        f"{result['files']:,} files in {result['classes']:,} classes; index {result['index_mib']:.1f} MiB",
        f"torchvision listing:          {result['torchvision_listing_s']:.3f} s",
        f"first start (list, keep):     {result['first_start_s']:.3f} s",
        f"later starts (check, load):   {result['later_start_s']:.3f} s  ({result['speedup']:.1f}x faster)"])


def _bench_memory(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_memory import bench_memory

    r = bench_memory(Path(args.root), args.files, workers=args.workers, batch_size=args.batch_size)
    return report(r, args.json, [
        f"{r['files']:,} files, {r['workers']} workers, batch {r['batch_size']}: one epoch in {r['epoch_s']:.0f} s",
        "worker private memory (MiB) after the first batch: " + ", ".join(f"{m:.1f}" for m in
                                                                   r["worker_private_mib_first_batch"]),
        "                         at the end of the epoch: " + ", ".join(f"{m:.1f}" for m in
                                                                   r["worker_private_mib_epoch_end"]),
        f"largest growth over the epoch: {r['worker_growth_mib']:.1f} MiB"])


def _bench_resume(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_resume import bench_resume

    try:
        points = [float(p) for p in args.points.split(",")]
    except ValueError:
        raise ConfigError(f"--points={args.points!r}: expected fractions of an epoch, e.g. 0.1,0.5,0.9") from None
    result = bench_resume(recipe_from_args(args), points, replay=args.replay)
    how = "Composer's replay" if args.replay else "sampler starts at the checkpoint"
    lines = [f"{result['steps_per_epoch']} batches per epoch; resume ({how}) to the end of the first batch:"]
    lines += [f"  at {p['fraction']:.0%} (batch {p['batch_in_epoch']}): {p['seconds_to_first_batch']:.2f} s"
              for p in result["points"]]
    return report(result, args.json, lines)


def _bench_syncs(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_syncs import bench_syncs

    r = bench_syncs(recipe_from_args(args, check_paths=False), steps=args.steps, warmup=args.warmup)
    lines = [f"{r['steps']} steps: {r['reads_between_forward_and_backward_per_step']:.2f} tensor reads per step "
             f"between forward and backward {r['reads'] or ''}"]
    if "cuda_syncs_per_step" in r:
        lines.append(f"CUDA synchronisations per step: {r['cuda_syncs_per_step']:.2f} in all, "
                     f"{r['cuda_syncs_between_forward_and_backward_per_step']:.2f} between forward and backward")
        lines += [f"  {count:4d}  {site}" for site, count in r["cuda_sync_sites"].items()]
    return report(r, args.json, lines)


def _gpu_check(args: argparse.Namespace) -> int:
    from rsb_composer.tools.gpu_check import ROWS, gpu_check

    rows = args.rows.split(",") if args.rows else None
    unknown = sorted(set(rows or ()) - set(ROWS))
    if unknown:
        raise ConfigError(f"--rows: unknown {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    result = gpu_check(Path(args.out), budget_s=args.budget_s, rows=rows)
    print((Path(args.out) / "gpu_check.md").read_text(), end="")
    failed = [name for name, row in result["rows"].items() if "error" in row]
    print(f"wrote {Path(args.out) / 'gpu_check.json'} and gpu_check.md" + (f"; failed: {', '.join(failed)}"
                                                                            if failed else ""))
    return 1 if failed else 0


def add_benchmark_commands(sub: argparse._SubParsersAction,
                           with_config: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register the subcommands on the ``rsb-composer`` parser's ``sub``; ``with_config`` adds one that takes a
    recipe and overrides."""
    p = with_config("bench-data", "images/s of the configured train loader (and of the reference pipeline)")
    p.add_argument("--batches", type=int, default=50, help="timed batches (default 50)")
    p.add_argument("--reference", action="store_true", help="also time torchvision ImageFolder + timm transforms")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_data)

    p = sub.add_parser("bench-index", help="ImageFolder start-up: torchvision's listing vs the kept index")
    p.add_argument("root", help="folder with train/ (an ImageNet tree), or where to generate one")
    p.add_argument("--files", type=int, default=100_000, help="files to generate if root/train is absent")
    p.add_argument("--drop-caches", action="store_true",
                   help="empty the kernel's file caches before each timing (root only): cold, as a network mount")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_index)

    p = sub.add_parser("bench-memory", help="a DataLoader worker's private memory over one epoch of an ImageFolder")
    p.add_argument("root", help="folder with train/ and val/ (an ImageNet tree), or where to generate one")
    p.add_argument("--files", type=int, default=500_000, help="tiny JPEGs to generate if root/train is absent")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--batch-size", type=int, default=500, help="batch size (default 500)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_memory)

    p = with_config("bench-resume", "seconds from a mid-epoch resume's start to its first trained batch")
    p.add_argument("--points", default="0.1,0.5,0.9", help="where in the epoch to resume (default 0.1,0.5,0.9)")
    p.add_argument("--replay", action="store_true",
                   help="drop the data position from the checkpoint: Composer replays the epoch (for comparison)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_resume)

    p = with_config("bench-syncs", "tensor reads and (on a GPU) device synchronisations per training step")
    p.add_argument("--steps", type=int, default=8, help="counted steps (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="steps before counting (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_syncs)

    p = sub.add_parser("gpu-check", help="measure what needs a GPU (the CPU subset without one) in one call")
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md (default gpu_check)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for all rows, dry runs included (default 480 with a GPU, 900 on the CPU); a row "
                        "that would run past it is skipped")
    p.add_argument("--rows", default=None, help="only these rows, comma-separated (default all): bench_train_eager, "
                                                "bench_data, toy_resume, syncs, bench_train_deterministic, "
                                                "bench_train_compiled")
    p.set_defaults(func=_gpu_check)

    p = with_config("bench-train", "images/s of the real trainer vs a plain PyTorch loop, on synthetic data")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each (default 20)")
    p.add_argument("--warmup", type=int, default=3,
                   help="warm-up (default 3): the trainer's first W steps alone (peak memory), then W more while "
                        "the plain loop warms up; none timed")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of the trainer, each with its paired plain steps, pooled (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_train)

    p = with_config("bench-resume-load", "seconds to load the recipe's checkpoint as data only vs fully unpickled")
    p.add_argument("--repeats", type=int, default=5, help="loads of each kind, alternating (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_resume_load)
