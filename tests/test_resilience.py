"""Crashes, preemption, divergence and multi-node on loopback, with the real entry point on the CPU."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from rsb_composer.resume import LATEST, repair_latest
from tests.conftest import TRAIN_PY

# 4 classes x 16 images / batch 8 = 8 steps per epoch on one process, 4 per rank on two; checkpoints every
# 2 batches, so a kill lands mid-epoch. No workers: the order of random numbers is then fully restored.
RUN = ["max_duration=3ep", "scheduler.warmup_epochs=0", "checkpoints.save_interval=2ba", "checkpoints.keep_last=3",
       "checkpoints.keep_top_k=0"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(recipe, run_dir, env, cwd, extra=(), nproc=2, **popen):
    if nproc == 1:
        args = [sys.executable, str(TRAIN_PY)]
    else:
        args = [sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc), "--master_port", str(_port()),
                str(TRAIN_PY)]
    return subprocess.Popen([*args, str(recipe), *RUN, f"run_dir={run_dir}", *extra], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(process, timeout=300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / LATEST, map_location="cpu", weights_only=False)["state"]["model"]


def _table(run_dir):
    return (run_dir / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_dir):
    """One uninterrupted `composer -n 2` run that the interrupted ones must reproduce."""
    from tests.conftest import TINY_RECIPE, TINY_TOY

    root = tmp_path_factory.mktemp("reference")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.format(toy_dir=toy_dir, toy=TINY_TOY))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    _finish(_launch(recipe, root / "run", env, root))
    return recipe, root / "run", env


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def test_sigkill_mid_epoch_then_same_command_matches_an_uninterrupted_run(reference, tmp_path):
    recipe, ref_dir, env = reference
    run_dir = tmp_path / "run"
    process = _launch(recipe, run_dir, env, tmp_path, start_new_session=True)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "ep1-ba6-rank0.pt").exists():  # mid-way through epoch 2
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "checkpoints" / "ep2-ba12-rank0.pt").exists()

    _finish(_launch(recipe, run_dir, env, tmp_path))
    _same_weights(run_dir, ref_dir)
    assert _table(run_dir) == _table(ref_dir)  # every epoch once, with identical figures


def test_two_launchers_on_loopback_train_one_run_like_composer_n2(reference, tmp_path):
    recipe, ref_dir, env = reference
    run_dir = tmp_path / "run"
    port = str(_port())
    nodes = [
        subprocess.Popen([sys.executable, "-m", "composer.cli.launcher", "--world_size", "2", "--node_rank",
                          str(rank), "--master_addr", "127.0.0.1", "--master_port", port, "-n", "1", str(TRAIN_PY),
                          str(recipe), *RUN, f"run_dir={run_dir}"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    for node in nodes:
        _finish(node)
    _same_weights(run_dir, ref_dir)
    assert _table(run_dir) == _table(ref_dir)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    extra = ["checkpoints.save_interval=1ep"]
    process = _launch(recipe, run_dir, subprocess_env, tmp_path, extra=extra, nproc=1)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "ep1-ba8-rank0.pt").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    process.send_signal(signal.SIGTERM)
    out = _finish(process, timeout=120)
    assert "SIGTERM: saved" in out
    latest = (run_dir / "checkpoints" / LATEST).resolve()
    assert latest.name.startswith("ep1-ba") and latest.name != "ep1-ba8-rank0.pt"  # saved mid-epoch 2
    assert "epoch 3/3" not in out

    _finish(_launch(recipe, run_dir, subprocess_env, tmp_path, extra=extra, nproc=1))
    reference_dir = tmp_path / "reference"
    _finish(_launch(recipe, reference_dir, subprocess_env, tmp_path, extra=extra, nproc=1))
    _same_weights(run_dir, reference_dir)
    assert _table(run_dir) == _table(reference_dir)


def test_nan_loss_stops_with_the_step_and_keeps_the_good_checkpoint(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    # An absurd LR: step 1 still has a finite loss (and is checkpointed), step 2's loss is NaN.
    process = _launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1,
                      extra=["optimizer.lr=1e30", "checkpoints.save_interval=1ba"])
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 1
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "loss became nan at step 2" in error[0] and "ep0-ba1-rank0.pt" in error[0]
    assert "Traceback" not in out
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix in (".pt", ".ckpt"))
    assert names == ["ep0-ba1-rank0.pt", LATEST]  # nothing saved from the diverged step
    assert (run_dir / "checkpoints" / LATEST).resolve().name == "ep0-ba1-rank0.pt"


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
    from rsb_composer.resume import resumed_run_settings
    from rsb_composer.run_folder import RunFolder

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


def test_unreadable_images_are_skipped_and_counted_until_the_limit(toy_dir, write_recipe, tmp_path, subprocess_env):
    import shutil

    from rsb_composer.config import ToyConfig
    from rsb_composer.data.toy import ensure_toy_dataset

    data = tmp_path / "data"
    shutil.copytree(ensure_toy_dataset(ToyConfig(num_classes=4, train_per_class=16, val_per_class=6,
                                                 image_size=40), str(toy_dir)), data)
    truncated = data / "train" / "01_square" / "00003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:120])
    garbage = data / "train" / "02_triangle" / "00007.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    recipe = write_recipe()
    common = ["data.source=imagefolder", f"data.path={data}", "max_duration=1ep"]

    # 2 of 64 images (3%) under a 5% limit: skipped, counted, the run goes on.
    ok = _finish(_launch(recipe, tmp_path / "ok", subprocess_env, tmp_path, nproc=1,
                         extra=[*common, "data.max_bad_fraction=0.05"]))
    assert "2 unreadable images skipped so far" in ok and "epoch 1/1" in ok
    listed = (tmp_path / "ok" / "logs" / "bad_images_rank0.txt").read_text().split()
    assert sorted(set(listed)) == sorted([str(truncated), str(garbage)])

    # Over a 1% limit: the run stops with one line naming the files.
    process = _launch(recipe, tmp_path / "strict", subprocess_env, tmp_path, nproc=1,
                      extra=[*common, "data.max_bad_fraction=0.01"])
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 1 and "Traceback" not in out
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "data.max_bad_fraction=0.01" in error[0]
    assert str(truncated) in error[0] or str(garbage) in error[0]


def test_eval_and_export_refuse_a_checkpoint_that_would_run_code(tmp_path, write_recipe):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state": {"model": {}}, "extra": Payload()}, evil)
    cli = [sys.executable, "-m", "rsb_composer.cli"]
    for args in (["export", str(evil), str(tmp_path / "out.pth")], ["eval", str(write_recipe()), str(evil)]):
        result = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and not marker.exists()
        assert "refusing to unpickle posix.system" in result.stderr and "--trust-checkpoint" in result.stderr
        assert "Traceback" not in result.stderr


def test_resuming_with_another_batch_size_is_refused(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    _finish(_launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1, extra=["max_duration=1ep"]))
    process = _launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1,
                      extra=["max_duration=2ep", "data.batch_size=4"])
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 2 and "Traceback" not in out
    assert "trained with a global batch of 8, now 4" in out


def test_a_resume_refuses_what_its_checkpoint_cannot_carry_and_keeps_the_runs_optimizer(write_recipe, tmp_path,
                                                                                        subprocess_env):
    """What the checkpoint is bound to is refused: adding BlurPool or another class count would crash on load,
    SAM or another optimizer class would drop the optimizer's state. A changed LR or weight decay would silently
    not apply (the checkpoint restores the optimizer's groups): the run's values are kept, with a warning."""
    import yaml

    recipe = write_recipe()
    run_dir = tmp_path / "run"
    _finish(_launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1, extra=["max_duration=1ep"]))
    refusals = (("optimizer.name=lamb", "optimizer.name=lamb: this run was trained with optimizer.name=sgd"),
                ("algorithms.blurpool={}", "algorithms.blurpool={}: this run has algorithms.blurpool=null"),
                ("algorithms.sam={rho: 0.1}", "algorithms.sam={rho: 0.1}: this run has algorithms.sam=null"),
                ("model.num_classes=6", "model.num_classes=6 (from the data or the command): this run's classifier "
                                        "has 4 classes"))
    for change, message in refusals:
        refused = _launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1, extra=["max_duration=2ep", change])
        out, _ = refused.communicate(timeout=300)
        assert refused.returncode == 2 and "Traceback" not in out, out[-2000:]
        assert message in out
    out = _finish(_launch(recipe, run_dir, subprocess_env, tmp_path, nproc=1,
                          extra=["max_duration=2ep", "optimizer.lr=0.4", "optimizer.weight_decay=0.01",
                                 "algorithms.mixup=null"]))
    assert "optimizer.lr=0.4 (this run: 0.2), optimizer.weight_decay=0.01 (this run: 0.0001) not applied" in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.2 and saved["optimizer"]["weight_decay"] == 0.0001
    # The rest follows the command: the new max_duration, mixup off (it does not touch the network).
    assert saved["max_duration"] == "2ep" and saved["algorithms"]["mixup"] is None
