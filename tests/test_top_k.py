"""callbacks.top_k: the k best checkpoints by val/acc1, kept through improving and worsening evaluations."""

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import callbacks.top_k as top_k
from callbacks.top_k import TopKCheckpoints
from tests.helpers import COMPOSER, TRAIN_PY, finish, free_port, metrics_table


def test_top_k_keeps_the_best_files_through_improving_and_worsening_evaluations(tmp_path, monkeypatch):
    def fake_save(state, filename):  # Composer's save_checkpoint, minus the model: the file is the fact
        Path(filename).write_text(str(state.timestamp.epoch))

    monkeypatch.setattr(top_k, "save_checkpoint", fake_save)
    callback = TopKCheckpoints(tmp_path, k=2)
    metric = SimpleNamespace(value=0.0)
    metric.compute = lambda: torch.tensor(metric.value)
    state = SimpleNamespace(eval_metrics={"eval": {"acc1": metric}}, timestamp=SimpleNamespace(epoch=0,
                                                                                             batch_in_epoch=0))
    for epoch, acc in enumerate([0.30, 0.50, 0.40, 0.20, 0.55, 0.60, 0.55], start=1):
        state.timestamp.epoch, metric.value = epoch, acc
        callback.eval_after_all(state, logger=None)
    names = sorted(p.name for p in tmp_path.iterdir())
    # Epoch 7's 0.55 ties the worst kept file (epoch 5): the earlier epoch keeps its place.
    assert names == ["epoch=5-val_acc1=0.5500.ckpt", "epoch=6-val_acc1=0.6000.ckpt"]
    assert (tmp_path / "epoch=5-val_acc1=0.5500.ckpt").read_text() == "5"
    # A resume from epoch 5 drops the files of the epochs that will run again.
    state.timestamp.epoch = 5
    callback.fit_start(state, logger=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=5-val_acc1=0.5500.ckpt"]


@pytest.mark.slow
def test_nodes_that_list_the_folder_differently_still_agree_on_saving(write_recipe, tmp_path, subprocess_env):
    """Two loopback nodes, a run folder each, keep_top_k=1. Node 0's folder holds a kept file no evaluation can
    beat (val/acc1 1.0), node 1's none: each rank used to decide from its own listing, so rank 1 entered the
    collective save alone after epoch 1 and the ranks' collectives went out of step (gloo aborted in epoch 2, NCCL
    would hang until its timeout). Rank 0 decides for all."""
    (tmp_path / "node0" / "checkpoints").mkdir(parents=True)
    unbeatable = tmp_path / "node0" / "checkpoints" / "epoch=0-val_acc1=1.0000.ckpt"
    unbeatable.write_text("listed, never read")
    port = str(free_port())
    nodes = [subprocess.Popen([*COMPOSER, "--world_size", "2", "--node_rank", str(rank), "--master_addr",
                               "127.0.0.1", "--master_port", port, "-n", "1", str(TRAIN_PY), str(write_recipe()),
                               f"run_dir={tmp_path / f'node{rank}'}", "checkpoints.keep_top_k=1", "max_duration=2ep",
                               "dist_timeout=60"],
                              env=subprocess_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for rank in (0, 1)]
    for node in nodes:
        finish(node, timeout=400)
    assert len(metrics_table(tmp_path / "node0")) == 2  # both epochs trained and were evaluated
    assert [p.name for p in (tmp_path / "node0" / "checkpoints").glob("epoch=*")] == [unbeatable.name]
    assert not list((tmp_path / "node1" / "checkpoints").glob("epoch=*"))
