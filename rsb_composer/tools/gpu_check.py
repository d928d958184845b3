"""``rsb-composer gpu-check``: in one call, the figures that need a GPU, in DIR/gpu_check.json and .md.

Each row is one of the project's own commands, run as a subprocess with a time limit (a row that fails or runs out
of time is reported as such and the others still run), and the files are rewritten after every row:

- ``bench_train_eager`` and ``bench_train_compiled``: ``rsb-composer bench-train`` of a2 (amp_fp16, channels-last,
  batch 256) eager and with ``model.compile=true``: images/s, the plain loop's, their ratio, peak memory;
- ``bench_data``: ``rsb-composer bench-data`` of a2 with ``--reference``, as many workers as the machine has cores
  but one, on an ImageNet-like set of JPEGs made here (400-640 px, hard links to a few hundred distinct files);
- ``toy_resume``: ``composer -n <GPUs>`` of the quickstart on a tiny toy set in amp_fp16, stopped mid-epoch and run
  again: the loss is finite, checkpoints were written, and the second launch resumed mid-epoch;
- ``syncs``: ``rsb-composer bench-syncs`` of a2: tensor reads between the forward and the end of the backward pass,
  and the synchronisations ``torch.cuda.set_sync_debug_mode("warn")`` reports per step;
- ``bench_train_deterministic``: bench-train of a2 with ``deterministic=true``: its cost against the eager row, and
  that a ResNet trains under torch's deterministic mode on CUDA.

Before any timing, every row runs once at its smallest size (its dry run, under ``dry_runs`` in the JSON): a
missing prerequisite (a package, the launcher, the compiler torch.compile needs) shows in seconds, not after the
rows before it have spent the budget, and a row whose dry run failed is not timed. Usable cores are the ones this
process may run on (``os.sched_getaffinity``: a SLURM or container CPU set), not the machine's.

Without a GPU the rows run at CPU sizes (a2 at 64 px, fp32), the GPU-only rows and counts are skipped, and the JSON
says ``"gpu": false`` and which rows were skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rsb_composer.config import ToyConfig
from rsb_composer.data.throughput import timed_batches
from rsb_composer.devices import usable_cpus

REPO = Path(__file__).resolve().parents[2]
A2 = str(REPO / "yamls" / "a2.yaml")
QUICKSTART = str(REPO / "yamls" / "quickstart.yaml")
DRY_RUN_CAP_S = 120  # each row's dry run: start-up, one step
GPU_BUDGET_S, CPU_BUDGET_S = 480, 900  # all rows, dry runs included: the GPU's must fit 8 minutes
TINY_EPOCH_BATCHES = 8  # toy_resume's epoch on any process count: the first launch stops inside it, at batch 6
DISTINCT = ToyConfig(num_classes=10, train_per_class=20, val_per_class=1, image_size=400, max_image_size=640,
                     texture="fractal")


def tiny_toy(processes: int) -> str:
    """A toy set whose epoch is TINY_EPOCH_BATCHES batches of 8 per process on ``processes`` processes."""
    per_class = TINY_EPOCH_BATCHES * 8 * processes // 4
    return f"{{num_classes: 4, train_per_class: {per_class}, val_per_class: 8, image_size: 40}}"


def _machine(gpus: int) -> dict[str, Any]:
    import composer
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(gpus)]
    return {"gpus": gpus, "gpu_names": names, "cpu_cores": usable_cpus(), "torch": torch.__version__,
            "composer": composer.__version__, "python": sys.version.split()[0]}


def imagenet_like_set(root: Path, per_class: int) -> Path:
    """10 classes of ``per_class`` JPEGs (400-640 px wide, photo-like detail), hard links to 20 distinct files per
    class: decoding costs what a photograph's does, and a few seconds make thousands."""
    from rsb_composer.data.toy import ensure_toy_dataset

    distinct = ensure_toy_dataset(DISTINCT, str(root / "distinct"))
    for split, count in (("train", per_class), ("val", 2)):
        for folder in sorted((distinct / "train").iterdir()):
            files = sorted(folder.iterdir())
            target = root / "set" / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                os.link(files[i % len(files)], target / f"{i:05d}.jpg")
    return root / "set"


