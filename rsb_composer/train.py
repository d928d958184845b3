"""Train a ResNet with Composer from a recipe YAML.

    composer -n 4 rsb_composer/train.py yamls/a2.yaml data.path=/fsx/imagenet
    python rsb_composer/train.py yamls/quickstart.yaml          # one process

Rerunning the same command resumes the run from ``run_dir/checkpoints``. This is the launcher-facing script
(arguments, exit statuses); the trainer is assembled in :mod:`rsb_composer.trainer`, which tools and tests import.
Exit status: 0 trained (or already complete), 1 training stopped itself (diverged, too many unreadable images),
2 a bad recipe, override or launch environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

# Run as a script, Python puts this file's folder first on sys.path, where rsb_composer's modules (data,
# config, ...) would shadow top-level packages of the same name. Everything is imported absolutely instead.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)


def __getattr__(name: str) -> Any:
    """``rsb_composer.train.build_trainer`` (the Python API) without importing Composer when the script starts."""
    if name == "build_trainer":
        from rsb_composer.trainer import build_trainer

        return build_trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a ResNet with Composer from a recipe YAML (see README.md and docs/).",
    )
    parser.add_argument("config", help="recipe YAML, e.g. yamls/a2.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.lr=0.1 algorithms.mixup=null")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rsb_composer.config import ConfigError
    from rsb_composer.launch import LaunchError, check_integers

    try:  # Composer reads the rank variables as integers when it is imported: a bad one is a one-line error here
        check_integers(os.environ)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rsb_composer import trainer

    try:
        config, built = trainer.prepare(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        trainer.fit(config, built)
    except trainer.RUN_FAILURES as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
