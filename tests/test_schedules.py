"""The LR schedule: warmup and cosine per step, against the deployment notes' table and independent formulas."""

import math

import pytest
import torch

from rsb_composer.config import SchedulerConfig
from rsb_composer.schedules import build_scheduler, lr_multiplier


def reference_lr(epoch: int, epochs: int, peak: float, warmup: int = 5, start: float = 0.01) -> float:
    """Independent formula: torchvision's LinearLR(start, total_iters=warmup-1) then CosineAnnealingLR."""
    if epoch < warmup:
        return peak * (start + (1 - start) * min(epoch / (warmup - 1), 1.0))
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def test_warmup_matches_the_deployment_notes_table():
    cfg = SchedulerConfig(warmup_epochs=5, warmup_start_factor=0.01)
    got = [0.5 * lr_multiplier(e, 600, cfg) for e in range(6)]
    assert got == pytest.approx([0.005, 0.12875, 0.2525, 0.37625, 0.5, 0.5])


def test_cosine_falls_to_zero_at_the_end_and_matches_the_formula():
    cfg = SchedulerConfig(warmup_epochs=5)
    for epoch in (5, 50, 100, 300, 500, 599):
        assert 0.5 * lr_multiplier(epoch, 600, cfg) == pytest.approx(reference_lr(epoch, 600, 0.5))
    assert lr_multiplier(600, 600, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(599, 600, cfg) < 1e-4
    floor = SchedulerConfig(warmup_epochs=5, min_lr_factor=0.1)
    assert lr_multiplier(600, 600, floor) == pytest.approx(0.1)


def test_scheduler_steps_every_batch_and_hits_the_table_at_epoch_starts():
    steps_per_epoch = 7
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=5), "20ep", steps_per_epoch)
    seen = []
    for _ in range(20 * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    starts = seen[::steps_per_epoch]
    assert starts[:6] == pytest.approx([0.005, 0.12875, 0.2525, 0.37625, 0.5, 0.5])
    assert starts[10] == pytest.approx(reference_lr(10, 20, 0.5))
    # Within warmup the LR rises every step, not once per epoch.
    assert seen[1] > seen[0] and seen[2] > seen[1]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_batch_denominated_duration():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=0), "30ba", 10)
    for _ in range(15):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # half way through the cosine
