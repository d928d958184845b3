"""The ``rsb-composer`` command: ``train``, ``show-config``, ``lr-schedule``, ``eval``, ``export``, ``preflight``,
``convert-mds``, ``doctor``, and the benchmarks and checks of :mod:`rsb_composer.tools.commands`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rsb_composer.config import Config, ConfigError
from rsb_composer.tools.commands import add_benchmark_commands, recipe_from_args


def _recipe(args: argparse.Namespace, check_paths: bool = True) -> Config:
    return recipe_from_args(args, check_paths)


def _show_config(args: argparse.Namespace) -> int:
    from rsb_composer.data.batching import batch_geometry
    from rsb_composer.optim import scaled_lr

    config = _recipe(args, check_paths=False)
    out = config.to_dict()
    geometry = batch_geometry(config.data, args.world_size)
    out["derived"] = {**geometry.derived(), "scaled_lr": scaled_lr(config.optimizer, geometry.global_batch)}
    print(json.dumps(out, indent=2))
    return 0


def _lr_schedule(args: argparse.Namespace) -> int:
    from rsb_composer.tools.lr_schedule import lr_schedule_report

    config = _recipe(args, check_paths=False)
    return lr_schedule_report(config, args.world_size, args.steps_per_epoch, as_csv=args.csv, png=args.png)


def _eval(args: argparse.Namespace) -> int:
    from rsb_composer.tools.evaluate import evaluate, parse_resolutions, print_report

    resolutions = parse_resolutions(args.resolutions) if args.resolutions else None
    config = _recipe(args)
    result, notice = evaluate(config, args.checkpoint, trust=args.trust_checkpoint, resolutions=resolutions,
                              split_dir=args.split_dir, real_labels=args.real_labels, tta=args.tta)
    print_report(result, notice, as_json=args.json)
    return 0


def _export(args: argparse.Namespace) -> int:
    from rsb_composer.checkpoints.export import FORMATS, export_checkpoint
    from rsb_composer.recipe import recipe_of_checkpoint

    recipe = recipe_of_checkpoint(args.checkpoint, args.config) if FORMATS.pick(args.format).needs_recipe else None
    network, how = export_checkpoint(args.checkpoint, args.out, args.format, arch=args.arch, use_ema=not args.no_ema,
                                     trust=args.trust_checkpoint, recipe=recipe)
    if network.folded:
        print(f"note: {args.checkpoint} was {network.folded}")
    weights = "EMA weights" if network.is_ema else "weights"
    print(f"wrote {args.out} ({args.format}): {network.arch} {weights}, {network.num_classes} classes; load with "
          f"{how}")
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


def _doctor(args: argparse.Namespace) -> int:
    from rsb_composer.tools.doctor import doctor, read_stack

    return doctor(read_stack(), as_json=args.json)


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
    p = with_config("show-config", "print the resolved configuration as JSON, with the batch split and scaled LR")
    p.add_argument("--world-size", type=int, default=1, help="number of devices (GPUs) in all (default 1)")
    p.set_defaults(func=_show_config)
    p = with_config("lr-schedule", "the LR at the start of every epoch, and the per-step curve, without training")
    p.add_argument("--world-size", type=int, default=1, help="number of devices (GPUs) in all (default 1)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimizer steps per epoch (default: from the data's size, or ImageNet-1k's)")
    p.add_argument("--csv", action="store_true", help="print CSV (epoch,lr) instead of a table")
    p.add_argument("--png", default=None, help="also draw the per-step LR curve into this PNG file")
    p.set_defaults(func=_lr_schedule)

    p = sub.add_parser("eval", help="evaluate a checkpoint: val split or another folder, ReaL labels, test "
                                     "resolutions, flip TTA (EMA weights when it has them)")
    p.add_argument("config", help="the recipe the checkpoint was trained with (its algorithms shape the network)")
    p.add_argument("checkpoint", help="a Composer checkpoint (.pt / .ckpt)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/fsx/imagenet")
    p.add_argument("--real-labels", default=None, metavar="FILE",
                   help="ImageNet-ReaL's real.json: also report real/acc1 (images without valid labels left out)")
    p.add_argument("--split-dir", default=None, metavar="DIR",
                   help="evaluate this folder instead of the val split (class folders named by class or by class "
                        "index, as ImageNet-V2's 0..999)")
    p.add_argument("--resolutions", default=None, metavar="R1,R2,...",
                   help="test resolutions, one row each (default: data.eval_resolution; data.crop_pct kept)")
    p.add_argument("--tta", default="none", metavar="hflip",
                   help="test-time augmentation: hflip averages the logits of each image and its mirror")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the table goes to stderr)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a checkpoint that needs more than tensors and Composer's plain types (runs its code)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="write a checkpoint's network for torchvision, safetensors, or timm and the "
                                       "Hugging Face Hub")
    p.add_argument("checkpoint", help="a Composer checkpoint (.pt / .ckpt)")
    p.add_argument("out", help="output file (torch: resnet50.pth, safetensors: resnet50.safetensors) or folder (timm)")
    p.add_argument("--format", default="torch", metavar="torch|safetensors|timm",
                   help="torch: torchvision state_dict (torch.save); safetensors: the same tensors, no pickle; timm: "
                        "a folder with model.safetensors, config.json and README.md (default: torch)")
    p.add_argument("--config", default=None, metavar="RECIPE",
                   help="timm: the recipe it was trained with, for config.json's resolution, crop and interpolation "
                        "(default: the run folder's config.yaml, two levels above the checkpoint)")
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

    p = sub.add_parser("doctor", help="the Python, torch, CUDA, Composer and GPUs here: inside the tested range? "
                                       "known-bad combinations named with their fix (exit 1 when one is found)")
    p.add_argument("--json", action="store_true", help="print the stack and the findings as one JSON object")
    p.set_defaults(func=_doctor)

    add_benchmark_commands(sub, with_config)
    return parser


def _check_one_process(command: str) -> None:
    """Every command but ``train`` runs in one process; a launcher's environment would make Composer shard its
    data (an evaluation of 1/8 of val inside an 8-pod job), so it is refused."""
    if command == "train":
        return  # the trainer reads the launch itself
    from rsb_composer.launch import detect

    launch = detect(os.environ)
    if launch.world_size > 1:
        raise ConfigError(f"rsb-composer {command} runs in one process, but this environment describes a "
                          f"{launch.launcher} launch of world size {launch.world_size} (WORLD_SIZE, RANK, ...): run "
                          "it outside the launcher, or unset those variables")


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
        _check_one_process(args.command)
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
