"""docs/development.md's worked examples of adding an optimizer, a loss, a launcher and an export format: each
runs as written inside the module it belongs to, and the new choice then works through the project's own code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy
import pytest
import torch
import torchvision

from rsb_composer import launch, losses, optim
from rsb_composer.checkpoints import export
from rsb_composer.checkpoints.resnet_weights import Network
from rsb_composer.config import Choices, ConfigError, OptimizerConfig
from tests.helpers import REPO

PAGE = (REPO / "docs" / "development.md").read_text()


def example(heading: str) -> str:
    """The python block under ``### heading`` (the first one before the next heading)."""
    section = PAGE.split(f"\n### {heading}\n", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"docs/development.md: no python example under '### {heading}'"
    return blocks[0]


@contextmanager
def added(heading: str, module: ModuleType, registry: Choices, name: str) -> Iterator[dict[str, Any]]:
    """Run the example as if written at the end of ``module``; its entry is taken out again afterwards."""
    namespace = dict(vars(module))
    exec(compile(example(heading), f"docs/development.md ({heading})", "exec"), namespace)
    try:
        assert name in registry and registry.incomplete() == {}
        yield namespace
    finally:
        registry.remove(name)


def test_the_optimizer_example_trains_and_keeps_the_state_it_declares():
    with added("An optimizer", optim, optim.OPTIMIZERS, "adan"):
        model = torch.nn.Linear(3, 2)
        optimizer = optim.build_optimizer(model, OptimizerConfig(name="adan"), lr=0.01)
        before = model.weight.detach().clone()
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        assert not torch.equal(before, model.weight)
        state = optimizer.state[model.weight]
        per_parameter = [t for t in state.values() if torch.is_tensor(t) and t.shape == model.weight.shape]
        assert len(per_parameter) == optim.OPTIMIZERS["adan"].state_tensors


def test_the_loss_example_is_focal_loss_and_checks_gamma():
    with added("A loss", losses, losses.LOSSES, "focal") as namespace:
        logits, target = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
        p = torch.softmax(logits, dim=1)[torch.arange(5), target]
        expected = (-(1 - p) ** 2 * p.log()).mean()
        focal = losses.LOSSES["focal"].build(gamma=2.0)
        assert torch.allclose(focal(logits, target), expected)
        soft = torch.nn.functional.one_hot(target, 4).float()  # mixed targets arrive as probabilities
        assert torch.allclose(focal(logits, soft), expected)
        with pytest.raises(ConfigError, match=r"^loss.gamma=-1.0: must be >= 0$"):
            namespace["_check_focal"](SimpleNamespace(gamma=-1.0))


def test_the_launcher_example_completes_an_mpi_world():
    with added("A launcher", launch, launch.LAUNCHERS, "mpi"):
        launch.LAUNCHERS["single"] = launch.LAUNCHERS.pop("single")  # written above `single`, as the page says
        env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
               "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "node0"}
        found = launch.detect(env)
        assert (found.launcher, found.nodes) == ("mpi", 2)
        assert found.added == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                               "NODE_RANK": "1", "MASTER_PORT": "29500"}
        with pytest.raises(launch.LaunchError, match="MASTER_ADDR is not"):
            launch.detect({k: v for k, v in env.items() if k != "MASTER_ADDR"})


def test_the_export_format_example_writes_the_networks_arrays(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    network = Network({k: v.contiguous() for k, v in model.state_dict().items()}, "resnet18", 3, is_ema=False,
                      checkpoint=tmp_path / "x.pt", epoch=None, val_acc1=None)
    with added("An export format", export, export.FORMATS, "npz"):
        out = tmp_path / "resnet18.npz"
        export.FORMATS.check("npz", network, out, None)
        how = export.FORMATS["npz"].write(network, out, None)
        assert how.startswith(f"numpy.load({str(out)!r})")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet18.npz"]  # no temporary file left
        with numpy.load(out) as arrays:
            assert sorted(arrays.files) == sorted(network.weights)
            for name, tensor in network.weights.items():
                assert numpy.array_equal(arrays[name], tensor.numpy())
        with pytest.raises(ConfigError, match="is a folder"):
            export.FORMATS.check("npz", network, tmp_path, None)