class Check:
    """Runs the rows, keeping the figures and rewriting DIR/gpu_check.json and .md after each."""

    def __init__(self, out: Path, budget_s: float | None):
        import torch

        self.out = out
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if budget_s is None:  # the CPU's dry runs cost as much as its small rows: the subset needs longer
            budget_s = GPU_BUDGET_S if self.gpus else CPU_BUDGET_S
        self.deadline = time.monotonic() + budget_s
        self.report: dict[str, Any] = {"gpu": self.gpus > 0, "machine": _machine(self.gpus), "dry_runs": {},
                                       "rows": {}, "skipped": [], "budget_s": budget_s}
        self.dry = False  # rows run at their smallest size, into report["dry_runs"]
        self.started = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)

    def skip(self, name: str, reason: str) -> None:
        self.report["dry_runs" if self.dry else "rows"][name] = {"skipped": reason}
        if not self.dry:
            self.report["skipped"].append(f"{name}: {reason}")
        self.write()

    def command(self, name: str, argv: list[str], shown: str, cap_s: float, env: dict | None = None,
                figures: bool = True) -> dict | None:
        """Run ``argv`` (with ``figures``, its last stdout line is JSON); the row, or None when it failed (reported
        as the row)."""
        timeout = min(DRY_RUN_CAP_S if self.dry else cap_s, self.deadline - time.monotonic())
        if timeout < 10:
            self.skip(name, "no time left in the budget (--budget-s)")
            return None
        start = time.monotonic()
        row: dict[str, Any] = {"command": shown}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or os.environ)
            if done.returncode != 0:
                row["error"] = f"exit {done.returncode}: " + " | ".join(done.stderr.strip().splitlines()[-3:])
            elif figures:
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            row["error"] = f"ran out of time after {timeout:.0f} s"
        except (ValueError, IndexError) as err:
            row["error"] = f"no JSON figures in its output ({err})"
        row["seconds"] = round(time.monotonic() - start, 1)
        self.report["dry_runs" if self.dry else "rows"][name] = row
        self.write()
        return None if "error" in row else row

    def cli(self, name: str, args: list[str], cap_s: float) -> dict | None:
        shown = "rsb-composer " + " ".join(a.replace(str(REPO) + "/", "") for a in args)
        return self.command(name, [sys.executable, "-m", "rsb_composer.cli", *args], shown, cap_s)

    def write(self) -> None:
        self.report["seconds"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (self.out / "gpu_check.md").write_text(render_markdown(self.report))


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    device = f"{m['gpus']} x {m['gpu_names'][0]}" if m["gpus"] else "no GPU (CPU subset)"
    lines = [f"# gpu-check: {device}, {m['cpu_cores']} CPU cores; torch {m['torch']}, Composer {m['composer']}",
             "", f"`\"gpu\": {str(report['gpu']).lower()}`, {report['seconds']} s in all.", "",
             "Dry runs (smallest size, before any timing): " + (", ".join(
                 f"{name} {'failed' if 'error' in row or 'skipped' in row else 'ok'} ({row.get('seconds', 0)} s)"
                 for name, row in report["dry_runs"].items()) or "none yet") + ".", "",
             "| row | result | command |", "|---|---|---|"]
    for name, row in report["rows"].items():
        if "skipped" in row:
            result = f"skipped: {row['skipped']}"
        elif "error" in row:
            result = f"FAILED: {row['error']}"
        else:
            result = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k not in ("command", "cuda_sync_sites"))
        lines.append(f"| {name} | {result} | `{row.get('command', '')}` |")
    if report["skipped"]:
        lines += ["", "Skipped:", "", *(f"- {line}" for line in report["skipped"])]
    sites = report["rows"].get("syncs", {}).get("cuda_sync_sites")
    if sites:
        lines += ["", "CUDA synchronisations by Python line (counted steps):", ""]
        lines += [f"- {count} x `{site}`" for site, count in sites.items()]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def toy_resume(check: Check, root: Path) -> None:
    """The quickstart on a tiny toy set through ``composer -n <GPUs>``: 6 batches, then the same command to the
    end of the epoch, which must resume mid-epoch."""
    run_dir = root / "toy_run"
    processes = max(check.gpus, 1)
    common = [QUICKSTART, f"run_dir={run_dir}", f"data.path={root / 'toy'}", f"data.toy={tiny_toy(processes)}",
              "model.arch=resnet18", "data.train_resolution=32", "data.eval_resolution=32", "data.batch_size=8",
              "data.num_workers=1", "precision=amp_fp16", "scheduler.warmup_epochs=0", "checkpoints.save_interval=4ba",
              "checkpoints.keep_top_k=0", "progress_bar=false"]
    train_py = str(REPO / "rsb_composer" / "train.py")
    launcher = [sys.executable, "-m", "composer.cli.launcher", "-n", str(processes), train_py]
    shown = f"composer -n {processes} rsb_composer/train.py yamls/quickstart.yaml (tiny toy, amp_fp16) max_duration="
    env = {**os.environ, "WANDB_MODE": "offline"}
    if check.dry:
        check.command("toy_resume", [*launcher, *common[:1], f"run_dir={root / 'toy_dry_run'}", *common[2:],
                                     "max_duration=1ba"], shown + "1ba", cap_s=200, env=env, figures=False)
        return
    for duration in ("6ba", "1ep"):
        if check.command("toy_resume", [*launcher, *common, f"max_duration={duration}"], shown + duration,
                         cap_s=200, env=env, figures=False) is None:
            return
    from rsb_composer.run_folder import RunFolder, final_metrics

    folder = RunFolder(run_dir)
    final = final_metrics(folder.metrics_csv) or {}
    loss = final.get("train/loss")
    log = folder.log_file(0).read_text() if folder.log_file(0).exists() else ""
    check.report["rows"]["toy_resume"] = {
        "command": shown + "6ba, then 1ep", "processes": processes,
        "loss_finite": loss is not None and math.isfinite(float(loss)),
        "checkpoint_written": any(folder.checkpoints.glob(f"ep*-ba{TINY_EPOCH_BATCHES}-rank0.pt")),
        "resumed": "resuming epoch 1 at batch 6" in log, "val/acc1": final.get("val/acc1")}
    check.write()


