"""What the tests share: paths, the tiny recipe, and running the real commands in a subprocess.

Imported by test modules as ``from tests.helpers import ...``; conftest.py holds only pytest fixtures.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "rsb_composer" / "train.py"
CLI = [sys.executable, "-m", "rsb_composer.cli"]
COMPOSER = [sys.executable, "-m", "composer.cli.launcher"]

# One toy set for the whole suite (shared through the toy_dir fixture): 4 classes, 16 + 6 images each, 40 px.
TINY_TOY = "{num_classes: 4, train_per_class: 16, val_per_class: 6, image_size: 40}"

# Smaller still, for runs that only need a checkpoint of the tiny recipe (to resume, refuse or start from): 4 + 2
# images a class, epochs of 2 steps.
SMALL_TOY = "{num_classes: 4, train_per_class: 4, val_per_class: 2, image_size: 40}"

TINY_RECIPE = """\
max_duration: 2ep
precision: amp_fp16
progress_bar: false
seed: 3
model:
  arch: resnet18
data:
  source: toy
  path: {toy_dir}
  toy: {toy}
  train_resolution: 32
  eval_resolution: 32
  batch_size: 8
  num_workers: 0
optimizer:
  lr: 0.2
scheduler:
  warmup_epochs: 1
algorithms:
  channels_last: {{}}
  label_smoothing: {{smoothing: 0.1}}
  mixup: {{alpha: 0.2}}
  cutmix: {{alpha: 1.0}}
"""


def tiny_recipe(toy_dir: Path) -> str:
    return TINY_RECIPE.format(toy_dir=toy_dir, toy=TINY_TOY)


# The multi-process runs compared with one another (tests/conftest.py's `reference`): 4 classes x 16 images /
# batch 8 = 8 steps per epoch on one process, 4 per rank on two; checkpoints every 2 batches, so a kill lands
# mid-epoch. No workers: the order of random numbers is then fully restored.
RUN = ["max_duration=3ep", "scheduler.warmup_epochs=0", "checkpoints.save_interval=2ba", "checkpoints.keep_last=3",
       "checkpoints.keep_top_k=0"]


# What Composer writes into os.environ when a test trains in-process (one process: RANK=0, WORLD_SIZE=1, ...);
# a launcher started by a later test must not inherit it.
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
                         "MASTER_PORT")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for launching the trainer: no W&B network, few threads per process, no distributed variables
    left behind by in-process training."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env.update({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def run(args: list, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300,
        expect: int | None = 0) -> subprocess.CompletedProcess:
    """Run a command to its end; with ``expect``, assert its exit code (showing the output's tail if not)."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env or subprocess_env(),
                            cwd=cwd, timeout=timeout)
    if expect is not None:
        assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def cli(*args, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300,
        expect: int | None = 0) -> subprocess.CompletedProcess:
    """``rsb-composer ARGS`` in a subprocess."""
    return run([*CLI, *args], env=env, cwd=cwd, timeout=timeout, expect=expect)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list, env: dict[str, str] | None = None, cwd: Path | None = None, **popen) -> subprocess.Popen:
    """Start ``python ARGS`` in the background, stdout and stderr together as text."""
    return subprocess.Popen([sys.executable, *map(str, args)], env=env or subprocess_env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _output_tail(process: subprocess.Popen | None) -> str:
    """The end of an exited process's piped output (nothing if it was not piped or is still running: reading a
    running process's pipe would block)."""
    if process is None or process.poll() is None or process.stdout is None:
        return ""
    out = process.stdout.read()
    return (out if isinstance(out, str) else out.decode(errors="replace"))[-4000:]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, process: subprocess.Popen | None = None,
             interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something true, and return that. The test fails
    naming ``what`` after ``timeout`` s, or as soon as ``process`` (the one expected to bring it about) exits,
    with the end of its output."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if process is not None and process.poll() is not None:
            if result := predicate():  # it came about just before the process exited
                return result
            raise AssertionError(f"gave up waiting for {what}: the process exited with {process.returncode}\n"
                                 + _output_tail(process))
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)
    return result


def read_line(process: subprocess.Popen, timeout: float, what: str) -> str:
    """The next line of ``process``'s piped text stdout; the test fails naming ``what`` if none comes within
    ``timeout`` s (a reader thread, as a pipe's readline has no time limit; it ends when the process does)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"gave up waiting for {what}: no line from the process in {timeout:.0f} s") from None


def latest_weights(run_dir: Path) -> dict:
    """The network weights of a run's latest checkpoint (a checkpoint the test itself made: a full load)."""
    import torch

    path = run_dir / "checkpoints" / "latest-rank0.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def same_weights(a: Path, b: Path) -> None:
    """The two runs' latest weights are bit for bit the same."""
    import torch

    wa, wb = latest_weights(a), latest_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def launch_composer(recipe: Path, run_dir: Path, env: dict[str, str], cwd: Path, extra=(), **popen) -> subprocess.Popen:
    """`composer -n 2` of the RUN settings in the background (stdout and stderr together)."""
    args = [*COMPOSER, "-n", "2", "--master_port", str(free_port()), str(TRAIN_PY)]
    return subprocess.Popen([*args, str(recipe), *RUN, f"run_dir={run_dir}", *extra], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a background launch; it must exit 0. Its output."""
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def metrics_table(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv without its perf/ columns: those time the machine, so two runs that trained the same
    weights still differ there. Everything else must match to the printed digit."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in csv.DictReader(handle)]


# --- the workarounds' tests (tests/test_fixes_*.py) ----------------------------------------------------------

def upstream_verdict(name: str, present: bool, behaviour: str) -> None:
    """Fail when the upstream behaviour and the workaround's range disagree on the installed version.

    ``present``: the installed library still does ``behaviour``. Present and in range, or gone and out of range
    (nothing to work around on this stack), is consistent.
    """
    import pytest

    from rsb_composer import composer_fixes

    fix = composer_fixes.BY_NAME[name]
    library = fix.library
    version = composer_fixes.installed_version(library)
    if not present and fix.applies():
        pytest.fail(f"{name} can go: upstream fixed it in {library} {version} (it no longer {behaviour}); delete "
                    f"rsb_composer/composer_fixes/{name}.py, its FIXES entry and its tests")
    if present and not fix.applies():
        pytest.fail(f"{name}: {library} {version} still {behaviour}, outside the workaround's applies_to "
                    f"{fix.applies_to!r} ({fix.library}): widen applies_to")


def unpatched(function):
    """Composer's own function, under our patch if an earlier apply() put one on."""
    while getattr(function, "__rsb_composer_patched__", False):
        function = function.__wrapped__
    return function


def host_reads(function, *args, **kwargs) -> int:
    """How many tensor-to-Python reads (each a device synchronisation on a GPU) one call makes."""
    import warnings

    from rsb_composer.tools.host_reads import HostReadWindow, counting_host_reads

    window = HostReadWindow()
    window.open = True
    with counting_host_reads(window), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Composer's own warnings about the targets: the reads are the point here
        function(*args, **kwargs)
    return sum(window.reads.values())
