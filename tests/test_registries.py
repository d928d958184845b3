"""Every choice a recipe can make is one registry entry (:class:`rsb_composer.config.Choices`) that carries its
documentation and its own check: this walks every registry of the package and fails on an entry without them."""

from __future__ import annotations

import importlib
import json
import pkgutil
import random
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import callbacks
import rsb_composer
from rsb_composer.config import Choices, ConfigError, import_submodules, nothing_to_check
from tests.helpers import REPO

# Registries whose entries still lack a doc or a check, by their config key: each owner empties this as their
# entries get both (strict: an entry list that passes makes the test say so, so the name comes off the list).
NOT_YET_COMPLETE: set[str] = set()

EXAMPLES = REPO / "tests" / "registry_examples"  # docs/development.md's worked examples
SCRIPTS = {"rsb_composer.train"}  # the launcher's script: run, not imported


def every_registry() -> dict[str, Choices]:
    """Each module-level Choices of rsb_composer and callbacks, by its config key (every module imported)."""
    found: dict[str, Choices] = {}
    for package in (rsb_composer, callbacks):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name in SCRIPTS:
                continue
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, Choices):
                    assert found.get(value.key, value) is value, f"two registries for {value.key}"
                    found[value.key] = value
    return found


REGISTRIES = every_registry()


def test_the_walk_finds_the_registries_of_every_kind_of_choice():
    assert {"loggers", "data.augmentations", "evaluation metric", "optimizer.name", "loss.name", "--format",
            "launcher"} <= set(REGISTRIES)


@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.xfail(strict=True, reason="entries without doc/check (NOT_YET_COMPLETE)"))
    if key in NOT_YET_COMPLETE else key for key in sorted(REGISTRIES)])
def test_every_entry_has_its_doc_and_its_check(key):
    registry = REGISTRIES[key]
    assert registry, f"{key}: an empty registry"
    assert registry.incomplete() == {}, f"{key}: entries without their doc or check"
    for name in registry:
        assert "\n\n" not in registry.doc(name), f"{key}: {name}'s doc is more than one paragraph"


def test_the_walker_fails_an_entry_without_a_doc_or_a_check():
    registry: Choices[int] = Choices("demo.name")
    registry.add("documented", 1, doc="A documented choice.", check=nothing_to_check)
    registry.add("bare", 2)
    registry.add("unchecked", 3, doc="Documented, but nothing checks its options.")

    def entry() -> None:
        """A function's docstring is its doc."""

    registry.add("function", entry, check=nothing_to_check)
    assert registry.incomplete() == {"bare": ["doc", "check"], "unchecked": ["check"]}
    assert registry.doc("function") == "A function's docstring is its doc."
    with pytest.raises(ConfigError, match=r"^demo.name='documentd': must be one of .*did you mean 'documented'\?$"):
        registry.pick("documentd")


def test_import_submodules_imports_each_module_of_a_package_first_ones_first(tmp_path, monkeypatch):
    """The registration by file presence the trackers, augmentations and metrics packages use."""
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("beta", "alpha", "gamma"):
        (package / f"{name}.py").write_text(f"from tests.test_registries import ORDER\nORDER.append({name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ORDER.clear()
    try:
        modules = import_submodules(importlib.import_module("plugins"), first=("gamma",))
        assert [m.__name__ for m in modules] == ["plugins.gamma", "plugins.alpha", "plugins.beta"]
        assert ORDER == ["gamma", "alpha", "beta"]
    finally:
        for name in [n for n in sys.modules if n == "plugins" or n.startswith("plugins.")]:
            del sys.modules[name]


ORDER: list[str] = []


@pytest.mark.parametrize("package", ["rsb_composer.loggers", "rsb_composer.data.augmentations",
                                     "rsb_composer.eval_metrics"])
def test_importing_a_choice_package_imports_every_module_in_it(package):
    module = importlib.import_module(package)
    names = {f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)}
    assert names and names <= set(sys.modules)


# --- the worked examples of docs/development.md: a tracker, an augmentation, an evaluation metric, each one module

@pytest.fixture
def registered():
    """Import an example module (it registers its entry) and take the entry out again after the test."""
    added: list[tuple[str, Choices, str]] = []

    def register(module: str, registry: Choices, name: str):
        added.append((f"tests.registry_examples.{module}", registry, name))
        return importlib.import_module(added[-1][0])

    yield register
    for module, registry, name in added:
        registry.remove(name)
        sys.modules.pop(module, None)