def _bench_train(check: Check, root: Path) -> None:
    if check.dry:
        check.cli("bench_train_eager", ["bench-train", A2, "data.train_resolution=64", "data.global_batch_size=8",
                                        "--steps", "1", "--warmup", "1", "--repeats", "1", "--json"], 0)
    elif check.gpus:
        check.cli("bench_train_eager", ["bench-train", A2, "data.global_batch_size=256", "--steps", "30",
                                        "--warmup", "3", "--json"], 150)
    else:
        check.cli("bench_train_eager", ["bench-train", A2, "data.train_resolution=64", "data.global_batch_size=16",
                                        "--steps", "3", "--warmup", "1", "--repeats", "1", "--json"], 200)
        check.report["skipped"].append("bench_train_eager: peak_memory_gib and amp_fp16 (no GPU: fp32, 64 px, "
                                       "batch 16)")


def _bench_data(check: Check, root: Path) -> None:
    batch, batches = (8, 1) if check.dry else (256, 20) if check.gpus else (64, 8)
    workers = 1 if check.dry else max(usable_cpus() - 1, 1)
    start = time.monotonic()
    folder = root / ("data_dry_run" if check.dry else "data")
    # a batch per worker to warm up, whole worker rounds timed; a2's repeat-augment sampler takes 256s of images
    images = math.ceil(batch * (max(workers, 2) + timed_batches(workers, batches) + 1) / 256) * 256
    data = imagenet_like_set(folder, per_class=math.ceil(images / 10))
    check.cli("bench_data", ["bench-data", A2, "data.source=imagefolder", f"data.path={data}",
                             f"data.global_batch_size={batch}", f"data.num_workers={workers}",
                             "--batches", str(batches), "--reference", "--json"], 150 - (time.monotonic() - start))


