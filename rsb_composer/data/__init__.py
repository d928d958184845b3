"""Datasets, transforms and loaders; ``build_loaders`` (training) and ``build_eval_loader`` are the entry points."""

from rsb_composer.data.loaders import Loaders, build_eval_loader, build_loaders, check_data

__all__ = ["Loaders", "build_eval_loader", "build_loaders", "check_data"]