def test_a_tracker_in_one_module_is_read_checked_preflighted_and_built(registered, write_recipe, tmp_path,
                                                                        monkeypatch):
    from rsb_composer.loggers import TRACKERS, build_loggers
    from rsb_composer.recipe import load_recipe
    from rsb_composer.run_folder import RunFolder
    from rsb_composer.tools.preflight import run_preflight

    example = registered("jsonl_tracker", TRACKERS, "jsonl")
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    config = load_recipe(recipe, ["loggers.jsonl={}"])
    assert config.to_dict()["loggers"] == {"wandb": None, "tensorboard": None, "mlflow": None,
                                           "jsonl": {"file": "metrics.jsonl"}}
    for override, message in (
            ("loggers.jsonl.fil=a.jsonl", "unknown config key 'loggers.jsonl.fil'; did you mean 'loggers.jsonl.file'?"),
            ("loggers.jsonl.file=logs/a.jsonl", "loggers.jsonl.file='logs/a.jsonl': must be a file name in the run "
                                                "folder, without folders"),
            ("loggers.jsonll={}", "unknown config key 'loggers.jsonll'; did you mean 'loggers.jsonl'?")):
        with pytest.raises(ConfigError) as err:
            load_recipe(recipe, [override])
        assert str(err.value) == message

    lines: list[str] = []
    assert run_preflight(str(recipe), ["loggers.jsonl.file=steps.jsonl"], world_size=1, batches=2,
                         out=lines.append) == 0
    assert "[  ok] JSON lines: writes runs/tiny/steps.jsonl" in lines
    lines.clear()
    run_preflight(str(recipe), [], world_size=1, batches=2, out=lines.append)
    assert not any("JSON lines" in line for line in lines)  # off: the tracker has nothing to say

    run = RunFolder(tmp_path / "run")
    run.create()
    built = build_loggers(config, run, progress_bar=False)
    assert built.trackers == {"JSON lines": str(run.root / "metrics.jsonl")}
    (jsonl,) = [d for d in built.destinations if isinstance(d, example.JsonlLogger)]
    jsonl.log_metrics({"val/acc1": 0.5}, step=16)
    assert json.loads((run.root / "metrics.jsonl").read_text()) == {"step": 16, "val/acc1": 0.5}


def _grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def test_an_augmentation_in_one_module_is_read_checked_and_runs_in_both_pipelines(registered, write_recipe):
    from rsb_composer.data import build_loaders
    from rsb_composer.data.augmentations import AUGMENTATIONS
    from rsb_composer.data.normalization import IMAGENET_MEAN, IMAGENET_STD
    from rsb_composer.data.pipelines import PIPELINES
    from rsb_composer.recipe import load_recipe

    registered("random_grayscale", AUGMENTATIONS, "random_grayscale")
    recipe = write_recipe()
    config = load_recipe(recipe, ["data.augmentations.random_grayscale={}"])
    assert config.to_dict()["data"]["augmentations"] == {"random_grayscale": {"p": 0.1}}
    for override, message in (
            ("data.augmentations.random_greyscale={}", "unknown config key 'data.augmentations.random_greyscale'; "
                                                       "did you mean 'data.augmentations.random_grayscale'?"),
            ("data.augmentations.random_grayscale.p=1.5", "data.augmentations.random_grayscale.p=1.5: must be in "
                                                          "[0, 1]"),
            ("data.augmentations.random_grayscale.p=often", "data.augmentations.random_grayscale.p must be a "
                                                            "number, got 'often'")):
        with pytest.raises(ConfigError) as err:
            load_recipe(recipe, [override])
        assert str(err.value) == message

    photo = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    always = load_recipe(recipe, ["data.augmentations.random_grayscale.p=1", "data.auto_augment=rand-m9-mstd0.5"])
    never = load_recipe(recipe, ["data.augmentations.random_grayscale.p=0", "data.auto_augment=rand-m9-mstd0.5"])
    plain = load_recipe(recipe, ["data.auto_augment=rand-m9-mstd0.5"])
    fast = PIPELINES["fast"]
    assert "ArrayRandAugment" in repr(fast.train_transform(always.data)).split("RandomGrayscale")[0]  # RA first
    assert _grey(fast.train_transform(always.data)(photo).permute(1, 2, 0).numpy())
    outputs = []
    for cfg in (never, plain):  # p=0 changes no image (each seeded as its sample's stream seeds it)
        transform, images = fast.train_transform(cfg.data), []
        for seed in range(4):
            random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
            images.append(transform(photo))
        outputs.append(torch.stack(images))
    assert torch.equal(*outputs)
    reference = PIPELINES["reference"].train_transform(always.data)(Image.fromarray(photo))
    pixels = reference * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)

    loaders = build_loaders(always.data, always.seed, always.model.num_classes)  # the run's own loader
    images, _ = next(iter(loaders.train))
    assert all(_grey(image.permute(1, 2, 0).numpy()) for image in images)


