"""The LR schedule: warmup and cosine per step, against the deployment notes' table and independent formulas;
the timm style against timm's own CosineLRScheduler with each paper recipe's values."""

import math

import pytest
import torch

from rsb_composer import cli
from rsb_composer.config import SchedulerConfig
from rsb_composer.recipe import load_recipe
from rsb_composer.schedules import build_scheduler, lr_multiplier
from tests.helpers import REPO


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


# --- scheduler.style: timm, against timm's own CosineLRScheduler -------------------------------------------------

def timm_epoch_lrs(lr: float, warmup_lr: float, min_lr: float, epochs: int, warmup: int) -> list[float]:
    """The LR of each epoch as the paper's code ran it: timm's create_scheduler(args) built CosineLRScheduler with
    t_initial=epochs (one cycle, no noise, t_in_epochs) and train.py stepped it with step(epoch + 1) after each
    epoch, starting from the warmup LR it sets when built."""
    from timm.scheduler import CosineLRScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs, lr_min=min_lr, cycle_mul=1.0, cycle_decay=0.1,
                                  cycle_limit=1, warmup_t=warmup, warmup_lr_init=warmup_lr, t_in_epochs=True)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch + 1)
    return lrs


def _recipe_timm_lrs(name: str) -> tuple[list[float], object]:
    cfg = load_recipe(REPO / "yamls" / f"{name}.yaml", check_paths=False)
    lr, s = cfg.optimizer.lr, cfg.scheduler
    epochs = int(cfg.max_duration.removesuffix("ep"))
    return timm_epoch_lrs(lr, s.warmup_start_factor * lr, s.min_lr_factor * lr, epochs, int(s.warmup_epochs)), cfg


@pytest.mark.parametrize("name", ["a1", "a2", "a3"])
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_rsb_recipes_lr_at_every_epoch_is_timms(name, world, capsys):
    expected, _ = _recipe_timm_lrs(name)
    assert cli.main(["lr-schedule", str(REPO / "yamls" / f"{name}.yaml"), "--world-size", str(world), "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    got = [float(row.split(",")[1]) for row in rows]
    assert len(got) == len(expected) and got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["a1", "a2", "a3"])
def test_timm_style_holds_each_epochs_lr_for_every_step_of_it(name):
    expected, cfg = _recipe_timm_lrs(name)
    steps_per_epoch = 3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.max_duration, steps_per_epoch)
    seen = []
    for _ in range(len(expected) * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    per_epoch = [expected[step // steps_per_epoch] for step in range(len(seen))]
    assert seen == pytest.approx(per_epoch, rel=1e-9, abs=1e-12)
    # The paper's shape: epoch 0 at the warmup LR, the peak never reached exactly (epoch 5 is cos(5 pi / E) of it).
    assert seen[0] == pytest.approx(1e-4) and max(seen) < cfg.optimizer.lr


def test_a_run_shorter_than_the_warmup_trains_inside_it_with_one_warning(caplog):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = SchedulerConfig(warmup_epochs=2, warmup_start_factor=0.01)
    with caplog.at_level("WARNING"):
        scheduler = build_scheduler(optimizer, cfg, "1ep", 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ends inside the warmup" in warnings[0] and "max_duration=1ep" in warnings[0]
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.01) and seen[-1] < 1.0


def test_the_old_style_name_steps_still_loads_as_per_step_with_a_deprecation_line(caplog):
    old = load_recipe(REPO / "yamls" / "a2_sgd.yaml", ["scheduler.style=steps"], check_paths=False)
    assert old.scheduler.style == "per_step"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["scheduler.style=steps is deprecated: it is now called per_step (same schedule); "
                      "write scheduler.style=per_step"]
    new = load_recipe(REPO / "yamls" / "a2_sgd.yaml", ["scheduler.style=per_step"], check_paths=False)
    assert new.to_dict()["scheduler"] == old.to_dict()["scheduler"]
