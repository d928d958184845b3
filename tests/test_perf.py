"""callbacks.perf: per-epoch images/s and data wait measured in a real Composer training loop, the warning of an
input-bound run, and the GPU memory figure."""

import csv
import json
import logging
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from composer import Trainer
from composer.loggers import LoggerDestination
from composer.models import ComposerClassifier
from torch.utils.data import DataLoader, Dataset

from callbacks.perf import GIB, PerfMonitor
from tests.helpers import COMPOSER, REPO, TRAIN_PY, free_port, run

PER_IMAGE = 0.05  # seconds a slow loader spends on each image: far more than a step of the tiny model


class Images(Dataset):
    def __init__(self, delay: float):
        self.delay = delay

    def __len__(self) -> int:
        return 16  # 4 steps an epoch

    def __getitem__(self, index: int):
        time.sleep(self.delay)  # the slow loader under test
        return torch.rand(3, 4, 4), index % 2


class Recorder(LoggerDestination):
    def __init__(self):
        self.logged: list[dict] = []

    def log_metrics(self, metrics, step=None):
        if any(key.startswith("perf/") for key in metrics):
            self.logged.append(dict(metrics))


def _train(delay: float) -> list[dict]:
    model = ComposerClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)), num_classes=2)
    recorder = Recorder()
    trainer = Trainer(model=model, train_dataloader=DataLoader(Images(delay), batch_size=4), max_duration="2ep",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[PerfMonitor(num_workers=3)],
                      loggers=[recorder], device="cpu", progress_bar=False, log_to_console=False)
    trainer.fit()
    trainer.close()
    return recorder.logged


def test_a_slow_loader_shows_as_data_wait_and_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="rsb_composer.perf"):
        slow = _train(PER_IMAGE)
    assert len(slow) == 2  # once per epoch
    for epoch in slow:
        assert set(epoch) == {"perf/images_per_sec", "perf/data_wait"}  # no GPU memory on the CPU
        # The loader alone sleeps 50 ms an image: no more than 20 images/s, most of it waiting for data.
        assert 0 < epoch["perf/images_per_sec"] < 1 / PER_IMAGE
        assert 0.5 < epoch["perf/data_wait"] <= 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("the input pipeline holds the devices back" in w for w in warnings)
    assert "raise data.num_workers (now 3) or see rsb-composer bench-data" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rsb_composer.perf"):
        fast = _train(0.0)
    assert all(e["perf/data_wait"] < min(s["perf/data_wait"] for s in slow) for e in fast)
    assert all(e["perf/images_per_sec"] > max(s["perf/images_per_sec"] for s in slow) for e in fast)
    # A warning for each epoch above 10% and none below (the tiny model's steps are short enough that the first
    # epoch's loader start-up can cross the line).
    assert len(caplog.records) == sum(e["perf/data_wait"] > 0.10 for e in fast)


def test_gpu_memory_is_the_epochs_peak_in_gib(monkeypatch):
    # No GPU here: the CUDA allocator's counters are stood in for; the collective runs on the CPU.
    peaks = iter([3 * GIB // 2])
    reset = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: next(peaks))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: reset.append(device))
    monitor = PerfMonitor(num_workers=8)
    monitor.gpu = torch.device("cuda", 0)
    timestamp = SimpleNamespace(sample=0, epoch=1)
    state = SimpleNamespace(timestamp=timestamp, device_train_microbatch_size=8)
    monitor.epoch_start(state, None)
    assert reset == [torch.device("cuda", 0)]  # the peak counts from the epoch's start
    monitor.before_dataloader(state, None)
    monitor.after_dataloader(state, None)
    monitor.batch_start(state, None)
    monitor.batch_end(state, None)
    assert reset == [torch.device("cuda", 0)]  # no out-of-memory retry: no reset at the step's end
    timestamp.sample = 64
    logged = []
    monitor.epoch_end(state, SimpleNamespace(log_metrics=logged.append))
    assert logged[0]["perf/gpu_mem_peak_gib"] == pytest.approx(1.5)
    assert logged[0]["perf/images_per_sec"] > 0


