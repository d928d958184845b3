"""The pre-flight checklist, each line checked for real, in this process."""

import pytest
import torch

from rsb_composer.recipe import load_recipe
from rsb_composer.tools.preflight import checkpoint_bytes, run_preflight
from tests.helpers import free_port


def _preflight(*args, world_size=1, batches=3):
    out: list[str] = []
    code = run_preflight(str(args[0]), [str(a) for a in args[1:]], world_size=world_size, batches=batches,
                         out=out.append)
    lines = {line.split("]", 1)[1].split(":", 1)[0].strip(): line for line in out if line.startswith("[")}
    return code, lines, out[-1]


def test_preflight_passes_on_toy_data(write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines, summary = _preflight(write_recipe())
    assert code == 0, lines
    for title in ("configuration", "data readable", "train loader speed", "devices", "world size and LR", "W&B",
                  "MLflow", "disk for checkpoints", "time estimate"):
        assert title in lines and "[FAIL]" not in lines[title]
    assert "train 64 images, val 24 images, 4 classes" in lines["data readable"]
    assert "images/s per process" in lines["train loader speed"]
    assert "global batch 8" in lines["world size and LR"]
    warnings = 0 if torch.cuda.is_available() else 1  # without a GPU, the devices line warns
    assert lines["devices"].startswith("[  !!]" if warnings else "[  ok]")
    assert summary == f"preflight: ready (0 failing, {warnings} warnings)"


@pytest.mark.parametrize(
    ("override", "title", "message"),
    [
        ("data.path={missing}", "data readable", "no 'train' folder"),
        ("data.batch_size=0", "configuration", "data.batch_size=0: must be at least 1"),
        ("data.batch_size=4096", "data readable", "share of the train split"),
    ],
)
def test_preflight_fails_with_the_line_that_says_what_to_fix(write_recipe, tmp_path, monkeypatch, override,
                                                             title, message):
    monkeypatch.chdir(tmp_path)
    overrides = ["data.source=imagefolder", override.format(missing=tmp_path / "nowhere")]
    if "missing" not in override:
        overrides = [override]
    code, lines, summary = _preflight(write_recipe(), *overrides, batches=2)
    assert code == 1
    assert lines[title].startswith("[FAIL]") and message in lines[title]
    assert summary.startswith("preflight: NOT READY")


def test_the_checkpoint_estimate_counts_each_optimizers_state_from_its_registry_entry(write_recipe):
    import torchvision

    params = sum(p.numel() for p in torchvision.models.resnet18(num_classes=4).parameters())
    config = load_recipe(write_recipe())
    for name, tensors in (("sgd", 1), ("lion", 1), ("adamw", 2), ("lamb", 2)):
        config.optimizer.name = name
        assert checkpoint_bytes(config, 4) == params * 4 * (1 + tensors)


def test_preflight_says_where_mlflow_will_log(write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()  # nothing listens there
    code, lines, _ = _preflight(write_recipe(), f"loggers.mlflow.tracking_uri=http://127.0.0.1:{port}")
    assert code == 0  # a warning, not a failure: the run would go on with a local store
    assert lines["MLflow"].startswith("[  !!]") and f"127.0.0.1:{port} is unreachable" in lines["MLflow"]
    assert "the run will log to runs/tiny/mlruns instead" in lines["MLflow"]
