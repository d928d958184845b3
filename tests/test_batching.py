"""The global batch kept on any number of devices: the split and its refusals, two microbatches stepping like one
batch, and a resume on another number of devices (allowed at an epoch end, refused mid-epoch)."""

import csv
import json
import re
from types import SimpleNamespace

import pytest
import torch

from callbacks.metrics import ClassificationMetrics
from rsb_composer import cli, train
from rsb_composer.checkpoints.resume import check_resume_geometry
from rsb_composer.config import ConfigError
from rsb_composer.recipe import load_recipe
from rsb_composer.trainer import build_trainer
from tests.helpers import COMPOSER, REPO, TRAIN_PY, free_port, run, subprocess_env

A2 = REPO / "yamls" / "a2.yaml"


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_show_config_keeps_the_papers_batch_and_lr_on_any_world_size(world, capsys):
    assert cli.main(["show-config", str(A2), "--world-size", str(world)]) == 0
    derived = json.loads(capsys.readouterr().out)["derived"]
    assert derived["world_size"] == world
    assert derived["global_batch_size"] == 2048 and derived["scaled_lr"] == pytest.approx(0.005)
    assert derived["per_device_batch_size"] == 2048 // world and derived["microbatch_size"] == 256
    assert derived["microbatches_per_step"] == 8 // world and derived["eval_batch_size"] == 256


def test_a_per_device_batch_still_scales_the_lr_with_the_world_size(capsys):
    """a2_sgd keeps the deployment notes' 256 per GPU and their rule: LR 0.5 x global / 256."""
    assert cli.main(["show-config", str(REPO / "yamls" / "a2_sgd.yaml"), "--world-size", "4"]) == 0
    derived = json.loads(capsys.readouterr().out)["derived"]
    assert (derived["global_batch_size"], derived["per_device_batch_size"], derived["microbatches_per_step"]) == (
        1024, 256, 1)
    assert derived["scaled_lr"] == pytest.approx(2.0)


