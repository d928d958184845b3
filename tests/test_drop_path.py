"""Stochastic depth as timm's drop-path (the paper's) through Composer's StochasticDepth: timm's per-block rates and
forward, and the evaluated network equal to the exported one, for new checkpoints and for ones trained with
Composer's own version (whose evaluation scale is folded into the export)."""

import timm
import torch
import torchvision
from composer.functional import apply_stochastic_depth
from torchvision.models.resnet import Bottleneck

from rsb_composer import cli
from rsb_composer.checkpoints.export import export_checkpoint
from rsb_composer.drop_path import DROP_PATH_TARGET
from rsb_composer.recipe import load_recipe
from rsb_composer.trainer import build_eval_trainer, build_trainer
from tests.helpers import REPO, TINY_TOY


def _drop_path_resnet50(rate: float = 0.05) -> torch.nn.Module:
    import rsb_composer.algorithms  # noqa: F401 - registers the drop-path target with Composer

    model = torchvision.models.resnet50()
    apply_stochastic_depth(model, DROP_PATH_TARGET, stochastic_method="sample", drop_rate=rate,
                           drop_distribution="linear")
    return model


def test_per_block_rates_are_timms_rule():
    ours = [m.drop_rate for m in _drop_path_resnet50().modules() if isinstance(m, Bottleneck)]
    reference = timm.create_model("resnet50", drop_path_rate=0.05)
    theirs = [b.drop_path.drop_prob if b.drop_path is not None else 0.0 for b in reference.modules()
              if isinstance(b, timm.models.resnet.Bottleneck)]
    assert len(ours) == 16 and ours == theirs
    assert ours[0] == 0.0 and ours[-1] == 0.05 and ours[1] == 0.05 / 15  # rate x i / (n - 1)


def test_training_and_evaluation_compute_what_timms_resnet50_computes():
    """Same weights in timm's resnet50 (the paper's network, drop_path_rate 0.05) and in ours: with the same random
    numbers, training-mode outputs agree (kept samples scaled by 1/keep) and evaluation is the plain network."""
    ours = _drop_path_resnet50()
    reference = timm.create_model("resnet50", drop_path_rate=0.05)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):
        ours.train(mode)
        reference.train(mode)
        torch.manual_seed(0)
        expected = reference(x)
        torch.manual_seed(0)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)
    plain = torchvision.models.resnet50().eval()
    plain.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), plain(x))


def test_a_bottleneck_drops_whole_samples_and_scales_the_kept_ones_by_one_over_keep():
    model = _drop_path_resnet50()
    block = model.layer1[1]
    block.drop_rate = 0.5
    block.train()
    torch.manual_seed(0)
    x = torch.randn(64, 256, 8, 8)
    identity = torch.relu(x)
    with torch.no_grad():
        branch = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        out = block(x)
    kept = torch.relu(x + branch / 0.5)
    per_sample = [bool(torch.allclose(o, k, atol=1e-5)) for o, k in zip(out, kept, strict=True)]
    dropped = [bool(torch.allclose(o, identity[i], atol=1e-6)) for i, o in enumerate(out)]
    assert all(a or b for a, b in zip(per_sample, dropped, strict=True))
    assert 16 < sum(per_sample) < 48  # about half kept


SMALL = ["data.source=toy", f"data.toy={TINY_TOY}", "data.train_resolution=32", "data.eval_resolution=32",
         "data.num_workers=0", "data.global_batch_size=8", "data.microbatch_size=4", "max_duration=1ba",
         "progress_bar=false", "precision=fp32", "checkpoints.keep_top_k=0"]


def _trained_looking(model: torch.nn.Module) -> None:
    """BatchNorm as after training (the recipe zero-initialises each block's bn3, which would hide any scale)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.5)
            bn.bias.normal_(0.0, 0.1, generator=generator)
            bn.running_mean.normal_(0.0, 0.2, generator=generator)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) * 1.5 + 0.5)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _a1_checkpoint(tmp_path, toy_dir, *overrides):
    """The A1 recipe's training network (built by the trainer, stochastic depth's surgery done) with trained-looking
    BatchNorm, saved as a checkpoint; the config, the file and the network's evaluation output on a fixed input."""
    config = load_recipe(REPO / "yamls" / "a1.yaml", [*SMALL, f"data.path={toy_dir}", f"run_dir={tmp_path / 'run'}",
                                                      *overrides])
    trainer = build_trainer(config)
    network = trainer.state.model.module
    _trained_looking(network)
    path = tmp_path / "a1.pt"
    trainer.save_checkpoint(str(path))
    network.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        evaluated = network(x)
    trainer.close()
    return config, path, x, evaluated


def _exported(path, out, x):
    export_checkpoint(path, out)
    model = torchvision.models.resnet50(num_classes=4).eval()
    model.load_state_dict(torch.load(out, weights_only=True))
    with torch.no_grad():
        return model(x)


def _eval_network(config, path, x):
    trainer = build_eval_trainer(config, path)
    network = trainer.state.model.module.eval()
    with torch.no_grad():
        out = network(x.contiguous(memory_format=torch.channels_last))
    trainer.close()
    return out


def test_the_exported_a1_network_computes_what_evaluation_computes(tmp_path, toy_dir):
    config, path, x, evaluated = _a1_checkpoint(tmp_path, toy_dir)
    assert _relative(_exported(path, tmp_path / "a1.pth", x), evaluated) < 1e-4
    assert _relative(_eval_network(config, path, x), evaluated) < 1e-4


def test_a_checkpoint_of_composers_own_stochastic_depth_exports_with_its_scale_folded_in(tmp_path, toy_dir, capsys):
    """Composer's version multiplies each branch by its keep probability at evaluation: export and eval fold that
    into bn3 and say so; without the fold the plain network computes something else."""
    config, path, x, evaluated = _a1_checkpoint(tmp_path, toy_dir,
                                                "algorithms.stochastic_depth.target_layer_name=ResNetBottleneck")
    raw = torchvision.models.resnet50(num_classes=4).eval()
    raw.load_state_dict({k.removeprefix("module."): v for k, v in
                         torch.load(path, weights_only=False)["state"]["model"].items()})
    with torch.no_grad():
        assert _relative(raw(x), evaluated) > 1e-3  # what an export without the fold would compute
    assert _relative(_exported(path, tmp_path / "a1.pth", x), evaluated) < 1e-4
    assert _relative(_eval_network(config, path, x), evaluated) < 1e-4
    capsys.readouterr()
    assert cli.main(["export", str(path), str(tmp_path / "again.pth")]) == 0
    note = capsys.readouterr().out.splitlines()[0]
    assert note.startswith("note: ") and "trained with Composer's stochastic depth" in note
    assert "folded into the 16 blocks' bn3" in note
