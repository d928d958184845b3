"""What goes wrong during a run: preemption (SIGTERM), a diverging loss, unreadable images.

The diverging loss and the unreadable images run the entry point's ``main`` in this process (the callbacks need
no launcher); SIGTERM is sent to a real training process, as a scheduler sends it.
"""

import shutil
import signal

import pytest

from rsb_composer import train
from rsb_composer.checkpoints.resume import LATEST
from rsb_composer.config import ToyConfig
from rsb_composer.data.toy import ensure_toy_dataset
from tests.helpers import TRAIN_PY, metrics_table, same_weights, start, wait_for


def test_a_diverging_loss_stops_with_the_step_and_keeps_the_good_checkpoint(write_recipe, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # An absurd LR: step 1 still has a finite loss (and is checkpointed), step 2's loss is NaN.
    code = train.main([str(write_recipe()), f"run_dir={run_dir}", "optimizer.lr=1e30",
                       "checkpoints.save_interval=1ba", "scheduler.warmup_epochs=0"])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss became nan at step 2" in errors[0] and "ep0-ba1-rank0.pt" in errors[0]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix in (".pt", ".ckpt"))
    assert names == ["ep0-ba1-rank0.pt", LATEST]  # nothing saved from the diverged step
    assert (run_dir / "checkpoints" / LATEST).resolve().name == "ep0-ba1-rank0.pt"


def test_unreadable_images_are_skipped_and_counted_until_the_limit(toy_dir, write_recipe, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ensure_toy_dataset(ToyConfig(num_classes=4, train_per_class=16, val_per_class=6,
                                                 image_size=40), str(toy_dir)), data)
    truncated = data / "train" / "01_square" / "00003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:120])
    garbage = data / "train" / "02_triangle" / "00007.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    common = [str(write_recipe()), "data.source=imagefolder", f"data.path={data}", "max_duration=1ep",
              "scheduler.warmup_epochs=0"]

    # 2 of 64 images (3%) under a 5% limit: skipped, counted, the run goes on.
    assert train.main([*common, f"run_dir={tmp_path / 'ok'}", "data.max_bad_fraction=0.05"]) == 0
    assert "2 unreadable images skipped so far" in capsys.readouterr().err
    listed = (tmp_path / "ok" / "logs" / "bad_images_rank0.txt").read_text().split()
    assert sorted(set(listed)) == sorted([str(truncated), str(garbage)])

    # Over a 1% limit: the run stops with one line naming the files.
    assert train.main([*common, f"run_dir={tmp_path / 'strict'}", "data.max_bad_fraction=0.01"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.max_bad_fraction=0.01" in errors[0]
    assert str(truncated) in errors[0] or str(garbage) in errors[0]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    args = [TRAIN_PY, recipe, "max_duration=3ep", "scheduler.warmup_epochs=0", "checkpoints.keep_top_k=0"]
    process = start([*args, f"run_dir={run_dir}"], subprocess_env, tmp_path)
    # Epoch 1's checkpoint is written after its last batch's SIGTERM check (callbacks/preemption.py): the flag is
    # read next after a batch of epoch 2, so the signal sent now is answered mid-epoch 2.
    wait_for((run_dir / "checkpoints" / "ep1-ba8-rank0.pt").exists, 240, "epoch 1's checkpoint", process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out[-3000:]
    assert "SIGTERM: saved" in out
    latest = (run_dir / "checkpoints" / LATEST).resolve()
    assert latest.name.startswith("ep1-ba") and latest.name != "ep1-ba8-rank0.pt"  # saved mid-epoch 2
    assert "epoch 3/3" not in out

    for folder in (run_dir, tmp_path / "reference"):
        finished = start([*args, f"run_dir={folder}"], subprocess_env, tmp_path)
        out, _ = finished.communicate(timeout=300)
        assert finished.returncode == 0, out[-3000:]
    same_weights(run_dir, tmp_path / "reference")
    assert metrics_table(run_dir) == metrics_table(tmp_path / "reference")
