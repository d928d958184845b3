"""LAMB as configured by the recipes, checked step by step against a from-scratch reference implementation."""

import torch

from rsb_composer.config import OptimizerConfig
from rsb_composer.optim import build_optimizer


def reference_lamb(params_groups, grads, state, lr, betas=(0.9, 0.999), eps=1e-6, max_grad_norm=1.0):
    """One LAMB step (You et al. 2019, NVIDIA FusedLAMB): global gradient-norm clip, Adam moments with bias
    correction, decoupled weight decay, then the layer-wise trust ratio ||w|| / ||update|| for decayed params."""
    b1, b2 = betas
    flat = torch.cat([g.flatten() for g in grads.values()])
    clip = max(flat.norm().item() / max_grad_norm, 1.0)
    state["step"] = state.get("step", 0) + 1
    t = state["step"]
    for group in params_groups:
        for name, w in group["params"]:
            g = grads[name] / clip
            m = state.setdefault(("m", name), torch.zeros_like(w))
            v = state.setdefault(("v", name), torch.zeros_like(w))
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            if group["weight_decay"] > 0:
                update = update + group["weight_decay"] * w
                w_norm, u_norm = w.norm(), update.norm()
                trust = (w_norm / u_norm) if (w_norm > 0 and u_norm > 0) else torch.tensor(1.0)
            else:
                trust = torch.tensor(1.0)  # timm: no trust ratio where there is no weight decay
            w.sub_(lr * trust * update)


def test_lamb_matches_the_reference_for_three_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))
    ref_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = OptimizerConfig(name="lamb", weight_decay=0.02, decay_bn_and_bias=False, max_grad_norm=1.0)
    optimizer = build_optimizer(model, cfg, lr=5e-3)
    groups = [
        {"params": [(n, ref_params[n]) for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": 0.02},
        {"params": [(n, ref_params[n]) for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    state = {}
    for _ in range(3):
        x = torch.randn(8, 3, 8, 8)
        loss = model(x).pow(2).mean() * 50  # large gradients, so the global-norm clip is exercised
        optimizer.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        assert torch.cat([g.flatten() for g in grads.values()]).norm() > 1.0
        optimizer.step()
        reference_lamb(groups, grads, state, lr=5e-3)
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.detach(), ref_params[name], rtol=1e-5, atol=1e-7)
