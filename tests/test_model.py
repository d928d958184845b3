import pytest
import torch

from rsb_composer.config import ModelConfig
from rsb_composer.eval_metrics.accuracy import top_k_accuracy
from rsb_composer.model import build_model


def accuracy_metrics(num_classes: int) -> dict:
    return {"acc1": top_k_accuracy(num_classes, 1), "acc5": top_k_accuracy(num_classes, 5)}


def test_top1_top5_are_micro_averaged_fractions():
    metrics = accuracy_metrics(num_classes=10)
    logits = torch.zeros(4, 10)
    for row, order in enumerate([[3, 1, 2, 4, 5], [0, 9, 8, 7, 6], [5, 4, 3, 2, 1], [9, 8, 7, 6, 0]]):
        for rank, cls in enumerate(order):
            logits[row, cls] = 10.0 - rank
    targets = torch.tensor([3, 9, 0, 0])  # top-1 hit, top-5 hit, miss, top-5 hit (5th)
    for metric in metrics.values():
        metric.update(logits, targets)
    assert float(metrics["acc1"].compute()) == pytest.approx(0.25)
    assert float(metrics["acc5"].compute()) == pytest.approx(0.75)


def test_top5_is_capped_at_the_class_count():
    metrics = accuracy_metrics(num_classes=3)
    logits = torch.tensor([[0.1, 0.2, 0.7]] * 2)
    metrics["acc5"].update(logits, torch.tensor([0, 1]))
    assert float(metrics["acc5"].compute()) == pytest.approx(1.0)


def test_model_wraps_torchvision_resnet_with_val_metrics_and_no_train_metrics():
    model = build_model(ModelConfig(arch="resnet18"), num_classes=7)
    assert model.module.fc.out_features == 7
    assert set(model.get_metrics(is_train=False)) == {"acc1", "acc5", "loss"}
    # Composer would otherwise run a second forward pass per batch for train metrics.
    assert model.get_metrics(is_train=True) == {}
    out = model((torch.randn(2, 3, 32, 32), torch.tensor([0, 1])))
    assert out.shape == (2, 7)
