"""Shared fixtures: tiny recipes on a tiny toy set, so end-to-end runs take seconds on a CPU."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "rsb_composer" / "train.py"

# One toy set for the whole suite (shared through the toy_dir fixture): 4 classes, 16 + 6 images each, 40 px.
TINY_TOY = "{num_classes: 4, train_per_class: 16, val_per_class: 6, image_size: 40}"

TINY_RECIPE = """\
max_duration: 2ep
precision: amp_fp16
progress_bar: false
seed: 3
model:
  arch: resnet18
data:
  source: toy
  path: {toy_dir}
  toy: {toy}
  train_resolution: 32
  eval_resolution: 32
  batch_size: 8
  num_workers: 0
optimizer:
  lr: 0.2
scheduler:
  warmup_epochs: 1
algorithms:
  channels_last: {{}}
  label_smoothing: {{smoothing: 0.1}}
  mixup: {{alpha: 0.2}}
  cutmix: {{alpha: 1.0}}
"""


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny toy set for the whole session (generated on first use by the trainer or ensure_toy_dataset)."""
    return tmp_path_factory.mktemp("toy") / "tiny"


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
    env = dict(os.environ)
    env.update({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env
