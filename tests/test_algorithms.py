import logging
import warnings

import numpy as np
import pytest
import torch
from composer.core import Event

from rsb_composer.algorithms import REGISTRY, MixUpOrCutMix, build_algorithms, check_algorithms


def test_every_listed_composer_vision_algorithm_is_reachable_by_name():
    for name in ("blurpool", "channels_last", "colout", "cutmix", "ema", "label_smoothing", "mixup",
                 "progressive_resizing", "randaugment", "sam", "stochastic_depth"):
        assert name in REGISTRY


def test_present_means_on_null_means_off_and_order_is_kept():
    algos = build_algorithms({"channels_last": {}, "blurpool": None, "ema": {"half_life": "10ba"}})
    assert [type(a).__name__ for a in algos] == ["ChannelsLast", "EMA"]


def test_mixup_and_cutmix_together_become_one_algorithm_and_label_smoothing_follows_it():
    algos = build_algorithms({"label_smoothing": {"smoothing": 0.1}, "cutmix": {"alpha": 1.0},
                              "mixup": {"alpha": 0.2}})
    assert [type(a).__name__ for a in algos] == ["MixUpOrCutMix", "LabelSmoothing"]
    combined = algos[0]
    assert combined.mixup.alpha == 0.2 and combined.cutmix.alpha == 1.0


class _FakeState:
    """The slice of Composer's State that MixUp and CutMix touch."""

    def __init__(self, batch):
        self.batch = batch
        self.outputs = torch.zeros(len(batch[1]), 10)

    def batch_get_item(self, key):
        return self.batch[key]

    def batch_set_item(self, key, value):
        items = list(self.batch)
        items[key] = value
        self.batch = tuple(items)


def test_each_batch_gets_exactly_one_of_mixup_or_cutmix_half_the_time():
    np.random.seed(0)
    torch.manual_seed(0)
    combined = build_algorithms({"mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0}})[0]
    assert isinstance(combined, MixUpOrCutMix)
    kinds = []
    for _ in range(200):
        images = torch.rand(8, 3, 16, 16)
        state = _FakeState((images, torch.arange(8)))
        combined.apply(Event.BEFORE_FORWARD, state, logger=None)
        kind = "cutmix" if combined.active is combined.cutmix else "mixup"
        # The batch is exactly what the chosen algorithm alone makes of it, so the other one did not touch it.
        if kind == "mixup":
            lam, idx = combined.mixup.mixing, combined.mixup.indices
            torch.testing.assert_close(state.batch[0], images * (1 - lam) + images[idx] * lam)
        else:
            # Outside the box nothing changed (no blending); inside, every pixel comes from the permuted image.
            x1, y1, x2, y2 = combined.cutmix._bbox
            inside = torch.zeros(16, 16, dtype=torch.bool)
            inside[x1:x2, y1:y2] = True
            torch.testing.assert_close(state.batch[0][..., ~inside], images[..., ~inside])
            torch.testing.assert_close(state.batch[0][..., inside],
                                       images[combined.cutmix._indices][..., inside])
        combined.apply(Event.BEFORE_LOSS, state, logger=None)
        assert state.batch[1].shape == (8, 10)  # targets mixed once, by the chosen algorithm
        torch.testing.assert_close(state.batch[1].sum(dim=1), torch.ones(8))
        kinds.append(kind)
    share = kinds.count("cutmix") / len(kinds)
    assert 0.38 < share < 0.62


def test_mismatched_interpolate_loss_is_refused():
    from rsb_composer.config import ConfigError

    with pytest.raises(ConfigError, match="interpolate_loss"):
        build_algorithms({"mixup": {"interpolate_loss": True}, "cutmix": {}})


def test_checking_a_recipe_leaves_composers_construction_warnings_to_the_trainer(caplog):
    section = {"stochastic_depth": {"target_layer_name": "ResNetBottleneck", "stochastic_method": "sample",
                                    "drop_rate": 0.05}, "sam": {"rho": 0.5}}
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        check_algorithms(section)  # what show-config and preflight run
        assert not caplog.records and not warned
        build_algorithms(section)  # what the trainer runs: Composer's warnings stand
    assert any("Stochastic depth has known issues" in r.getMessage() for r in caplog.records)
    assert any("SAM has known issues" in str(w.message) for w in warned)