def test_an_evaluation_metric_in_one_module_is_reported_by_eval_and_by_training(registered, write_recipe,
                                                                               tmp_path):
    from callbacks.metrics import ClassificationMetrics
    from rsb_composer.eval_metrics import EVAL_METRICS, val_keys
    from rsb_composer.model import build_model
    from rsb_composer.recipe import load_recipe
    from rsb_composer.tools.evaluate import evaluate

    example = registered("balanced_accuracy", EVAL_METRICS, "acc1_macro")
    assert val_keys() == ("val/loss", "val/acc1", "val/acc5", "val/acc1_macro")
    # Balanced accuracy is not accuracy: two images of class 0 right, the one image of class 1 wrong.
    unbalanced = example.build_balanced_accuracy(2)
    unbalanced.update(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 0, 1]))
    assert float(unbalanced.compute()) == pytest.approx(0.5)

    config = load_recipe(write_recipe())
    model = build_model(config.model, 4, config.loss)
    weights = tmp_path / "weights.pth"
    torch.save(model.module.state_dict(), weights)
    result, _ = evaluate(config, weights)
    (row,) = result.rows
    assert list(row) == ["resolution", "val/loss", "val/acc1", "val/acc5", "val/acc1_macro"]
    # The toy val split has as many images of each class: balanced accuracy is the accuracy.
    assert row["val/acc1_macro"] == pytest.approx(row["val/acc1"])

    # Training's evaluation logs every metric of the model's, this one included.
    metrics = model.get_metrics(is_train=False)
    for metric in metrics.values():
        metric.update(torch.tensor([[2.0, 1.0, 0.0, 0.0]] * 3), torch.tensor([0, 0, 1]))
    logged: dict[str, float] = {}
    state = SimpleNamespace(dataloader_label="eval", eval_metrics={"eval": metrics})
    ClassificationMetrics(4).eval_end(state, SimpleNamespace(log_metrics=logged.update))
    assert logged["val/acc1_macro"] == pytest.approx(0.5) and logged["val/acc1"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_a_run_uses_the_three_examples_end_to_end(registered, write_recipe, tmp_path, monkeypatch):
    """Registered from their own modules, they reach the real trainer: its config.yaml, its logger destinations,
    its evaluation, its data."""
    import yaml

    from rsb_composer import train
    from rsb_composer.data.augmentations import AUGMENTATIONS
    from rsb_composer.eval_metrics import EVAL_METRICS
    from rsb_composer.loggers import TRACKERS

    registered("jsonl_tracker", TRACKERS, "jsonl")
    registered("random_grayscale", AUGMENTATIONS, "random_grayscale")
    registered("balanced_accuracy", EVAL_METRICS, "acc1_macro")
    monkeypatch.chdir(tmp_path)
    assert train.main([str(write_recipe()), "max_duration=1ep", "loggers.jsonl={}",
                       "data.augmentations.random_grayscale.p=0.5"]) == 0
    run = tmp_path / "runs" / "tiny"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["loggers"]["jsonl"] == {"file": "metrics.jsonl"}
    assert saved["data"]["augmentations"] == {"random_grayscale": {"p": 0.5}}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [entry for entry in logged if "val/acc1" in entry]
    assert evaluation["step"] == 8 and 0 <= evaluation["val/acc1_macro"] <= 1
    assert evaluation["val/acc1_macro"] == pytest.approx(evaluation["val/acc1"], abs=1e-6)  # balanced toy val
    assert any("train/loss" in entry for entry in logged)


@pytest.mark.parametrize(("heading", "module"), [
    ("A tracker", "jsonl_tracker"), ("An augmentation", "random_grayscale"),
    ("An evaluation metric", "balanced_accuracy")])
def test_the_docs_show_each_worked_example_as_tested_here(heading, module):
    page = (REPO / "docs" / "development.md").read_text()
    section = page.split(f"\n### {heading}\n", 1)[1].split("\n#", 1)[0]
    assert re.findall(r"```python\n(.*?)```", section, re.S) == [(EXAMPLES / f"{module}.py").read_text()]
