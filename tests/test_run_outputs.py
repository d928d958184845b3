"""What a run leaves behind and what reads it back: the metric keys in every destination (console, log,
metrics.csv, W&B offline across a resume), plots, top-k checkpoints, and eval and export of the checkpoint."""

import csv
import glob
import json
import sys
from types import SimpleNamespace

import pytest

from callbacks.top_k import kept_checkpoints
from rsb_composer.config import load_config
from rsb_composer.run_folder import METRIC_KEYS
from tests.helpers import TRAIN_PY, cli, run

EMA = "algorithms.ema={half_life: 4ba, update_interval: 1ba}"


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B stores 'a/b' keys either way


def _wandb_records(run_dir):
    """History keys, summary and run id of the offline W&B runs in run_dir, read from W&B's own files."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    runs = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        store = datastore.DataStore()
        store.open_for_scan(path)
        history, summary, run_id, config = set(), {}, None, set()
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.update(_key(item) for item in record.history.item)
            elif kind == "summary":
                summary.update({_key(item): float(item.value_json) for item in record.summary.update
                                if _key(item) in METRIC_KEYS})
            elif kind == "run":
                run_id = record.run.run_id
                config.update(item.key for item in record.run.config.update)
        runs.append(SimpleNamespace(history=history, summary=summary, run_id=run_id, config=config))
    return runs


@pytest.mark.slow
def test_metrics_everywhere_wandb_offline_resume_plots_eval_and_export(write_recipe, tmp_path, subprocess_env):
    recipe = write_recipe()
    run_dir = tmp_path / "runs" / "tiny"
    secret = "rsbtest" + "0123456789abcdef" * 2 + "zz"  # a W&B-key-shaped secret that must never be written
    env = {**subprocess_env, "WANDB_MODE": "offline", "WANDB_API_KEY": secret}
    common = [EMA, "loggers.wandb.project=rsb-test", "loggers.wandb.tags=[ci]", "checkpoints.keep_top_k=1",
              "scheduler.warmup_epochs=0"]
    # A fresh run with autoresume and W&B on (Composer 0.32.1 alone crashes here).
    first = run([sys.executable, TRAIN_PY, recipe, *common, "max_duration=1ep"], env, tmp_path)
    assert first.stderr.count("W&B: logging offline") == 1
    run([sys.executable, TRAIN_PY, recipe, *common, "max_duration=2ep"], env, tmp_path)

    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(rows[-1][k] != "" for k in METRIC_KEYS)
    log_text = (run_dir / "logs" / "train_rank0.log").read_text()
    assert all(f"{key}=" in log_text for key in METRIC_KEYS)
    assert "run time left" in log_text

    wandb_runs = _wandb_records(run_dir)
    assert len(wandb_runs) == 2 and wandb_runs[0].run_id == wandb_runs[1].run_id  # the resume continued it
    assert wandb_runs[0].run_id == (run_dir / "wandb_run_id").read_text().strip()
    for wandb_run in wandb_runs:
        assert set(METRIC_KEYS) <= wandb_run.history
        assert {"model", "data", "optimizer", "algorithms"} <= wandb_run.config  # the resolved config
    last = wandb_runs[-1].summary
    assert set(last) == set(METRIC_KEYS)
    assert last["val/acc1"] == pytest.approx(float(rows[-1]["val/acc1"]), abs=1e-5)

    for name in ("curves.png", "lr.png"):
        assert (run_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(run_dir / "plots" / "lr.csv", newline="") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle)]
    assert steps == list(range(16))  # 64 images / batch 8 = 8 steps per epoch, 2 epochs, resumed once
    for path in run_dir.rglob("*"):  # config.yaml, logs, checkpoints, W&B's files: no secret anywhere
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    kept = kept_checkpoints(run_dir / "checkpoints")
    assert len(kept) == 1 and kept[0][0] == pytest.approx(max(float(r["val/acc1"]) for r in rows), abs=1e-4)

    # eval on the latest checkpoint reproduces the last evaluation (EMA weights, as during training) ...
    latest = run_dir / "checkpoints" / "latest-rank0.pt"
    out = cli("eval", recipe, latest, EMA, "--json", env=env, cwd=tmp_path).stdout
    printed = json.loads(out.splitlines()[-1])["results"][0]
    for key in ("val/loss", "val/acc1", "val/acc5"):
        assert float(printed[key]) == pytest.approx(float(rows[-1][key]), abs=1e-3)

    # ... and the exported torchvision weights give the same val/acc1 in plain PyTorch.
    exported = tmp_path / "resnet18.pth"
    note = cli("export", latest, exported, env=env, cwd=tmp_path).stdout
    assert "resnet18 EMA weights, 4 classes" in note
    # Plain torchvision in a fresh interpreter, the val folder read by torchvision's own ImageFolder, and the
    # eval transform written out by hand (resize floor(32 / 0.875) = 36, centre crop 32).
    script = f"""
import torch, torchvision
from torchvision import transforms as T
model = torchvision.models.resnet18(num_classes=4)
model.load_state_dict(torch.load({str(exported)!r}, weights_only=True))
model.eval()
norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
tf = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), norm])
val = torchvision.datasets.ImageFolder({str(load_config(recipe).data.path)!r} + "/val", transform=tf)
with torch.no_grad():
    correct = sum(int(model(x[None]).argmax()) == y for x, y in val)
print(correct / len(val))
"""
    acc1 = float(run([sys.executable, "-c", script], env, tmp_path).stdout.strip())
    assert acc1 == pytest.approx(float(printed["val/acc1"]), abs=1e-5)
