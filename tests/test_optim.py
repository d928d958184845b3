"""Optimizers: the registry, parameter groups, the LR scaling rule, and Lion as a one-entry addition."""

import pytest
import torch

from rsb_composer.config import ConfigError, OptimizerConfig
from rsb_composer.optim import OPTIMIZERS, build_optimizer, check_optimizer, scaled_lr


@pytest.mark.parametrize(("per_device", "world", "expected"), [(256, 1, 0.5), (256, 2, 1.0), (256, 4, 2.0),
                                                                (256, 8, 4.0), (64, 1, 0.125)])
def test_linear_scaling_rule(per_device, world, expected):
    # The deployment notes' table: 0.5 per 256 images, scaled by the global batch.
    cfg = OptimizerConfig(lr=0.5, reference_batch_size=256)
    assert scaled_lr(cfg, per_device * world) == pytest.approx(expected)


def test_no_weight_decay_on_batchnorm_and_bias_when_asked():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    optimizer = build_optimizer(model, OptimizerConfig(weight_decay=0.01, decay_bn_and_bias=False), lr=0.1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4, 2}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias
    single = build_optimizer(model, OptimizerConfig(weight_decay=0.01), lr=0.1)
    assert len(single.param_groups) == 1 and single.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_keeps_the_state_tensors_its_entry_declares(name):
    """The registry's state count (what the checkpoint and memory estimates use) is what the optimizer keeps."""
    model = torch.nn.Linear(8, 4)
    optimizer = build_optimizer(model, OptimizerConfig(name=name, weight_decay=0.01), lr=0.01)
    model(torch.randn(16, 8)).square().mean().backward()
    optimizer.step()
    for param in model.parameters():
        same_size = [v for v in optimizer.state[param].values()
                     if isinstance(v, torch.Tensor) and v.shape == param.shape]
        assert len(same_size) == OPTIMIZERS[name].state_tensors, (name, list(optimizer.state[param]))


def reference_lion(weight, grad, exp_avg, lr, betas, weight_decay):
    """One Lion step (Chen et al. 2023, Algorithm 2), written out independently of timm."""
    beta1, beta2 = betas
    weight = weight * (1 - lr * weight_decay)
    weight = weight - lr * torch.sign(beta1 * exp_avg + (1 - beta1) * grad)
    return weight, beta2 * exp_avg + (1 - beta2) * grad


def test_lion_from_the_registry_takes_the_papers_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3, bias=False)
    optimizer = build_optimizer(model, OptimizerConfig(name="lion", betas=[0.9, 0.99], weight_decay=0.1), lr=1e-3)
    assert type(optimizer).__name__ == "Lion"
    weight, exp_avg = model.weight.detach().clone(), torch.zeros_like(model.weight)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 6)).square().sum().backward()
        weight, exp_avg = reference_lion(weight, model.weight.grad, exp_avg, 1e-3, (0.9, 0.99), 0.1)
        optimizer.step()
        torch.testing.assert_close(model.weight.detach(), weight)


def test_betas_left_out_take_each_optimizers_own_default():
    model = torch.nn.Linear(2, 2)
    lion = build_optimizer(model, OptimizerConfig(name="lion"), lr=1e-4)
    lamb = build_optimizer(model, OptimizerConfig(name="lamb"), lr=1e-3)
    assert lion.param_groups[0]["betas"] == (0.9, 0.99) and lamb.param_groups[0]["betas"] == (0.9, 0.999)


def test_an_unknown_optimizer_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"optimizer.name='loin': must be one of .*lion.*; did you mean 'lion'\?"):
        check_optimizer(OptimizerConfig(name="loin"))


def test_an_optimizers_check_is_the_checks_of_the_options_it_reads_and_no_option_escapes_its_check():
    with pytest.raises(ConfigError, match=r"^optimizer.betas=\[0.9, 1.5\]: must be \[beta1, beta2\]"):
        check_optimizer(OptimizerConfig(name="lamb", betas=[0.9, 1.5]))
    with pytest.raises(ConfigError, match=r"^optimizer.nesterov=True: needs optimizer.momentum > 0$"):
        check_optimizer(OptimizerConfig(name="sgd", nesterov=True, momentum=0.0))
    # A value no optimizer could take is refused even where the chosen one does not read it.
    with pytest.raises(ConfigError, match=r"^optimizer.momentum=1.5: must be in \[0, 1\)$"):
        check_optimizer(OptimizerConfig(name="lamb", momentum=1.5))
    with pytest.raises(ConfigError, match=r"^optimizer.eps=-1.0: must be > 0$"):
        check_optimizer(OptimizerConfig(name="sgd", eps=-1.0))
    with pytest.raises(ConfigError, match=r"^optimizer.lr=0.0: must be > 0$"):
        check_optimizer(OptimizerConfig(name="lion", lr=0.0))
    assert all(OPTIMIZERS.doc(name) for name in OPTIMIZERS)
