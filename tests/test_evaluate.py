"""``rsb-composer eval`` the paper's way: ImageNet-ReaL labels, another folder labelled by class index (ImageNet-V2),
a test-resolution sweep, flip test-time augmentation, and the JSON report."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from rsb_composer import cli, train
from rsb_composer.config import ConfigError, ToyConfig
from rsb_composer.data.real_labels import load_real_labels, name_order, real_correct
from rsb_composer.data.split_dirs import folder_labels
from rsb_composer.data.toy import ensure_toy_dataset
from rsb_composer.tools.evaluate import _hflip, parse_resolutions
from tests.helpers import TINY_RECIPE, TINY_TOY

TOY = ToyConfig(num_classes=4, train_per_class=16, val_per_class=6, image_size=40)


def _recipe(folder: Path, data_path: Path) -> Path:
    """The tiny recipe on an ImageNet-style folder (data.source=imagefolder)."""
    text = TINY_RECIPE.format(toy_dir=data_path, toy=TINY_TOY).replace("source: toy", "source: imagefolder")
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def _train(recipe: Path, run_dir: Path) -> Path:
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=2ba", "checkpoints.keep_top_k=0"]) == 0
    return run_dir / "checkpoints" / "latest-rank0.pt"


def _eval(capsys, *args) -> dict:
    """``rsb-composer eval ARGS --json``'s object; the table went to stderr."""
    capsys.readouterr()
    assert cli.main(["eval", *map(str, args), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1  # stdout is the JSON object alone
    assert "resolution" in captured.err  # the table, on the terminal
    return json.loads(captured.out)


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory, toy_dir):
    """The toy set as ImageNet lays it out: val images named ILSVRC2012_val_<n>.JPEG, n shuffled across the class
    folders, so the order of file names is not ImageFolder's (class folder, then name). Returns (root, the label
    of each val image in file-name order)."""
    toy = ensure_toy_dataset(TOY, str(toy_dir))
    root = tmp_path_factory.mktemp("imagenet_like")
    val_files = [(path, label) for label, folder in enumerate(sorted((toy / "val").iterdir()))
                 for path in sorted(folder.iterdir())]
    numbers = list(range(1, len(val_files) + 1))
    random.Random(0).shuffle(numbers)
    labels = [0] * len(val_files)
    for (path, label), number in zip(val_files, numbers, strict=True):
        (root / "val" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "val" / path.parent.name / f"ILSVRC2012_val_{number:08d}.JPEG")
        labels[number - 1] = label
    for folder in sorted((toy / "train").iterdir()):
        shutil.copytree(folder, root / "train" / folder.name)
    return root, labels


@pytest.fixture(scope="module")
def trained(imagenet_like, tmp_path_factory):
    root, labels = imagenet_like
    work = tmp_path_factory.mktemp("trained")
    recipe = _recipe(work, root)
    return recipe, _train(recipe, work / "run"), labels


def test_real_labels_follow_reals_protocol(trained, tmp_path, capsys):
    recipe, checkpoint, labels = trained
    real = tmp_path / "real.json"

    def with_real(entries):
        real.write_text(json.dumps(entries))
        return _eval(capsys, recipe, checkpoint, "--real-labels", real)

    # Every image's own label: ReaL's accuracy is the val accuracy (only if images are matched by file name).
    own = with_real([[label] for label in labels])
    row = own["results"][0]
    # (val/acc1 is torchmetrics' float32, real/acc1 a Python fraction: equal to float32's precision.)
    assert row["real/acc1"] == pytest.approx(row["val/acc1"], abs=1e-6) and own["real_images"] == len(labels)
    assert 0 < row["val/acc1"] < 1  # so the next check tells right from wrong
    # Every label but its own: exactly the images val gets wrong are right.
    others = with_real([[c for c in range(4) if c != label] for label in labels])["results"][0]
    assert others["real/acc1"] == pytest.approx(1 - row["val/acc1"])
    # Every label valid: every prediction is right; images without a valid label are left out.
    mixed = with_real([[] if i % 3 == 0 else [0, 1, 2, 3] for i in range(len(labels))])
    assert mixed["results"][0]["real/acc1"] == 1.0 and mixed["real_images"] == len(labels) - 8


def test_real_labels_refuses_a_file_of_another_length_or_class_count(trained, tmp_path, capsys):
    recipe, checkpoint, labels = trained
    real = tmp_path / "real.json"
    for entries, words in (([[0]] * (len(labels) - 1), ["23 entries", "24 images"]),
                           ([[0]] * 5 + [[0, 4]] + [[0]] * (len(labels) - 6), ["entry 5", "label 4", "4 classes"])):
        real.write_text(json.dumps(entries))
        capsys.readouterr()
        assert cli.main(["eval", str(recipe), str(checkpoint), "--real-labels", str(real)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(word in err for word in words), err


def test_real_label_order_is_by_file_name_across_class_folders():
    paths = ["val/b/ILSVRC2012_val_00000002.JPEG", "val/a/ILSVRC2012_val_00000003.JPEG",
             "val/a/ILSVRC2012_val_00000001.JPEG"]
    assert name_order(paths) == [1, 2, 0]
    assert real_correct(torch.tensor([3, 1, 2, 0]), [[3], [], [5, 2], [1]]) == (2, 3)


def test_real_labels_read_back_per_sample(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("[[1], [], [0, 2]]")
    paths = ["c/x_3.JPEG", "a/x_1.JPEG", "b/x_2.JPEG"]  # x_1 is entry 0, x_2 entry 1, x_3 entry 2
    assert load_real_labels(real, paths, 3) == [[0, 2], [1], []]
    real.write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="not ReaL's format"):
        load_real_labels(real, paths, 3)


def test_split_dir_folder_labels(tmp_path):
    classes = [f"n{i:08d}" for i in range(12)]
    by_index = tmp_path / "v2"
    for i in range(12):
        (by_index / str(i)).mkdir(parents=True)
    labels, notice = folder_labels(by_index, classes)
    assert labels == {str(i): i for i in range(12)}  # '10' is class 10, not 2 (string order)
    assert "mapped numerically" in notice and "folder '10' is class 10" in notice
    by_name = tmp_path / "named"
    for name in classes[3:5]:
        (by_name / name).mkdir(parents=True)
    assert folder_labels(by_name, classes) == ({classes[3]: 3, classes[4]: 4}, None)
    # Training classes that are themselves numbers (sorted as strings) map by name: the network learnt them so.
    numeric = sorted(str(i) for i in range(12))
    assert folder_labels(by_index, numeric)[0]["10"] == numeric.index("10") == 2
    for make, words in ((["12"], ["folder '12'", "12 classes (0-11)"]), (["odd"], ["folder 'odd'", "neither"]),
                        ([classes[0], "7"], ["folder '7'", "name them all one way"])):
        bad = tmp_path / f"bad-{make[-1]}"
        for name in make:
            (bad / name).mkdir(parents=True)
        with pytest.raises(ConfigError) as err:
            folder_labels(bad, classes)
        assert all(word in str(err.value) for word in words), err.value


@pytest.fixture(scope="module")
def twelve_classes(tmp_path_factory, toy_dir):
    """A 12-class ImageNet-style set made of copies of toy images (the toy generator has at most 10 classes)."""
    toy = ensure_toy_dataset(TOY, str(toy_dir))
    root = tmp_path_factory.mktemp("twelve")
    shapes = sorted((toy / "train").iterdir())
    for c in range(12):
        source = shapes[c % 4].name
        picks = sorted((toy / "train" / source).iterdir())[c // 4 * 2:c // 4 * 2 + 2]
        for split, files in (("train", picks), ("val", sorted((toy / "val" / source).iterdir())[c // 4 * 2:][:2])):
            (root / split / f"c{c:02d}").mkdir(parents=True)
            for path in files:
                shutil.copy(path, root / split / f"c{c:02d}" / path.name)
    recipe = _recipe(root, root)
    return root, recipe, _train(recipe, root / "run")


def test_index_named_folders_give_the_class_named_result(twelve_classes, capsys):
    root, recipe, checkpoint = twelve_classes
    val = _eval(capsys, recipe, checkpoint)["results"][0]
    by_index = root / "v2"  # ImageNet-V2's layout: folder k holds class k
    for k in range(12):
        shutil.copytree(root / "val" / f"c{k:02d}", by_index / str(k))
    capsys.readouterr()
    assert cli.main(["eval", str(recipe), str(checkpoint), "--split-dir", str(by_index), "--json"]) == 0
    captured = capsys.readouterr()
    assert "mapped numerically" in captured.err and len([ln for ln in captured.err.splitlines() if "note:" in ln]) == 1
    report = json.loads(captured.out)
    assert report["split"] == str(by_index) and report["images"] == 24
    assert report["results"][0] == pytest.approx(val, rel=1e-6)
    # What string order would have done (folder '10' read as class 2, ...) gives another loss: the check bites.
    strings = sorted(str(k) for k in range(12))
    misread = root / "misread"
    for k in range(12):
        shutil.copytree(root / "val" / f"c{k:02d}", misread / f"c{strings.index(str(k)):02d}")
    wrong = _eval(capsys, recipe, checkpoint, "--split-dir", misread)["results"][0]
    assert wrong["val/loss"] != pytest.approx(val["val/loss"], rel=1e-3)


def test_resolution_sweep_gives_one_row_per_resolution(trained, capsys):
    recipe, checkpoint, _ = trained
    sweep = _eval(capsys, recipe, checkpoint, "--resolutions", "24,32,40")["results"]
    assert [row["resolution"] for row in sweep] == [24, 32, 40]
    assert set(sweep[0]) == {"resolution", "val/loss", "val/acc1", "val/acc5"}
    # A row is what the recipe gives at that eval_resolution (the recipe's own is 32).
    alone = _eval(capsys, recipe, checkpoint, "data.eval_resolution=40")["results"][0]
    assert alone == pytest.approx(sweep[2], rel=1e-6)
    assert sweep[0]["val/loss"] != pytest.approx(sweep[1]["val/loss"], rel=1e-3)
    for text in ("24,x", "8,32"):
        with pytest.raises(ConfigError, match="--resolutions"):
            parse_resolutions(text)


def test_hflip_averages_the_image_and_its_mirror(trained, tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 3))

    class Classifier:  # what _hflip needs of Composer's ComposerClassifier
        def eval_forward(self, batch):
            return model(batch[0])

    x = torch.randn(2, 3, 4, 5)
    expected = (model(x) + model(x.flip(-1))) / 2
    torch.testing.assert_close(_hflip(Classifier(), (x, torch.zeros(2))), expected)

    # End to end: with flip TTA a mirrored val folder scores as the original (losslessly mirrored, as PNG).
    recipe, checkpoint, _ = trained
    root = Path(next(line for line in recipe.read_text().splitlines() if "path:" in line).split("path:")[1].strip())
    mirrored = tmp_path / "mirrored"
    for path in (root / "val").rglob("*.JPEG"):
        (mirrored / path.parent.name).mkdir(parents=True, exist_ok=True)
        image = Image.open(path).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT)
        image.save(mirrored / path.parent.name / f"{path.stem}.png")
    flipped = _eval(capsys, recipe, checkpoint, "--tta", "hflip")
    assert flipped["tta"] == "hflip"
    tta = flipped["results"][0]
    tta_mirrored = _eval(capsys, recipe, checkpoint, "--tta", "hflip", "--split-dir", mirrored)["results"][0]
    assert tta_mirrored == pytest.approx(tta, rel=1e-4)
    plain = _eval(capsys, recipe, checkpoint)["results"][0]
    plain_mirrored = _eval(capsys, recipe, checkpoint, "--split-dir", mirrored)["results"][0]
    assert plain_mirrored["val/loss"] != pytest.approx(plain["val/loss"], rel=1e-4)