def _syncs(check: Check, root: Path) -> None:
    if check.dry:
        check.cli("syncs", ["bench-syncs", A2, "data.train_resolution=64", "data.global_batch_size=8", "--steps", "1",
                            "--warmup", "1", "--json"], 0)
    elif check.gpus:
        check.cli("syncs", ["bench-syncs", A2, "data.global_batch_size=256", "--steps", "8", "--json"], 120)
    else:
        check.cli("syncs", ["bench-syncs", A2, "data.train_resolution=64", "data.global_batch_size=8", "--steps", "3",
                            "--warmup", "1", "--json"], 120)
        check.report["skipped"].append("syncs: CUDA synchronisation counts (no GPU; tensor reads counted instead)")


def _deterministic(check: Check, root: Path) -> None:
    """What ``deterministic: true`` costs (against bench_train_eager) and that a ResNet trains under it on CUDA."""
    if not check.gpus:
        if not check.dry:
            check.skip("bench_train_deterministic", "no GPU (the CPU's kernels are deterministic anyway)")
        return
    size = (["data.train_resolution=64", "data.global_batch_size=8", "--steps", "1", "--warmup", "1"] if check.dry
            else ["data.global_batch_size=256", "--steps", "30", "--warmup", "3"])
    check.cli("bench_train_deterministic", ["bench-train", A2, "deterministic=true", *size, "--repeats", "1",
                                            "--json"], 150)


def _compiled(check: Check, root: Path) -> None:
    if not check.gpus:
        if not check.dry:
            check.skip("bench_train_compiled", "no GPU (torch.compile's CPU kernels say nothing of a GPU's)")
        return
    if check.dry:  # what torch.compile needs on a GPU (triton, a C compiler), on a one-line function
        code = "import torch; f = torch.compile(lambda x: (x * 2).sum()); print(float(f(torch.ones(8, device='cuda'))))"
        check.command("bench_train_compiled", [sys.executable, "-c", code], "torch.compile of a tiny function", 0,
                      figures=False)
        return
    check.cli("bench_train_compiled", ["bench-train", A2, "data.global_batch_size=256", "model.compile=true",
                                       "--steps", "30", "--warmup", "3", "--repeats", "1", "--json"], 420)


# In this order: the compiled run last, as it takes longest and may not fit what is left of the budget.
ROWS = {"bench_train_eager": _bench_train, "bench_data": _bench_data, "toy_resume": toy_resume, "syncs": _syncs,
        "bench_train_deterministic": _deterministic, "bench_train_compiled": _compiled}


def gpu_check(out: Path, budget_s: float | None = None, rows: list[str] | None = None) -> dict[str, Any]:
    """Run ``rows`` (default all of :data:`ROWS`) into ``out``; the report as written to gpu_check.json."""
    check = Check(out, budget_s)
    root = Path(tempfile.mkdtemp(prefix="rsb-gpu-check-"))
    chosen = {name: row for name, row in ROWS.items() if rows is None or name in rows}
    try:
        check.dry = True
        for row in chosen.values():
            row(check, root)
        check.dry = False
        for name, row in ROWS.items():
            dry_run = check.report["dry_runs"].get(name, {})
            if name not in chosen:
                check.skip(name, "not in --rows")
            elif "error" in dry_run or "skipped" in dry_run:
                check.skip(name, "its dry run failed: " + dry_run.get("error", dry_run.get("skipped", "")))
            else:
                row(check, root)
        check.write()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return check.report
