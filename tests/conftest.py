"""Fixtures: tiny recipes on a tiny toy set, so end-to-end runs take seconds on a CPU (helpers: tests/helpers.py)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_RECIPE, TINY_TOY, finish, launch_composer, tiny_recipe
from tests.helpers import subprocess_env as make_env

# One thread per process, as the trainer's subprocesses get (helpers.subprocess_env): the CPUs are shared with
# other processes (data workers, launched ranks, other jobs), and a second thread then mostly waits for a core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny toy set for the whole session (generated on first use by the trainer or ensure_toy_dataset)."""
    return tmp_path_factory.mktemp("toy") / "tiny"


def _reference(tmp_path_factory: pytest.TempPathFactory, toy_dir: Path, extra: tuple[str, ...] = ()):
    root = tmp_path_factory.mktemp("reference")
    recipe = root / "tiny.yaml"
    recipe.write_text(tiny_recipe(toy_dir))
    env = make_env()
    finish(launch_composer(recipe, root / "run", env, root, extra))
    return recipe, root / "run", env


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, toy_dir: Path):
    """One uninterrupted `composer -n 2` run of the RUN settings (tests/helpers.py) that the interrupted ones and
    the other launchers must reproduce: (recipe, run folder, environment)."""
    return _reference(tmp_path_factory, toy_dir)


@pytest.fixture(scope="session")
def repeated_reference(tmp_path_factory: pytest.TempPathFactory, toy_dir: Path):
    """The same with timm's repeated-augmentation sampler (3 copies of each image, on different ranks)."""
    return _reference(tmp_path_factory, toy_dir, ("data.repeated_augmentation=3",))


@pytest.fixture
def write_recipe(tmp_path: Path, toy_dir: Path):
    """Write a YAML recipe into tmp_path (the tiny one by default) and return its path."""

    def write(text: str = TINY_RECIPE, name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).format(toy_dir=toy_dir, toy=TINY_TOY))
        return path

    return write


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for launching the trainer: no W&B network, few threads per process."""
    return make_env()


@pytest.fixture(autouse=True)
def _detach_run_logging():
    """A trainer built in this process points the root logger at its run folder and the test's captured stderr;
    take those handlers off again after each test, so no later test writes into a closed stream."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_rsb_composer", False):
            root.removeHandler(handler)
            handler.close()
