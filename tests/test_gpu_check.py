"""rsb-composer gpu-check: its rows as subprocesses with time limits, its files, and the CPU subset here."""

import json
import subprocess
import sys

import pytest
import torch

from rsb_composer.tools.gpu_check import Check
from tests.helpers import cli


def test_a_row_reports_figures_a_failure_a_timeout_or_no_time_left(tmp_path, monkeypatch):
    # A row's limit is at least 10 s (less is "no time left"), so the hung row's is 11 s. Its child hangs for real
    # and subprocess.run's own timeout kills it, after 1 s rather than 11: the row reports the limit it was given.
    limits = []
    real_run = subprocess.run

    def recorded(argv, *, timeout, **kwargs):
        limits.append(timeout)
        return real_run(argv, timeout=1 if timeout == 11 else timeout, **kwargs)

    monkeypatch.setattr(subprocess, "run", recorded)
    check = Check(tmp_path / "out", budget_s=60)
    python = [sys.executable, "-c"]
    assert check.command("ok", [*python, "print('noise'); print('{\"images_per_sec\": 5.0}')"], "ok", 30)[
        "images_per_sec"] == 5.0
    assert check.command("bad", [*python, "import sys; sys.exit('broken data')"], "bad", 30) is None
    assert check.command("slow", [*python, "import time; time.sleep(300)"], "slow", 11) is None  # hangs
    check.deadline = 0  # the budget is spent
    assert check.command("late", [*python, "print('{}')"], "late", 30) is None
    assert limits == [30, 30, 11]  # each row's own limit; the late one never started
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["gpu"] is torch.cuda.is_available() and report["rows"]["ok"]["command"] == "ok"
    assert report["rows"]["bad"]["error"] == "exit 1: broken data"
    assert report["rows"]["slow"]["error"].startswith("ran out of time after 11 s")
    assert report["rows"]["late"] == {"skipped": "no time left in the budget (--budget-s)"}
    assert report["skipped"] == ["late: no time left in the budget (--budget-s)"]
    markdown = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| ok | images_per_sec 5, seconds " in markdown and "| bad | FAILED: exit 1: broken data |" in markdown


@pytest.mark.slow
def test_the_toy_run_resumes_mid_epoch_through_the_composer_launcher(tmp_path, subprocess_env):
    """The toy row, on this machine's GPUs or on the CPU (the CPU subset's duration: docs/benchmarks.md)."""
    cli("gpu-check", "--out", tmp_path / "out", "--rows", "toy_resume", env=subprocess_env, cwd=tmp_path,
        timeout=600)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    gpus = torch.cuda.device_count()
    assert report["gpu"] is (gpus > 0) and report["machine"]["gpus"] == gpus
    toy = report["rows"]["toy_resume"]
    assert toy["loss_finite"] and toy["checkpoint_written"] and toy["resumed"] and toy["processes"] == max(gpus, 1)
    assert report["rows"]["bench_train_compiled"] == {"skipped": "not in --rows"}
    assert cli("gpu-check", "--rows", "toy", env=subprocess_env, cwd=tmp_path, expect=2).stderr.startswith(
        "error: --rows: unknown toy")


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 8])
def test_the_toy_rows_epoch_outlasts_its_first_launch_on_any_gpu_count(gpus):
    """The first launch stops at batch 6; its epoch must be longer on every GPU count, or the second finds the run
    complete and there is nothing to resume."""
    import yaml

    from rsb_composer.tools.gpu_check import TINY_EPOCH_BATCHES, tiny_toy

    toy = yaml.safe_load(tiny_toy(gpus))
    batches_per_epoch = toy["num_classes"] * toy["train_per_class"] // (8 * gpus)
    assert batches_per_epoch == TINY_EPOCH_BATCHES > 6
