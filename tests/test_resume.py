"""Resuming a run: after SIGKILL at any moment, across launchers, from damaged checkpoint folders, and held to
what its checkpoint fixes."""

import logging
import os
import signal
import subprocess
import time
import zipfile

import pytest
import torch
import yaml

from rsb_composer import train
from rsb_composer.checkpoints.resume import LATEST, repair_latest, resumed_run_settings
from rsb_composer.run_folder import RunFolder
from tests.helpers import COMPOSER, TRAIN_PY, free_port, same_weights, subprocess_env, tiny_recipe

# 4 classes x 16 images / batch 8 = 8 steps per epoch on one process, 4 per rank on two; checkpoints every
# 2 batches, so a kill lands mid-epoch. The uninterrupted reference reads its data without workers; the interrupted
# runs with 1 and 2 workers per rank: each sample's augmentation comes from its own random stream, so the worker
# count and the resume point change nothing.
RUN = ["max_duration=3ep", "scheduler.warmup_epochs=0", "checkpoints.save_interval=2ba", "checkpoints.keep_last=3",
       "checkpoints.keep_top_k=0"]


def _launch(recipe, run_dir, env, cwd, extra=(), **popen):
    args = [*COMPOSER, "-n", "2", "--master_port", str(free_port()), str(TRAIN_PY)]
    return subprocess.Popen([*args, str(recipe), *RUN, f"run_dir={run_dir}", *extra], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(process, timeout=300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def _table(run_dir):
    return (run_dir / "metrics.csv").read_text()


def _reference(tmp_path_factory, toy_dir, extra=()):
    root = tmp_path_factory.mktemp("reference")
    recipe = root / "tiny.yaml"
    recipe.write_text(tiny_recipe(toy_dir))
    env = subprocess_env()
    _finish(_launch(recipe, root / "run", env, root, extra))
    return recipe, root / "run", env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_dir):
    """One uninterrupted `composer -n 2` run that the interrupted ones must reproduce."""
    return _reference(tmp_path_factory, toy_dir)


@pytest.fixture(scope="module")
def repeated_reference(tmp_path_factory, toy_dir):
    """The same with timm's repeated-augmentation sampler (3 copies of each image, on different ranks)."""
    return _reference(tmp_path_factory, toy_dir, ["data.repeated_augmentation=3"])


def _kill_after(process, run_dir, checkpoint, timeout=240):
    """SIGKILL the launch (all its processes) once ``checkpoint`` is complete: Composer points latest at it."""
    latest = run_dir / "checkpoints" / LATEST
    deadline = time.time() + timeout
    while not (latest.is_symlink() and os.readlink(latest) == checkpoint):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers, repeats", [(1, 0), (2, 0), (2, 3)])
def test_sigkill_mid_epoch_then_same_command_matches_an_uninterrupted_run(request, tmp_path, workers, repeats):
    recipe, ref_dir, env = request.getfixturevalue("repeated_reference" if repeats else "reference")
    run_dir = tmp_path / "run"
    extra = [f"data.num_workers={workers}", f"data.repeated_augmentation={repeats}"]
    process = _launch(recipe, run_dir, env, tmp_path, extra, start_new_session=True)
    _kill_after(process, run_dir, "ep1-ba6-rank0.pt")  # mid-way through epoch 2
    assert not (run_dir / "checkpoints" / "ep2-ba12-rank0.pt").exists()

    _finish(_launch(recipe, run_dir, env, tmp_path, extra))
    log = (run_dir / "logs" / "train_rank1.log").read_text()
    assert "resuming epoch 2 at batch 2: the train sampler starts at sample 16 of this rank's order" in log
    same_weights(run_dir, ref_dir)
    assert _table(run_dir) == _table(ref_dir)  # every epoch once, with identical figures


@pytest.mark.slow
def test_two_launchers_on_loopback_train_one_run_like_composer_n2(reference, tmp_path):
    recipe, ref_dir, env = reference
    run_dir = tmp_path / "run"
    port = str(free_port())
    nodes = [
        subprocess.Popen([*COMPOSER, "--world_size", "2", "--node_rank",
                          str(rank), "--master_addr", "127.0.0.1", "--master_port", port, "-n", "1", str(TRAIN_PY),
                          str(recipe), *RUN, f"run_dir={run_dir}"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    for node in nodes:
        _finish(node)
    same_weights(run_dir, ref_dir)
    assert _table(run_dir) == _table(ref_dir)


def _fake_checkpoint(path, value):
    torch.save({"state": {"model": {"w": torch.full((64,), float(value))}}}, path)


def test_truncated_or_missing_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for batch in (2, 4, 6):
        _fake_checkpoint(folder / f"ep0-ba{batch}-rank0.pt", batch)
    data = (folder / "ep0-ba6-rank0.pt").read_bytes()
    (folder / "ep0-ba6-rank0.pt").write_bytes(data[: len(data) // 2])  # killed while writing
    os.symlink("ep0-ba6-rank0.pt", folder / LATEST)
    with caplog.at_level(logging.WARNING):
        assert repair_latest(folder).name == "ep0-ba4-rank0.pt"
    assert os.readlink(folder / LATEST) == "ep0-ba4-rank0.pt"
    assert (folder / "ep0-ba6-rank0.pt.corrupt").exists() and not (folder / "ep0-ba6-rank0.pt").exists()
    assert "resuming from ep0-ba4-rank0.pt" in caplog.text

    # Killed between Composer's removal of the old symlink and the creation of the new one: no latest at all.
    (folder / LATEST).unlink()
    assert repair_latest(folder).name == "ep0-ba4-rank0.pt"
    # An intact latest is left alone.
    assert repair_latest(folder).name == "ep0-ba4-rank0.pt"
    with zipfile.ZipFile(folder / "ep0-ba4-rank0.pt") as archive:
        assert archive.testzip() is None


def test_a_start_is_a_resume_only_with_a_complete_checkpoint(tmp_path):
    """A first checkpoint cut short by a kill does not make the rerun a resume (repair_latest moves it aside and
    the run starts afresh), so the command's settings are not held to the old run's."""
    run = RunFolder(tmp_path / "run")
    run.create()
    run.config.write_text("optimizer: {lr: 0.2}\n")
    assert resumed_run_settings(run) is None  # no checkpoint yet
    _fake_checkpoint(run.checkpoints / "ep0-ba2-rank0.pt", 2)
    data = (run.checkpoints / "ep0-ba2-rank0.pt").read_bytes()
    (run.checkpoints / "ep0-ba2-rank0.pt").write_bytes(data[: len(data) // 2])
    assert resumed_run_settings(run) is None
    _fake_checkpoint(run.checkpoints / "ep0-ba1-rank0.pt", 1)
    assert resumed_run_settings(run) == {"optimizer": {"lr": 0.2}}


def test_resuming_with_another_global_batch_is_refused(write_recipe, tmp_path, capsys):
    common = [str(write_recipe()), f"run_dir={tmp_path / 'run'}", "scheduler.warmup_epochs=0"]
    assert train.main([*common, "max_duration=1ep"]) == 0
    assert train.main([*common, "max_duration=2ep", "data.batch_size=4"]) == 2
    assert "trained with a global batch of 8, now 4" in capsys.readouterr().err


def test_a_resume_refuses_what_its_checkpoint_cannot_carry_and_keeps_the_runs_optimizer(write_recipe, tmp_path,
                                                                                        capsys):
    """What the checkpoint is bound to is refused: adding BlurPool or another class count would crash on load,
    SAM or another optimizer class would drop the optimizer's state. A changed LR or weight decay would silently
    not apply (the checkpoint restores the optimizer's groups): the run's values are kept, with a warning."""
    run_dir = tmp_path / "run"
    common = [str(write_recipe()), f"run_dir={run_dir}", "scheduler.warmup_epochs=0"]
    assert train.main([*common, "max_duration=1ep"]) == 0
    refusals = (("optimizer.name=lamb", "optimizer.name=lamb: this run was trained with optimizer.name=sgd"),
                ("algorithms.blurpool={}", "algorithms.blurpool={}: this run has algorithms.blurpool=null"),
                ("algorithms.sam={rho: 0.1}", "algorithms.sam={rho: 0.1}: this run has algorithms.sam=null"),
                ("model.num_classes=6", "model.num_classes=6 (from the data or the command): this run's classifier "
                                        "has 4 classes"))
    for change, message in refusals:
        capsys.readouterr()
        assert train.main([*common, "max_duration=2ep", change]) == 2, change
        assert message in capsys.readouterr().err
    assert train.main([*common, "max_duration=2ep", "optimizer.lr=0.4", "optimizer.weight_decay=0.01",
                       "algorithms.mixup=null"]) == 0
    assert ("optimizer.lr=0.4 (this run: 0.2), optimizer.weight_decay=0.01 (this run: 0.0001) not applied"
            in capsys.readouterr().err)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.2 and saved["optimizer"]["weight_decay"] == 0.0001
    # The rest follows the command: the new max_duration, mixup off (it does not touch the network).
    assert saved["max_duration"] == "2ep" and saved["algorithms"]["mixup"] is None
