"""``model.init_from``: a 5-class run started from a 10-class run's network, from each kind of file, as a fresh
run; another architecture refused; ignored once the run has its own checkpoint."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from rsb_composer import cli, train
from rsb_composer.recipe import load_recipe
from rsb_composer.trainer import build_trainer

# Small enough for an epoch of 2 steps (10 classes) or 1 step (5 classes) at the tiny recipe's batch of 8.
TOY10 = "{num_classes: 10, train_per_class: 2, val_per_class: 2, image_size: 40}"
TOY5 = "{num_classes: 5, train_per_class: 2, val_per_class: 2, image_size: 40}"


@pytest.fixture(scope="module")
def ten_class_run(tmp_path_factory):
    """A 10-class run of one epoch: its top-k checkpoint, its export (.pth) and the same as safetensors."""
    from tests.helpers import TINY_RECIPE

    root = tmp_path_factory.mktemp("ten")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.format(toy_dir=root / "toy10", toy=TOY10))
    run_dir = root / "run"
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=1ep", "checkpoints.keep_top_k=1"]) == 0
    top_k = next((run_dir / "checkpoints").glob("epoch=*.ckpt"))
    exported = root / "resnet18_10.pth"
    assert cli.main(["export", str(top_k), str(exported)]) == 0
    weights = torch.load(exported, weights_only=True)
    save_file(weights, root / "resnet18_10.safetensors")
    return {"top-k checkpoint": top_k, "Composer checkpoint": run_dir / "checkpoints" / "latest-rank0.pt",
            "export": exported, "safetensors": root / "resnet18_10.safetensors", "weights": weights}


def _five_class(write_recipe, tmp_path, source, *extra):
    return [str(write_recipe()), f"run_dir={tmp_path / 'five'}", f"data.path={tmp_path / 'toy5'}",
            f"data.toy={TOY5}", f"model.init_from={source}", *extra]


@pytest.mark.parametrize("kind", ["top-k checkpoint", "Composer checkpoint", "export", "safetensors"])
def test_a_five_class_run_starts_from_a_ten_class_runs_network(kind, ten_class_run, write_recipe, tmp_path, caplog):
    source, weights = ten_class_run[kind], ten_class_run["weights"]
    recipe, *overrides = _five_class(write_recipe, tmp_path, source)
    config = load_recipe(recipe, overrides)
    with caplog.at_level(logging.INFO):
        trainer = build_trainer(config)
    network = trainer.state.model.module.state_dict()
    for key, value in weights.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(network[key], value, rtol=0, atol=0, msg=key)
    assert network["fc.weight"].shape == (5, 512)  # a fresh head for 5 classes
    assert int(trainer.state.timestamp.batch) == 0  # a new run, not a resume
    trainer.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model.init_from")]
    assert f"model.init_from: {source} has 10 classes, this run 5: the classifier head (fc) starts from a fresh " \
           "initialisation" in lines
    assert any("the optimizer, LR schedule and step count start afresh" in line for line in lines)


@pytest.mark.parametrize("kind", ["export", "top-k checkpoint"])
def test_the_warm_started_run_trains_and_its_resume_ignores_init_from(kind, ten_class_run, write_recipe, tmp_path,
                                                                     caplog):
    args = _five_class(write_recipe, tmp_path, ten_class_run[kind], "max_duration=1ep")
    assert train.main(args) == 0
    with caplog.at_level(logging.WARNING):
        assert train.main([*args, "max_duration=2ep"]) == 0
    assert any(r.getMessage().startswith(f"model.init_from={ten_class_run[kind]} ignored: this run resumes from "
                                         "its own checkpoint") for r in caplog.records)


def test_another_architecture_is_refused_naming_both(ten_class_run, write_recipe, tmp_path, capsys):
    args = _five_class(write_recipe, tmp_path, ten_class_run["export"], "model.arch=resnet34")
    assert train.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "its network is resnet18 (10 classes), this recipe trains model.arch=resnet34" in errors[0]


def test_a_file_that_would_run_code_or_is_missing_is_refused(write_recipe, tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, evil)
    for source, message in ((evil, "refusing to unpickle print (it could run code)"),
                            (tmp_path / "missing.pth", "model.init_from: checkpoint not found")):
        assert train.main(_five_class(write_recipe, tmp_path, source)) == 2
        out = capsys.readouterr()
        assert message in out.err and "ran" not in out.out
