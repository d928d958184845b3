"""The model: a ComposerClassifier around a torchvision ResNet, with the evaluation metrics of
:mod:`rsb_composer.eval_metrics` (loss, top-1 and top-5 accuracy, ...)."""

from __future__ import annotations

import torch
import torchvision
from composer.models import ComposerClassifier
from torchmetrics import MetricCollection

from rsb_composer.config import LossConfig, ModelConfig, check
from rsb_composer.eval_metrics import build_eval_metrics
from rsb_composer.losses import build_loss


def build_model(cfg: ModelConfig, num_classes: int, loss: LossConfig | None = None) -> ComposerClassifier:
    module = torchvision.models.get_model(
        cfg.arch, weights=None, num_classes=num_classes, zero_init_residual=cfg.zero_init_residual
    )
    val_metrics = MetricCollection(build_eval_metrics(num_classes))
    # Train metrics are computed by callbacks.metrics against each batch's original labels (mixing algorithms
    # replace the targets before the loss), so the classifier keeps none of its own.
    model = ComposerClassifier(
        module, num_classes=num_classes, train_metrics=MetricCollection({}), val_metrics=val_metrics,
        loss_fn=build_loss(loss or LossConfig()),
    )
    return model


def check_model(cfg: ModelConfig) -> None:
    check(cfg.arch.startswith(("resnet", "resnext", "wide_resnet")), "model.arch", cfg.arch,
          "must name a torchvision ResNet (resnet18 ... resnet152, resnext*, wide_resnet*)")
    check(cfg.arch in torchvision.models.list_models(module=torchvision.models), "model.arch", cfg.arch,
          "torchvision has no model of this name")
    if cfg.num_classes is not None:
        check(cfg.num_classes >= 2, "model.num_classes", cfg.num_classes, "need at least 2 classes")


def convert_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
