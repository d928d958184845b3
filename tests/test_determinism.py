"""``deterministic: true``: Composer's deterministic mode on, and the ResNet's one layer without a deterministic
CUDA backward replaced by the same computation. (What only a GPU shows, bit-exact reruns there, is gpu-check's.)"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from rsb_composer.determinism import GlobalAveragePool, make_deterministic
from rsb_composer.recipe import load_recipe
from rsb_composer.trainer import build_trainer


def test_the_mean_replaces_adaptive_average_pooling_with_the_same_numbers():
    network = torchvision.models.resnet18(num_classes=4)
    reference = torchvision.models.resnet18(num_classes=4)
    reference.load_state_dict(network.state_dict())
    make_deterministic(network)
    assert isinstance(network.avgpool, GlobalAveragePool)
    assert network.state_dict().keys() == reference.state_dict().keys()  # checkpoints and exports unchanged
    x = torch.randn(3, 3, 40, 40)
    out, expected = network(x), reference(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(network.conv1.weight.grad, reference.conv1.weight.grad)


@pytest.fixture
def restore_determinism():
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def test_deterministic_true_turns_the_modes_on(write_recipe, tmp_path, restore_determinism):
    config = load_recipe(write_recipe(), [f"run_dir={tmp_path / 'run'}", "max_duration=1ba", "precision=fp32",
                                          "deterministic=true"])
    trainer = build_trainer(config)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert isinstance(trainer.state.model.module.avgpool, GlobalAveragePool)
        trainer.fit()  # every kernel of a training step has a deterministic version (on the CPU)
    finally:
        trainer.close()
    assert int(trainer.state.timestamp.batch) == 1
