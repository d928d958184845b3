"""End-to-end runs of the real entry point (rsb_composer/train.py) on a tiny toy set, on the CPU."""

import csv
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from torch.utils.data import DistributedSampler

from rsb_composer.config import load_config
from rsb_composer.data.loaders import build_loaders, shard_digest
from rsb_composer.data.samplers import TrainSampler
from rsb_composer.run_folder import COLUMNS
from tests.helpers import COMPOSER, TRAIN_PY, free_port, run


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)


@pytest.mark.slow
def test_single_process_run_writes_metrics_config_checkpoints_and_resumes(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "runs" / "tiny"
    first = run([sys.executable, str(TRAIN_PY), str(recipe)], subprocess_env, cwd=tmp_path)

    # amp_fp16 on a CPU: one warning line, then fp32.
    assert len(re.findall(r"precision=amp_fp16 needs a GPU; training in fp32", first.stderr)) == 1
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        for key in ("train/acc1", "train/acc5", "val/acc1", "val/acc5"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["val/acc5"]) >= float(row["val/acc1"])
        assert float(row["train/loss"]) > 0 and float(row["val/loss"]) > 0
    # warmup_epochs=1: no ramp, cosine from the peak (0.2 * 8 / 256) towards 0 over 2 epochs.
    assert 0 < float(rows[1]["train/lr"]) < float(rows[0]["train/lr"]) <= 0.2 * 8 / 256 + 1e-9

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["num_classes"] == 4  # inferred from the data
    assert (run_dir / "checkpoints" / "latest-rank0.pt").exists()
    log_text = (run_dir / "logs" / "train_rank0.log").read_text()
    assert "epoch 2/2: train/loss=" in log_text and "val/acc1=" in log_text

    # Same command with a longer duration: autoresume continues from epoch 2, each epoch once in the table.
    run([sys.executable, str(TRAIN_PY), str(recipe), "max_duration=3ep"], subprocess_env, cwd=tmp_path)
    assert [r["epoch"] for r in _rows(run_dir)] == ["1", "2", "3"]
    assert _rows(run_dir)[:2] == rows

    # Same command once more: the run is complete; it says so and exits 0 without training.
    done = run([sys.executable, str(TRAIN_PY), str(recipe), "max_duration=3ep"], subprocess_env, cwd=tmp_path)
    assert "is already complete" in done.stderr and "val/acc1=" in done.stderr
    assert len(_rows(run_dir)) == 3


@pytest.mark.slow
def test_two_process_ddp_run_trains_on_disjoint_shards(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run([*COMPOSER, "-n", "2", "--master_port", str(free_port()), str(TRAIN_PY), str(recipe),
          "max_duration=1ep", "scheduler.warmup_epochs=0"], subprocess_env, cwd=tmp_path, timeout=400)
    run_dir = tmp_path / "runs" / "tiny"

    config = load_config(recipe)
    train_set = build_loaders(config.data, config.seed).train.dataset
    logged, expected, orders = {}, {}, {}
    for rank in (0, 1):
        text = (run_dir / "logs" / f"train_rank{rank}.log").read_text()
        match = re.search(r"rank (\d) of 2 reads (\d+) of (\d+) train images per epoch \(epoch-1 order (\w+)\)", text)
        assert match and int(match.group(1)) == rank
        assert int(match.group(2)) == len(train_set) // 2
        logged[rank] = match.group(4)
        sampler = DistributedSampler(train_set, num_replicas=2, rank=rank, shuffle=True, seed=config.seed,
                                     drop_last=True)
        expected[rank] = shard_digest(TrainSampler(sampler))
        sampler.set_epoch(0)
        orders[rank] = set(np.fromiter(iter(sampler), dtype=np.int64).tolist())
    assert logged == expected  # each rank read exactly its DistributedSampler shard
    assert orders[0].isdisjoint(orders[1]) and len(orders[0] | orders[1]) == len(train_set)
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["val/acc1"] != ""
    assert "epoch 1/1" in (run_dir / "logs" / "train_rank1.log").read_text()  # rank 1 trained too
    assert [p.name for p in run_dir.glob("*.csv")] == ["metrics.csv"]  # one table, written by rank 0


@pytest.mark.slow
def test_progress_bar_in_a_terminal_shows_step_loss_and_val_acc1(write_recipe, tmp_path, subprocess_env):
    # The bar is drawn only on a terminal (a log file would get a line per update), so give the run one.
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # tqdm draws nothing at width 0
    process = subprocess.Popen([sys.executable, str(TRAIN_PY), str(write_recipe()), "progress_bar=true"],
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=subprocess_env,
                               cwd=tmp_path)
    os.close(terminal)
    output, deadline = b"", time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the run ended and closed its side
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
    assert process.wait(timeout=60) == 0, output[-3000:]
    bars = [line for line in re.split(r"[\r\n]", output.decode(errors="replace")) if "ba/s" in line]
    assert any(re.search(r"train/loss=\d", bar) for bar in bars)  # the step loss, from the first batch on
    assert any(re.search(r"Epoch +1:.*val/acc1=0\.\d{4}", bar) for bar in bars)  # after the first evaluation
    assert (tmp_path / "runs" / "tiny" / "metrics.csv").exists()


@pytest.mark.slow
def test_compiled_run_trains_with_inductor_kernels(write_recipe, tmp_path, subprocess_env):
    # model.compile=true through the real entry point: torch 2.7.0's Inductor crashed compiling a ResNet's
    # backward (KeyError 'op7') until prepare_compile; the kernels it generates land in its cache folder.
    cache = tmp_path / "inductor"
    env = {**subprocess_env, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    run([sys.executable, str(TRAIN_PY), str(write_recipe()), "model.compile=true", "max_duration=1ep",
          "scheduler.warmup_epochs=0"], env, cwd=tmp_path, timeout=600)
    row = _rows(tmp_path / "runs" / "tiny")[0]
    assert 0 < float(row["train/loss"]) < 10 and 0 < float(row["val/loss"]) < 10
    assert 0 <= float(row["val/acc1"]) <= 1
    kernels = list(cache.rglob("*.cpp")) + list(cache.rglob("*.py"))
    assert len(kernels) > 10  # forward, backward and eval graphs, compiled
