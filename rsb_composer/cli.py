"""The ``rsb-composer`` command: ``train``, ``show-config``, ``lr-schedule``, ``eval``, ``export``, ``preflight``,
``bench-data``, ``bench-index``, ``bench-memory``, ``bench-resume``, ``bench-train``, ``convert-mds``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rsb_composer.config import Config, ConfigError


def _recipe(args: argparse.Namespace, check_paths: bool = True) -> Config:
    """The command's recipe and overrides, loaded and checked (imported here: ``--help`` needs no torch)."""
    from rsb_composer.recipe import load_recipe

    return load_recipe(args.config, args.overrides, check_paths=check_paths)


def _show_config(args: argparse.Namespace) -> int:
    from rsb_composer.optim import scaled_lr

    config = _recipe(args, check_paths=False)
    out = config.to_dict()
    global_batch = config.data.batch_size * args.world_size
    out["derived"] = {
        "world_size": args.world_size,
        "global_batch_size": global_batch,
        "scaled_lr": scaled_lr(config.optimizer, global_batch),
    }
    print(json.dumps(out, indent=2))
    return 0


def _lr_schedule(args: argparse.Namespace) -> int:
    from rsb_composer.tools.lr_schedule import lr_schedule_report

    config = _recipe(args, check_paths=False)
    return lr_schedule_report(config, args.world_size, args.steps_per_epoch, as_csv=args.csv, png=args.png)


def _eval(args: argparse.Namespace) -> int:
    from rsb_composer.run_folder import format_metrics
    from rsb_composer.train import build_eval_trainer

    config = _recipe(args)
    trainer = build_eval_trainer(config, args.checkpoint, trust=args.trust_checkpoint)
    trainer.eval()
    metrics = {f"val/{name}": float(metric.compute()) for name, metric in trainer.state.eval_metrics["eval"].items()}
    trainer.close()
    print(format_metrics(metrics, digits=6))
    return 0


def _export(args: argparse.Namespace) -> int:
    from rsb_composer.checkpoints.export import export_checkpoint

    arch, num_classes, is_ema = export_checkpoint(args.checkpoint, args.out, arch=args.arch, use_ema=not args.no_ema,
                                                  trust=args.trust_checkpoint)
    weights = "EMA weights" if is_ema else "weights"
    print(f"wrote {args.out}: torchvision {arch} {weights}, {num_classes} classes; load with "
          f"torchvision.models.{arch}(num_classes={num_classes}).load_state_dict(torch.load({str(args.out)!r}, "
          f"weights_only=True))")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from rsb_composer.tools.preflight import run_preflight

    return run_preflight(args.config, args.overrides, world_size=args.world_size, batches=args.batches)