@pytest.mark.parametrize("args, message", [
    (["--world-size", "3"], "data.global_batch_size=2048 cannot be split over 3 devices (2048 / 3"),
    (["data.microbatch_size=96", "--world-size", "4"],
     "data.microbatch_size=96 does not divide the per-device batch of 512 (data.global_batch_size=2048 / 4 devices); "
     "use a divisor of 512, e.g. 64, 32, 16"),
    (["data.batch_size=128"], "data.batch_size=128 and data.global_batch_size=2048 are both set"),
    (["data.microbatch_size=many"], "data.microbatch_size='many': must be a number of images"),
    (["data.global_batch_size=0"], "data.global_batch_size=0: must be at least 1"),
])
def test_indivisible_or_conflicting_batches_are_refused_in_one_line(args, message, capsys):
    assert cli.main(["show-config", str(A2), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_microbatch_auto_is_refused_on_the_cpu(write_recipe, tmp_path, capsys):
    assert train.main([str(write_recipe()), f"run_dir={tmp_path / 'run'}", "data.microbatch_size=auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line for line in err if line.startswith("error:")] and len(err) == 1
    assert "data.microbatch_size=auto: Composer's out-of-memory back-off needs GPUs" in err[0]


def _schedule(name, world, capsys):
    assert cli.main(["lr-schedule", str(REPO / "yamls" / f"{name}.yaml"), "--world-size", str(world)]) == 0
    out = capsys.readouterr()
    steps = int(re.search(r"(\d+) steps per epoch", out.err).group(1))
    return steps, out.out


@pytest.mark.parametrize("name", ["a1", "a3"])
def test_the_same_global_batch_gives_the_same_steps_per_epoch_and_lr_on_1_to_8_devices(name, capsys):
    steps, lrs = _schedule(name, 1, capsys)
    assert steps == 1_281_167 // 2048  # ImageNet-1k's train split (timm's repeated-augmentation sampler for A1)
    for world in (2, 4, 8):
        assert _schedule(name, world, capsys) == (steps, lrs)


def _no_batch_statistics(module: torch.nn.Module) -> None:
    """Make every BatchNorm the identity (its parameters stay, unused): BatchNorm normalises each microbatch on its
    own, so only a network without batch statistics computes the same gradient in microbatches as in one batch."""
    for child in module.modules():
        if isinstance(child, torch.nn.BatchNorm2d):
            child.forward = lambda x: x


def _one_step(recipe, run_dir, *extra):
    config = load_recipe(recipe, [f"run_dir={run_dir}", "max_duration=1ba", "precision=fp32", "data.batch_size=null",
                                  "data.global_batch_size=32", "algorithms.mixup=null", "algorithms.cutmix=null",
                                  "optimizer.name=lamb", "optimizer.lr=0.01", *extra])
    trainer = build_trainer(config)
    _no_batch_statistics(trainer.state.model.module)
    start = trainer.state.model.module.conv1.weight.detach().clone()
    trainer.fit()
    metrics = next(c for c in trainer.state.callbacks if isinstance(c, ClassificationMetrics))
    weights = {k: v.detach().clone() for k, v in trainer.state.model.module.state_dict().items()}
    assert not torch.equal(weights["conv1.weight"], start)  # the step moved the weights
    result = (weights, float(trainer.state.total_loss_dict["loss/train/total"]), metrics.images,
              metrics.counts.tolist(), trainer.state.device_train_microbatch_size)
    trainer.close()
    return result


def test_two_microbatches_of_16_step_like_one_batch_of_32(write_recipe, tmp_path):
    """Same data, same start, one LAMB step (its global gradient-norm clip sees the summed gradient); label
    smoothing acts per microbatch, the train metrics count both microbatches."""
    recipe = write_recipe()
    whole = _one_step(recipe, tmp_path / "whole")
    split = _one_step(recipe, tmp_path / "split", "data.microbatch_size=16")
    assert (whole[4], split[4]) == (32, 16)
    for key, value in whole[0].items():
        torch.testing.assert_close(split[0][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert split[1] == pytest.approx(whole[1], rel=1e-5)
    assert split[2] == whole[2] == 32 and split[3] == whole[3]


def _trainer_at(batch: int, sample: int, in_epoch: int, epoch: int, saved_by: int | None):
    timestamp = SimpleNamespace(batch=batch, sample=sample, batch_in_epoch=in_epoch, epoch=epoch)
    return SimpleNamespace(state=SimpleNamespace(timestamp=timestamp),
                           _rng_state=None if saved_by is None else [{}] * saved_by)


def test_a_resume_on_another_number_of_devices_needs_an_epoch_end_checkpoint():
    # 2 epochs of 4 steps of 16 images, saved by 1 device; resumed on 2 with the same global batch: allowed.
    check_resume_geometry(_trainer_at(8, 128, 0, 2, saved_by=1), global_batch=16, world_size=2)
    check_resume_geometry(_trainer_at(6, 96, 2, 1, saved_by=2), global_batch=16, world_size=2)  # same devices
    with pytest.raises(ConfigError) as refused:
        check_resume_geometry(_trainer_at(6, 96, 2, 1, saved_by=1), global_batch=16, world_size=2)
    message = str(refused.value)
    assert "saved by 1 devices in the middle of epoch 1 (after its batch 2), now 2 devices" in message
    assert "Resume on 1 devices until the epoch ends" in message and "last epoch-end checkpoint" in message
    with pytest.raises(ConfigError, match="trained with a global batch of 16, now 32"):
        check_resume_geometry(_trainer_at(8, 128, 0, 2, saved_by=1), global_batch=32, world_size=2)


def _composer(n, recipe, run_dir, *extra):
    return run([*COMPOSER, "-n", str(n), "--master_port", str(free_port()), TRAIN_PY, recipe, f"run_dir={run_dir}",
                "data.batch_size=null", "data.global_batch_size=16", "checkpoints.keep_top_k=0",
                "checkpoints.keep_last=-1", *extra], env=subprocess_env(), timeout=600)


def _steps(run_dir):
    """(epoch, step) of each Composer checkpoint, and the LR of every step (plots/lr.csv)."""
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("ep*-ba*-rank0.pt"))
    with open(run_dir / "plots" / "lr.csv") as f:
        lrs = [(row[0], round(float(row[-1]), 12)) for row in list(csv.reader(f))[1:]]
    return names, lrs


@pytest.mark.slow
def test_one_and_two_processes_train_the_same_schedule_and_a_run_moves_from_one_to_two(write_recipe, tmp_path):
    """64 images, global batch 16: 4 steps per epoch and the same LR at every step on 1 and 2 processes; a run
    stopped at the end of epoch 1 on one process continues on two."""
    recipe = write_recipe()
    _composer(1, recipe, tmp_path / "one", "max_duration=2ep")
    _composer(2, recipe, tmp_path / "two", "max_duration=2ep")
    _composer(1, recipe, tmp_path / "moved", "max_duration=1ep")
    moved = _composer(2, recipe, tmp_path / "moved", "max_duration=2ep")
    said = moved.stdout + moved.stderr
    assert "resuming at the end of epoch 1 on 2 devices (saved by 1): global batch 16 kept" in said
    one = _steps(tmp_path / "one")
    assert one[0] == ["ep1-ba4-rank0.pt", "ep2-ba8-rank0.pt"]
    assert _steps(tmp_path / "two") == one
    assert _steps(tmp_path / "moved") == one


def test_mixup_or_cutmix_chooses_and_mixes_within_each_microbatch(write_recipe, tmp_path):
    """Composer runs the forward events once per microbatch with state.batch set to it: each microbatch gets one
    choice (kept from its BEFORE_FORWARD to its BEFORE_LOSS) and mixes its own images and labels."""
    from composer.core import Event

    from rsb_composer.algorithms import MixUpOrCutMix

    config = load_recipe(write_recipe(), [f"run_dir={tmp_path / 'run'}", "max_duration=1ba", "data.batch_size=null",
                                          "data.global_batch_size=8", "data.microbatch_size=4"])
    trainer = build_trainer(config)
    mixing = next(a for a in trainer.state.algorithms if isinstance(a, MixUpOrCutMix))
    seen = []
    original = mixing.apply

    def spy(event, state, logger):
        original(event, state, logger)
        seen.append((event, mixing.active, len(state.batch[0])))

    mixing.apply = spy
    trainer.fit()
    trainer.close()
    events = [(event, size) for event, _, size in seen if event in (Event.BEFORE_FORWARD, Event.BEFORE_LOSS)]
    assert events == [(Event.BEFORE_FORWARD, 4), (Event.BEFORE_LOSS, 4)] * 2
    chosen = [active for event, active, _ in seen if event in (Event.BEFORE_FORWARD, Event.BEFORE_LOSS)]
    assert chosen[0] is chosen[1] and chosen[2] is chosen[3]


def test_microbatch_auto_goes_to_composer_on_a_gpu(write_recipe, tmp_path, monkeypatch):
    """No GPU here: the device is reported as one and Composer's Trainer replaced by a recorder, to check that
    `auto` reaches Composer's device_train_microbatch_size (its out-of-memory back-off) with the per-device batch."""
    class Recorded(Exception):
        pass

    def recorder(**kwargs):
        raise Recorded(kwargs)

    monkeypatch.setattr("rsb_composer.trainer.resolve_device", lambda: "gpu")
    monkeypatch.setattr("rsb_composer.trainer.check_devices", lambda launch, gpus: None)  # no GPU to count here
    # one process: nothing to join
    monkeypatch.setattr("rsb_composer.trainer.init_distributed", lambda launch, device, timeout: None)
    monkeypatch.setattr("rsb_composer.trainer.Trainer", recorder)
    config = load_recipe(write_recipe(), [f"run_dir={tmp_path / 'run'}", "data.batch_size=null",
                                          "data.global_batch_size=16", "data.microbatch_size=auto"])
    with pytest.raises(Recorded) as recorded:
        build_trainer(config)
    kwargs = recorded.value.args[0]
    assert kwargs["device_train_microbatch_size"] == "auto" and kwargs["device"] == "gpu"
    assert kwargs["train_dataloader"].dataloader.batch_size == 16