def _waits(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row["perf/data_wait"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_an_input_bound_run_waits_for_data_more_than_on_synthetic_data_and_warns(write_recipe, tmp_path,
                                                                                 subprocess_env):
    """The same tiny training twice: decoding and augmenting 768 px JPEGs with PIL in the training process (no
    workers) for a 16 px network, and generated tensors. (In subprocesses: one thread each, as the suite's
    other training runs, since two threads per process on a busy 2-core machine slow the network's side.)"""
    recipe = write_recipe()
    small = ["data.train_resolution=16", "data.eval_resolution=16"]
    input_run = run([sys.executable, TRAIN_PY, recipe, *small, "run_name=input", f"data.path={tmp_path / 'toy768'}",
                     "data.toy.image_size=768", "data.pipeline=reference", "data.auto_augment=rand-m9-mstd0.5-inc1"],
                    subprocess_env, tmp_path)
    synthetic_run = run([sys.executable, TRAIN_PY, recipe, *small, "run_name=synthetic", "data.source=synthetic",
                         "data.synthetic.num_classes=4", "data.synthetic.train_samples=64",
                         "data.synthetic.val_samples=24"], subprocess_env, tmp_path)
    input_bound, synthetic = _waits(tmp_path / "runs" / "input"), _waits(tmp_path / "runs" / "synthetic")
    assert len(input_bound) == len(synthetic) == 2
    assert min(input_bound) > 2 * max(synthetic), (input_bound, synthetic)
    assert any(wait > 0.10 for wait in input_bound), input_bound
    # One warning line per epoch above 10%, and none for the others.
    for result, waits in ((input_run, input_bound), (synthetic_run, synthetic)):
        assert result.stderr.count("the input pipeline holds the devices back") == sum(w > 0.10 for w in waits)
    assert "raise data.num_workers (now 0) or see rsb-composer bench-data" in input_run.stderr


TWO_RANKS = """
import json, sys, time
import torch
from composer import Trainer
from composer.loggers import LoggerDestination
from composer.models import ComposerClassifier
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset
sys.path.insert(0, {repo!r})
from callbacks.perf import PerfMonitor


class Images(Dataset):  # rank 1's loader is slow, rank 0's is not
    def __len__(self):
        return 64

    def __getitem__(self, index):
        time.sleep(0.05 if dist.get_global_rank() == 1 else 0.0)
        return torch.rand(3, 4, 4), index % 2


class Printer(LoggerDestination):
    def log_metrics(self, metrics, step=None):
        if "perf/data_wait" in metrics and dist.get_global_rank() == 0:
            print("PERF " + json.dumps(metrics), flush=True)


dist.initialize_dist("cpu")
model = ComposerClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)), num_classes=2)
data = Images()
loader = DataLoader(data, batch_size=4, sampler=dist.get_sampler(data, shuffle=False))
trainer = Trainer(model=model, train_dataloader=loader, max_duration="1ep", device="cpu",
                  optimizers=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[PerfMonitor(num_workers=0)],
                  loggers=[Printer()], progress_bar=False, log_to_console=False)
trainer.fit()
trainer.close()
"""


@pytest.mark.slow
def test_one_ranks_slow_loader_holds_every_rank_and_shows(tmp_path, subprocess_env):
    """Under `composer -n 2`, only rank 1's loader sleeps; rank 0 waits for it after each batch (Composer's check
    that every rank got one), so the run's data wait (the smaller of the two ranks') is still large."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS.format(repo=str(REPO)))
    out = run([*COMPOSER, "-n", "2", "--master_port", str(free_port()), script], subprocess_env, tmp_path,
              timeout=300).stdout
    (figures,) = [json.loads(line[5:]) for line in out.splitlines() if line.startswith("PERF ")]
    assert figures["perf/data_wait"] > 0.5  # 0.2 s of sleep per step against a step of a linear layer
    assert figures["perf/images_per_sec"] < 2 * 4 / (4 * 0.05)  # 2 ranks x 4 images per 0.2 s at most
