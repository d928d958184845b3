"""callbacks.top_k: the k best checkpoints by val/acc1, kept through improving and worsening evaluations."""

from pathlib import Path
from types import SimpleNamespace

import torch

import callbacks.top_k as top_k
from callbacks.top_k import TopKCheckpoints


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
