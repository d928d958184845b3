"""Resuming a run: after SIGKILL at any moment, across launchers, from damaged checkpoint folders, and held to
what its checkpoint fixes."""

import logging
import os
import signal
import subprocess
import zipfile

import pytest
import torch
import yaml

from rsb_composer import train
from rsb_composer.checkpoints.resume import LATEST, repair_latest, resumed_run_settings
from rsb_composer.run_folder import RunFolder
from tests.helpers import (
    COMPOSER,
    RUN,
    SMALL_TOY,
    TRAIN_PY,
    finish,
    free_port,
    launch_composer,
    metrics_table,
    same_weights,
    wait_for,
)

# The uninterrupted references (tests/conftest.py) read their data without workers; the interrupted runs here with
# 1 and 2 workers per rank: each sample's augmentation comes from its own random stream, so the worker count and
# the resume point change nothing.


def _kill_after(process, run_dir, checkpoint, timeout=240):
    """SIGKILL the launch (all its processes) once ``checkpoint`` is complete: Composer points latest at it."""
    latest = run_dir / "checkpoints" / LATEST
    wait_for(lambda: latest.is_symlink() and os.readlink(latest) == checkpoint, timeout, f"latest -> {checkpoint}",
             process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers, repeats", [(1, 0), (2, 0), (2, 3)])
def test_sigkill_mid_epoch_then_same_command_matches_an_uninterrupted_run(request, tmp_path, workers, repeats):
    recipe, ref_dir, env = request.getfixturevalue("repeated_reference" if repeats else "reference")
    run_dir = tmp_path / "run"
    extra = [f"data.num_workers={workers}", f"data.repeated_augmentation={repeats}"]
    process = launch_composer(recipe, run_dir, env, tmp_path, extra, start_new_session=True)
    _kill_after(process, run_dir, "ep1-ba6-rank0.pt")  # mid-way through epoch 2
    assert not (run_dir / "checkpoints" / "ep2-ba12-rank0.pt").exists()

    finish(launch_composer(recipe, run_dir, env, tmp_path, extra))
    log = (run_dir / "logs" / "train_rank1.log").read_text()
    assert "resuming epoch 2 at batch 2: the train sampler starts at sample 16 of this rank's order" in log
    same_weights(run_dir, ref_dir)
    assert metrics_table(run_dir) == metrics_table(ref_dir)  # every epoch once, with identical figures


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
        finish(node)
    same_weights(run_dir, ref_dir)
    assert metrics_table(run_dir) == metrics_table(ref_dir)


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
    common = [str(write_recipe()), f"run_dir={tmp_path / 'run'}", "scheduler.warmup_epochs=0",
              f"data.path={tmp_path / 'toy'}", f"data.toy={SMALL_TOY}"]  # epochs of 2 steps
    assert train.main([*common, "max_duration=1ep"]) == 0
    assert train.main([*common, "max_duration=2ep", "data.batch_size=4"]) == 2
    assert "trained with a global batch of 8, now 4" in capsys.readouterr().err


# Composer (core/state.py): the last resume here turns mixup off, so the run's algorithm is CutMix where the
# checkpoint holds MixUpOrCutMix; neither keeps state of its own (their draws use numpy's global generator, which
# Composer checkpoints with the run).
@pytest.mark.filterwarnings("ignore:CutMix is not in the state_dict:UserWarning:composer.core.state")
def test_a_resume_refuses_what_its_checkpoint_cannot_carry_and_keeps_the_runs_optimizer(write_recipe, tmp_path,
                                                                                        capsys):
    """What the checkpoint is bound to is refused: adding BlurPool or another class count would crash on load,
    SAM or another optimizer class would drop the optimizer's state. A changed LR or weight decay would silently
    not apply (the checkpoint restores the optimizer's groups): the run's values are kept, with a warning."""
    run_dir = tmp_path / "run"
    common = [str(write_recipe()), f"run_dir={run_dir}", "scheduler.warmup_epochs=0", f"data.path={tmp_path / 'toy'}",
              f"data.toy={SMALL_TOY}"]  # epochs of 2 steps: what is refused does not depend on the epoch's length
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


def test_autoresume_refuses_a_checkpoint_that_would_run_code_unless_trusted(write_recipe, tmp_path, capsys):
    """Whoever can write into the run folder's checkpoints/ (shared storage) must not run code in the next
    restart: the checkpoint autoresume would load is read as data only, and anything else is refused."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    run_dir = tmp_path / "run"
    args = [str(write_recipe()), f"run_dir={run_dir}", "max_duration=2ba", "checkpoints.save_interval=1ba",
            "checkpoints.keep_top_k=0"]
    assert train.main(args) == 0
    target = (run_dir / "checkpoints" / LATEST).resolve()
    planted = torch.load(target, map_location="cpu", weights_only=False)  # our own file: a full load is fine
    planted["extra"] = Payload()
    torch.save(planted, target)
    capsys.readouterr()

    assert train.main([*args, "max_duration=3ba"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {target}: refusing to unpickle posix.mkdir (it could run code); if you trust where "
                       "the file comes from, set checkpoints.trust=true")
    assert not marker.exists()

    assert train.main([*args, "max_duration=3ba", "checkpoints.trust=true"]) == 0  # knowingly accepted: it runs
    assert marker.is_dir()
    assert (run_dir / "checkpoints" / LATEST).resolve().name == "ep0-ba3-rank0.pt"  # and it trained on


# Composer's cautions about resuming these algorithms (SAM, SWA, layer freezing), which this test resumes on purpose:
# what it checks is that their state reads back as data only. The last line is Composer's SAM as well: the
# checkpoint holds its SAMOptimizer, which it wraps around the SGD only after loading, so the SGD's own state is
# not found there.
@pytest.mark.filterwarnings("ignore:SAM has known issues:UserWarning:composer.algorithms.sam",
                            "ignore:SWA has known issues:UserWarning:composer.algorithms.swa",
                            "ignore:Checkpoints with layer freezing:UserWarning:composer.algorithms.layer_freezing",
                            "ignore:SGD is not in the state_dict:UserWarning:composer.core.state")
def test_a_checkpoint_holding_every_stateful_algorithms_state_resumes_as_data_only(write_recipe, tmp_path):
    """The allow-list covers what the algorithms put into a checkpoint (EMA's and SWA's averaged models, SAM's
    wrapped optimizer, progressive resizing, layer freezing, selective backprop): such a run resumes."""
    run_dir = tmp_path / "run"
    args = [str(write_recipe()), f"run_dir={run_dir}", "max_duration=2ba", "checkpoints.save_interval=1ba",
            "checkpoints.keep_top_k=0", "algorithms.ema={half_life: 1ba, update_interval: 1ba, ema_start: 0.0dur}",
            "algorithms.swa={swa_start: 0.0dur, swa_end: 0.99dur, anneal_steps: 1}", "algorithms.sam={rho: 0.05}",
            "algorithms.progressive_resizing={}", "algorithms.layer_freezing={freeze_start: 0.0}",
            "algorithms.selective_backprop={start: 0.0, end: 1.0}"]
    assert train.main(args) == 0
    assert train.main([*args, "max_duration=3ba"]) == 0
    assert (run_dir / "checkpoints" / LATEST).resolve().name == "ep0-ba3-rank0.pt"
