"""The ``rsb-composer`` command: ``train``, ``show-config``, ``lr-schedule``, ``eval``, ``export``, ``preflight``,
``convert-mds``, and the benchmarks and checks of :mod:`rsb_composer.tools.commands`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rsb_composer.config import Config, ConfigError
from rsb_composer.tools.commands import add_benchmark_commands, recipe_from_args


def _recipe(args: argparse.Namespace, check_paths: bool = True) -> Config:
    return recipe_from_args(args, check_paths)


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

    add_benchmark_commands(sub, with_config)
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