def _bench_train(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_train import bench_train

    config = _recipe(args, check_paths=False)
    result = bench_train(config, steps=args.steps, warmup=args.warmup, repeats=args.repeats)
    lines = [f"trainer (callbacks and algorithms on): {result['images_per_sec']:,.1f} images/s",
             f"plain PyTorch loop, same model/batch:  {result['plain_images_per_sec']:,.1f} images/s",
             f"ratio: {result['ratio']:.3f}"]
    if "peak_memory_gib" in result:
        lines.append(f"peak GPU memory: {result['peak_memory_gib']:.1f} GiB")
    return _report(result, args.json, lines)


def _report(result: dict[str, float], as_json: bool, lines: list[str]) -> int:
    """A benchmark's figures: one JSON object, or the lines for people."""
    print(json.dumps(result) if as_json else "\n".join(lines))
    return 0


def _bench_data(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_data import bench_data

    config = _recipe(args)
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
    return _report(result, args.json, lines)


def _bench_index(args: argparse.Namespace) -> int:
    import os

    from rsb_composer.tools.bench_index import bench_index

    if args.drop_caches and os.geteuid() != 0:
        raise ConfigError("--drop-caches empties the kernel's file caches and needs root; run without it")
    result = bench_index(Path(args.root), args.files, drop_caches=args.drop_caches)
    return _report(result, args.json, [
        f"{result['files']:,} files in {result['classes']:,} classes; index {result['index_mib']:.1f} MiB",
        f"torchvision listing:          {result['torchvision_listing_s']:.3f} s",
        f"first start (list, keep):     {result['first_start_s']:.3f} s",
        f"later starts (check, load):   {result['later_start_s']:.3f} s  ({result['speedup']:.1f}x faster)"])


def _bench_memory(args: argparse.Namespace) -> int:
    from rsb_composer.tools.bench_memory import bench_memory

    r = bench_memory(Path(args.root), args.files, workers=args.workers, batch_size=args.batch_size)
    return _report(r, args.json, [
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
    result = bench_resume(_recipe(args), points, replay=args.replay)
    how = "Composer's replay" if args.replay else "sampler starts at the checkpoint"
    lines = [f"{result['steps_per_epoch']} batches per epoch; resume ({how}) to the end of the first batch:"]
    lines += [f"  at {p['fraction']:.0%} (batch {p['batch_in_epoch']}): {p['seconds_to_first_batch']:.2f} s"
              for p in result["points"]]
    return _report(result, args.json, lines)


def _convert_mds(args: argparse.Namespace) -> int:
    from rsb_composer.data.streaming import convert_imagefolder

    root = Path(args.imagefolder_root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(f"{root}: no '{split}' folder (expected the ImageNet layout: train/<class>/*, "
                              "val/<class>/*)")
    written = convert_imagefolder(root, args.out_dir)
    print(f"wrote {written['train']} train and {written['val']} val images as MDS shards to {args.out_dir}; "
          f"train from them with data.source=streaming data.remote={args.out_dir} data.local=/tmp/mds-cache")
    return 0


def _train(args: argparse.Namespace) -> int:
    from rsb_composer.train import main as train_main

    return train_main([args.config, *args.overrides])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsb-composer", description="ResNet strikes back, on MosaicML Composer.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="recipe YAML, e.g. yamls/a2.yaml")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.lr=0.1")
        return p

    p = with_config("train", "train in this process (for several GPUs use: composer -n N rsb_composer/train.py)")
    p.set_defaults(func=_train)
    p = with_config("show-config", "print the resolved configuration as JSON, with global batch and scaled LR")
    p.add_argument("--world-size", type=int, default=1, help="number of devices (GPUs) in all (default 1)")
    p.set_defaults(func=_show_config)
    p = with_config("lr-schedule", "the LR at the start of every epoch, and the per-step curve, without training")
    p.add_argument("--world-size", type=int, default=1, help="number of devices (GPUs) in all (default 1)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimizer steps per epoch (default: from the data's size, or ImageNet-1k's)")
    p.add_argument("--csv", action="store_true", help="print CSV (epoch,lr) instead of a table")
    p.add_argument("--png", default=None, help="also draw the per-step LR curve into this PNG file")
    p.set_defaults(func=_lr_schedule)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the val split (EMA weights when it has them)")
    p.add_argument("config", help="the recipe the checkpoint was trained with (its algorithms shape the network)")
    p.add_argument("checkpoint", help="a Composer checkpoint (.pt / .ckpt)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/fsx/imagenet")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a checkpoint that needs more than tensors and Composer's plain types (runs its code)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="write a checkpoint's network as a plain torchvision state_dict")
    p.add_argument("checkpoint", help="a Composer checkpoint (.pt / .ckpt)")
    p.add_argument("out", help="output file, e.g. resnet50.pth")
    p.add_argument("--arch", default=None, help="torchvision architecture (default: found from the weights)")
    p.add_argument("--no-ema", action="store_true", help="export the training weights even if EMA weights exist")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a checkpoint that needs more than tensors and Composer's plain types (runs its code)")
    p.set_defaults(func=_export)

    p = with_config("preflight", "check, line by line, that a run is ready to launch")
    p.add_argument("--world-size", type=int, default=1, help="number of devices (GPUs) in all (default 1)")
    p.add_argument("--batches", type=int, default=10, help="train batches to time the loader over (default 10)")
    p.set_defaults(func=_preflight)

    p = sub.add_parser("convert-mds", help="write an ImageFolder tree as MosaicML streaming (MDS) shards")
    p.add_argument("imagefolder_root", help="folder holding train/ and val/ in the ImageNet layout")
    p.add_argument("out_dir", help="output folder (upload it to s3://... or gs://... to stream from there)")
    p.set_defaults(func=_convert_mds)

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

    p = with_config("bench-train", "images/s of the real trainer vs a plain PyTorch loop, on synthetic data")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each (default 20)")
    p.add_argument("--warmup", type=int, default=3,
                   help="warm-up (default 3): the trainer's first W steps alone (peak memory), then W more while the "
                        "plain loop warms up; none timed")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of the trainer, each with its paired plain steps, pooled (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "world_size", 1) < 1:
        print(f"error: --world-size={args.world_size}: must be at least 1", file=sys.stderr)
        return 2
    for name in ("batches", "steps", "files", "repeats", "workers", "batch_size"):
        if getattr(args, name, 1) < 1:
            print(f"error: --{name.replace('_', '-')}={getattr(args, name)}: must be at least 1", file=sys.stderr)
            return 2
    if getattr(args, "steps_per_epoch", None) is not None and args.steps_per_epoch < 1:
        print(f"error: --steps-per-epoch={args.steps_per_epoch}: must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
