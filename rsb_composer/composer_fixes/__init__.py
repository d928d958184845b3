"""Every workaround of a third-party library's behaviour (Composer, torch, timm with Pillow): one module each, and
the registry that says when each one applies.

:data:`FIXES` names each workaround with the library whose version decides, the versions of it the workaround is
applied on (a PEP 440 specifier set, checked against the installed distribution's metadata), the upstream
behaviour it works around and what removes it. The entry points below apply a workaround only where the installed
version is in its range; the modules themselves do their job unconditionally (tests call them directly).
tests/test_composer_fixes.py checks, on the installed versions, that each upstream behaviour is still there: on
the first upgrade that fixes one it fails with "<name> can go: upstream fixed it in <library> <version>", and
with "widen applies_to" when a version outside the range still has it (docs/development.md, "Workarounds").

This module imports no third-party library at import time (``rsb-composer doctor`` lists the active workarounds
where torch or Composer may not import); each entry point imports its workaround's module when called.

Entry points and their callers:
- :func:`apply` (the trainer, before Composer runs): Composer's functions patched in place (``signal_files``,
  ``checkpoint_loading``, ``one_hot``); idempotent.
- :func:`restore_rng_on_dataset_resume` (the trainer, once Composer has loaded a checkpoint): ``rng_resume``.
- :func:`apply_timm` (the data pipelines, before they build a timm transform): ``timm_posterize``.
- :func:`prepare_compile` (``model.compile: true``, before anything is compiled): ``inductor_inplace_buffers``.
- :func:`cross_entropy` (``loss.name: cross_entropy``): ``soft_cross_entropy``.
- :class:`~rsb_composer.composer_fixes.wandb_download.LocalCheckpointWandBLogger` (rsb_composer.loggers.wandb_run):
  ``wandb_download``, which checks its range itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from composer import Trainer


@dataclass(frozen=True)
class Fix:
    name: str  # its module: rsb_composer/composer_fixes/{name}.py
    library: str  # the distribution whose installed version decides (pip's name, lower case)
    applies_to: str  # PEP 440 specifier set: the versions of ``library`` the workaround is applied on
    why: str  # the upstream behaviour it works around
    removed_when: str  # the upstream change that makes it unneeded

    def applies(self, versions: Mapping[str, str | None] | None = None) -> bool:
        """Whether the installed ``library`` (or ``versions[library]``, e.g. the doctor's stack) is in range.

        Pre-releases count (a vendor's 2.7.0a0 build is torch 2.7); a pre-release of the bound itself does not
        pass an exclusive ``<`` (2.8.0a0 is not ``<2.8``), as PEP 440 orders them.
        """
        version = installed_version(self.library) if versions is None else versions.get(self.library)
        if version is None:
            return False
        try:
            return SpecifierSet(self.applies_to).contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False


COMPOSER_NEXT = "<0.33"  # Composer 0.32.x, the series the project pins (0.32.1), and earlier

FIXES: tuple[Fix, ...] = (
    Fix("signal_files", "mosaicml", COMPOSER_NEXT,
        why="utils.dist.get_node_signal_file_name broadcasts rank 0's file name, node number included, to every "
            "node: nodes sharing the checkpoint folder create and delete one file, and the second deletion crashes "
            "the start",
        removed_when="Composer gives each node its own name (mosaicml/composer#2363, open; mosaicml/llm-foundry#1736)"),
    Fix("checkpoint_loading", "mosaicml", COMPOSER_NEXT,
        why="utils.checkpoint loads autoresume and load_path checkpoints with torch.load(weights_only=False): a file "
            "planted in the run folder runs code on every rank of the next start",
        removed_when="the pinned Composer includes mosaicml/composer#3937 (weights_only=True and an allow-list; "
                     "merged after 0.32.1)"),
    Fix("rng_resume", "mosaicml", COMPOSER_NEXT,
        why="Trainer._train_loop restores the checkpoint's random state on an epoch boundary or in the replay of a "
            "partial epoch, never when the train dataset resumes by itself (dataset resumption): mixup, cutmix and "
            "stochastic depth then draw differently from an uninterrupted run",
        removed_when="Composer restores the random state on the dataset-resumption path too"),
    Fix("one_hot", "mosaicml", COMPOSER_NEXT,
        why="loss.utils._one_hot (MixUp, CutMix, LabelSmoothing, BCE) reads tensor.max() and tensor.min() into "
            "Python: on a GPU a synchronisation between the forward and the backward pass of every step",
        removed_when="Composer's _one_hot stops reading its input (unchanged on Composer's main branch)"),
    Fix("soft_cross_entropy", "mosaicml", COMPOSER_NEXT,
        why="loss.soft_cross_entropy checks the soft targets' total probability in Python twice: on a GPU a "
            "synchronisation inside every step",
        removed_when="Composer's soft_cross_entropy stops reading the targets' total probability"),
    Fix("wandb_download", "mosaicml", COMPOSER_NEXT,
        why="autoresume asks WandBLogger for a remote 'latest' checkpoint before W&B is initialised: a fresh run "
            "with a W&B logger crashes ('get_file_artifact can only be called after running init()')",
        removed_when="Composer's WandBLogger answers FileNotFoundError there (mosaicml/composer#2680, open)"),
    Fix("inductor_inplace_buffers", "torch", "<2.8",
        why="Inductor lets a kernel write into a dead input buffer and fails compiling a ResNet's backward "
            "(InductorError: KeyError 'op7' in Scheduler.get_fused_node, pytorch/pytorch#151423)",
        removed_when="the pinned stack moves past torch 2.7 (pytorch/pytorch#151424 is in torch 2.8)"),
    Fix("timm_posterize", "pillow", ">=13",
        why="timm's PosterizeIncreasing (rand-m7-mstd0.5-inc1) asks ImageOps.posterize for 0 bits at magnitude 10; "
            "Pillow 13 raises on 0 bits where Pillow up to 12 returned a black image",
        removed_when="timm asks for at least 1 bit (or Pillow accepts 0 bits again)"),
)
BY_NAME: dict[str, Fix] = {fix.name: fix for fix in FIXES}


@functools.cache
def installed_version(library: str) -> str | None:
    """The installed distribution's version (its metadata: nothing is imported), None when it is not installed."""
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def applies(name: str) -> bool:
    return BY_NAME[name].applies()


def active(versions: Mapping[str, str | None] | None = None) -> list[Fix]:
    """The workarounds in range for the installed versions (or for ``versions``)."""
    return [fix for fix in FIXES if fix.applies(versions)]


def check_registry() -> None:
    """Every entry complete and its range parseable: raises ValueError naming the entry (the tests call it)."""
    for fix in FIXES:
        for field in ("library", "applies_to", "why", "removed_when"):
            if not getattr(fix, field).strip():
                raise ValueError(f"composer_fixes.FIXES[{fix.name!r}]: {field} is empty")
        try:
            SpecifierSet(fix.applies_to)
        except InvalidSpecifier:
            raise ValueError(f"composer_fixes.FIXES[{fix.name!r}]: applies_to={fix.applies_to!r} is not a PEP 440 "
                             "specifier set") from None


def apply(trust_checkpoints: bool = False) -> None:
    """Patch Composer's functions, each where the installed Composer is in its range; idempotent.

    ``trust_checkpoints`` (``checkpoints.trust``) lets Composer unpickle its checkpoints in full again.
    """
    from rsb_composer.composer_fixes import checkpoint_loading, one_hot, signal_files

    checkpoint_loading.trust(trust_checkpoints)
    for name, patch in (("signal_files", signal_files.apply), ("checkpoint_loading", checkpoint_loading.apply),
                        ("one_hot", one_hot.apply)):
        if applies(name):
            patch()


def restore_rng_on_dataset_resume(trainer: Trainer) -> None:
    """After the trainer has loaded a mid-epoch checkpoint whose train dataset resumes by itself, restore the
    checkpoint's random state before the first batch (``rng_resume``)."""
    if applies("rng_resume"):
        from rsb_composer.composer_fixes import rng_resume

        rng_resume.restore_rng_on_dataset_resume(trainer)


def apply_timm() -> None:
    """timm's RandAugment ops where the installed Pillow needs it (``timm_posterize``); idempotent."""
    if applies("timm_posterize"):
        from rsb_composer.composer_fixes import timm_posterize

        timm_posterize.apply()


def prepare_compile() -> None:
    """Inductor settings for ``model.compile: true``, before anything is compiled (``inductor_inplace_buffers``)."""
    if applies("inductor_inplace_buffers"):
        from rsb_composer.composer_fixes import inductor_inplace_buffers

        inductor_inplace_buffers.apply()


def cross_entropy() -> Callable[..., Any]:
    """Composer's soft cross-entropy: the copy without its reads of the targets where the installed Composer makes
    them (``soft_cross_entropy``), Composer's own otherwise."""
    if applies("soft_cross_entropy"):
        from rsb_composer.composer_fixes.soft_cross_entropy import soft_cross_entropy

        return soft_cross_entropy
    from composer.loss import soft_cross_entropy as composers

    return composers
