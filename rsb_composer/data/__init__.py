"""Datasets, transforms and loaders; ``build_loaders(config)`` is the entry point."""

from rsb_composer.data.loaders import Loaders, build_loaders

__all__ = ["Loaders", "build_loaders"]
