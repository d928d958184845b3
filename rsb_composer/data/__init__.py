"""Datasets, transforms and loaders; ``build_loaders`` (training), ``build_eval_loader`` and ``build_eval_split``
(evaluation) are the entry points."""

from rsb_composer.data.loaders import EvalSplit, Loaders, build_eval_loader, build_eval_split, build_loaders, check_data

__all__ = ["EvalSplit", "Loaders", "build_eval_loader", "build_eval_split", "build_loaders", "check_data"]
