"""``rsb-composer export --format torch|safetensors|timm``: weights others load without this project. The timm
folder loads in timm as the Hub would load it, and timm's own eval transforms, resolved from its config.json, give
``rsb-composer eval``'s accuracy; safetensors load into torchvision's ResNets."""

import csv
import json
import shutil

import pytest
import torch
import torchvision
import yaml

from rsb_composer import cli, train
from rsb_composer.checkpoints.safe_load import model_weights
from rsb_composer.config import ToyConfig
from rsb_composer.data.toy import ensure_toy_dataset
from tests.helpers import tiny_recipe

TOY = ToyConfig(num_classes=4, train_per_class=16, val_per_class=6, image_size=40)


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return model_weights(torch.load(checkpoint, map_location="cpu", weights_only=False), prefer_ema=True)[0]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_dir):
    """A tiny run trained at 24 px and evaluated at 32 (as A3 trains at 160 and tests at 224)."""
    work = tmp_path_factory.mktemp("export")
    recipe = work / "tiny.yaml"
    recipe.write_text(tiny_recipe(toy_dir).replace("train_resolution: 32", "train_resolution: 24"))
    run_dir = work / "runs" / "tiny"
    # One epoch of two steps, so the checkpoint holds a val/acc1 for the model card.
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=1ep", "scheduler.warmup_epochs=0",
                       "data.batch_size=32", "checkpoints.keep_top_k=0"]) == 0
    return recipe, run_dir


def _timm_accuracy(model, val_dir, use_test_size=True) -> tuple[float, int]:
    """Top-1 of a timm model on a folder, in a plain PyTorch loop with timm's own eval transforms."""
    import timm.data
    from torchvision.datasets import ImageFolder

    config = timm.data.resolve_data_config(model=model, use_test_size=use_test_size)
    dataset = ImageFolder(str(val_dir), transform=timm.data.create_transform(**config))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return right / len(dataset), len(dataset)


