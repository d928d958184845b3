"""Reading checkpoints outside training: ``eval`` and ``export`` refuse files that are not checkpoints or would
run code, and ``eval`` needs the val split only (class names from the train split's folders)."""

import json
import os
import shutil

import torch

from rsb_composer import cli, train
from rsb_composer.config import ToyConfig
from rsb_composer.data.toy import ensure_toy_dataset

TOY = ToyConfig(num_classes=4, train_per_class=16, val_per_class=6, image_size=40)


def _printed(out: str) -> dict[str, float]:
    """The one row of ``eval --json``'s object, without the resolution."""
    (row,) = json.loads(out.splitlines()[-1])["results"]
    return {key: value for key, value in row.items() if key != "resolution"}


def test_eval_and_export_refuse_a_checkpoint_that_would_run_code(tmp_path, write_recipe, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state": {"model": {}}, "extra": Payload()}, evil)
    for args in (["export", str(evil), str(tmp_path / "out.pth")], ["eval", str(write_recipe()), str(evil)]):
        assert cli.main(args) == 2 and not marker.exists()
        err = capsys.readouterr().err
        assert "refusing to unpickle posix.system" in err and "--trust-checkpoint" in err
        assert len(err.strip().splitlines()) == 1


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    for target, message in ((tmp_path / "missing.pt", "checkpoint not found"),
                            (tmp_path / "notes.txt", "not a checkpoint")):
        assert cli.main(["export", str(target), str(tmp_path / "o.pth")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_eval_reads_no_train_images(toy_dir, write_recipe, tmp_path, capsys):
    """A train split of one image per class (smaller than a batch) is enough: eval lists only val/."""
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=2ba"]) == 0
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"

    full = ensure_toy_dataset(TOY, str(toy_dir))
    sparse = tmp_path / "sparse"
    shutil.copytree(full / "val", sparse / "val")
    for folder in sorted((full / "train").iterdir()):
        (sparse / "train" / folder.name).mkdir(parents=True)
        shutil.copy(next(folder.iterdir()), sparse / "train" / folder.name)
    capsys.readouterr()
    assert cli.main(["eval", str(recipe), str(checkpoint), "--json"]) == 0
    expected = _printed(capsys.readouterr().out)
    assert cli.main(["eval", str(recipe), str(checkpoint), "data.source=imagefolder", f"data.path={sparse}",
                     "--json"]) == 0
    assert _printed(capsys.readouterr().out) == expected
    assert set(expected) == {"val/loss", "val/acc1", "val/acc5"}


def test_eval_of_another_networks_checkpoint_says_what_differs(write_recipe, tmp_path, capsys):
    recipe = write_recipe()
    run_dir = tmp_path / "run"
    assert train.main([str(recipe), f"run_dir={run_dir}", "max_duration=1ba"]) == 0
    checkpoint = run_dir / "checkpoints" / "latest-rank0.pt"
    capsys.readouterr()
    assert cli.main(["eval", str(recipe), str(checkpoint), "model.arch=resnet34"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "its network is not the recipe's" in errors[0] and "missing (first: layer1.2." in errors[0]