def test_timm_export_loads_in_timm_and_reproduces_eval(run, tmp_path, toy_dir, capsys):
    import safetensors.torch
    import timm

    recipe, run_dir = run
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"
    out = tmp_path / "hub"
    capsys.readouterr()
    assert cli.main(["export", str(checkpoint), str(out), "--format", "timm"]) == 0  # recipe: the run's config.yaml
    assert "local-dir:" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 4
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 24, 24] and cfg["test_input_size"] == [3, 32, 32]
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"]) == (0.875, "center", "bilinear")
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "timm"
    with open(run_dir / "metrics.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert f"| val/acc1 | {float(last['val/acc1']):.4f}" in card and "| epochs trained | 1 (recipe: 1ep)" in card
    assert "/tiny/" not in card.split("Resolved recipe")[1]  # data and run paths stay private

    weights = safetensors.torch.load_file(out / "model.safetensors")
    assert _same(weights, _weights(checkpoint))
    # As the Hub loads it (config.json, then model.safetensors) ...
    hub = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert _same(hub.state_dict(), weights)
    # ... and by file: timm keeps the classifier only when the overlay names the class count too.
    by_file = timm.create_model("resnet18", pretrained=True, num_classes=4,
                                pretrained_cfg_overlay={"file": str(out / "model.safetensors"), "num_classes": 4})
    assert _same(by_file.state_dict(), weights)
    dropped = timm.create_model("resnet18", pretrained=True, num_classes=4,
                                pretrained_cfg_overlay={"file": str(out / "model.safetensors")})
    assert not torch.equal(dropped.fc.weight, weights["fc.weight"])  # timm's fresh classifier: why README says so

    # timm's eval transforms from config.json, in a plain loop, give eval's val/acc1 (to one image on the fast
    # pipeline, whose resize kernel is torch's; exactly on the reference pipeline, torchvision's as timm's).
    val_dir = ensure_toy_dataset(TOY, str(toy_dir)) / "val"
    acc1, images = _timm_accuracy(hub, val_dir)
    for pipeline, tolerance in (("fast", 1 / images), ("reference", 0.0)):
        capsys.readouterr()
        assert cli.main(["eval", str(recipe), str(checkpoint), "data.train_resolution=24",
                         f"data.pipeline={pipeline}", "--json"]) == 0
        ours = json.loads(capsys.readouterr().out)["results"][0]["val/acc1"]
        assert abs(ours - acc1) <= tolerance + 1e-6, (pipeline, ours, acc1)  # torchmetrics: float32


def test_safetensors_export_loads_into_torchvision(run, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    _, run_dir = run
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"
    out = tmp_path / "resnet18.safetensors"
    assert cli.main(["export", str(checkpoint), str(out), "--format", "safetensors"]) == 0
    model = torchvision.models.resnet18(num_classes=4)
    model.load_state_dict(load_file(out))  # strict
    assert _same(model.state_dict(), _weights(checkpoint))
    with safe_open(out, "pt") as handle:
        assert handle.metadata() == {"format": "pt", "arch": "resnet18", "num_classes": "4", "weights": "training"}


def test_export_formats_refusals(run, tmp_path, capsys):
    recipe, run_dir = run
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"

    def refused(*args) -> str:
        capsys.readouterr()
        assert cli.main(["export", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        return err

    assert "must be one of torch, safetensors, timm" in refused(checkpoint, tmp_path / "x", "--format", "onnx")
    # Outside its run folder a checkpoint has no config.yaml beside it: the recipe must be given ...
    alone = tmp_path / "alone.pt"
    shutil.copy(checkpoint, alone)
    assert "pass --config RECIPE.yaml" in refused(alone, tmp_path / "hub", "--format", "timm")
    other = tmp_path / "other.yaml"
    other.write_text(recipe.read_text().replace("arch: resnet18", "arch: resnet34"))
    assert "model.arch=resnet34" in refused(alone, tmp_path / "hub", "--format", "timm", "--config", other)
    assert cli.main(["export", str(alone), str(tmp_path / "hub"), "--format", "timm", "--config", str(recipe)]) == 0
    # A network changed by BlurPool is no plain ResNet, whatever the format.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state"]["model"]["module.layer1.0.conv2.filt2d"] = torch.ones(64, 1, 3, 3)
    blurred = tmp_path / "blurred.pt"
    torch.save(state, blurred)
    for fmt in ("torch", "safetensors", "timm"):
        assert "BlurPool" in refused(blurred, tmp_path / f"b-{fmt}", "--format", fmt, "--config", recipe)
    # Each format's own check, before anything is written: a one-file format refuses a folder, timm a file.
    for fmt in ("torch", "safetensors"):
        assert f"--out {tmp_path / 'hub'}: is a folder" in refused(checkpoint, tmp_path / "hub", "--format", fmt)
    (tmp_path / "a.pt").write_bytes(b"")
    assert "exists and is not a folder" in refused(checkpoint, tmp_path / "a.pt", "--format", "timm")
    assert (tmp_path / "a.pt").read_bytes() == b""


@pytest.mark.slow
def test_resnet50_exports_load_into_torchvision_and_timm_as_documented(tmp_path, toy_dir, capsys):
    """The issue's own calls, on an ImageNet-shaped network (ResNet-50, 1000 classes)."""
    import timm
    from safetensors.torch import load_file

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(tiny_recipe(toy_dir))
    run_dir = tmp_path / "run"
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=1ba", "checkpoints.keep_top_k=0",
                       "model.arch=resnet50", "model.num_classes=1000"]) == 0
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"
    out = tmp_path / "resnet50.safetensors"
    assert cli.main(["export", str(checkpoint), str(out), "--format", "safetensors"]) == 0
    model = torchvision.models.resnet50()
    model.load_state_dict(load_file(out))
    assert _same(model.state_dict(), _weights(checkpoint))
    hub = tmp_path / "hub"
    assert cli.main(["export", str(checkpoint), str(hub), "--format", "timm"]) == 0
    loaded = timm.create_model("resnet50", pretrained=True, num_classes=1000,
                               pretrained_cfg_overlay={"file": str(hub / "model.safetensors")})
    assert _same(loaded.state_dict(), model.state_dict())
