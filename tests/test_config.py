import subprocess
import sys

import pytest

from rsb_composer.config import ConfigError, load_config
from rsb_composer.recipe import load_recipe
from tests.helpers import REPO, TRAIN_PY


def test_overrides_parse_as_yaml_scalars(write_recipe):
    cfg = load_config(write_recipe(), ["optimizer.lr=0.3", "data.batch_size=16", "model.compile=true",
                                       "max_duration=5ep"])
    assert cfg.optimizer.lr == 0.3
    assert cfg.data.batch_size == 16
    assert cfg.model.compile is True
    assert cfg.max_duration == "5ep"


def test_defaults_run_name_and_run_dir_from_file_stem(write_recipe):
    cfg = load_config(write_recipe(name="my_recipe.yaml"))
    assert cfg.run_name == "my_recipe"
    assert cfg.run_dir == "runs/my_recipe"


def test_null_override_switches_an_algorithm_off(write_recipe):
    cfg = load_config(write_recipe(), ["algorithms.mixup=null"])
    assert cfg.algorithms["mixup"] is None
    from rsb_composer.algorithms import build_algorithms

    names = [type(a).__name__ for a in build_algorithms(cfg.algorithms)]
    assert names == ["ChannelsLast", "CutMix", "LabelSmoothing"]


def test_exponent_without_dot_is_coerced_to_a_number(write_recipe):
    # PyYAML reads 5e-3 as the string '5e-3'; it must never reach the optimizer as a string.
    cfg = load_config(write_recipe(), ["optimizer.lr=5e-3"])
    assert cfg.optimizer.lr == pytest.approx(0.005)
    assert isinstance(cfg.optimizer.lr, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lrr=0.1"], "unknown config key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
        (["data.batchsize=4"], "did you mean 'data.batch_size'?"),
        (["optimizer.lr=fast"], "optimizer.lr must be a number, got 'fast'"),
        (["data.batch_size=2.5"], "data.batch_size must be an integer, got 2.5"),
        (["model.compile=maybe"], "model.compile must be true or false, got 'maybe'"),
        (["optimizer.lr=0"], "optimizer.lr=0.0: must be > 0"),
        (["optimizer.lr=-1"], "optimizer.lr=-1.0: must be > 0"),
        (["data.batch_size=0"], "data.batch_size=0: must be at least 1"),
        (["precision=fp8"], "precision='fp8': must be one of fp32, amp_fp16, amp_bf16"),
        (["max_duration=ten"], "max_duration='ten': not a Composer time string"),
        (["algorithms.mixupp={alpha: 0.2}"], "unknown algorithm 'algorithms.mixupp'; did you mean 'mixup'?"),
        (["algorithms.mixup.alpah=0.2"], "unknown argument 'algorithms.mixup.alpah'; did you mean 'alpha'?"),
        (["optimizer"], "malformed override 'optimizer'"),
        (["data.source=imagefolder", "data.path=/nonexistent/imagenet"],
         "data.path='/nonexistent/imagenet': no 'train' folder"),
        (["data.source=imagefolder", "data.path=null"], "data.path is not set"),
        (["model.arch=vgg16"], "must name a torchvision ResNet"),
        (["scheduler.warmup_epochs=0.5"], "scheduler.warmup_epochs=0.5: must be 0 (none) or at least 1"),
        # combinations that would hang or contradict each other, with both keys named
        (["model.sync_batchnorm=true", "data.microbatch_size=auto"],
         "model.sync_batchnorm=true with data.microbatch_size=auto: when one rank runs out of memory"),
        (["model.sync_batchnorm=true", "algorithms.ghost_batchnorm={}"],
         "model.sync_batchnorm=true with algorithms.ghost_batchnorm: "),
    ],
)
def test_bad_values_are_refused_with_the_key_named(write_recipe, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(write_recipe(), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_yaml_syntax_error(tmp_path, write_recipe):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = write_recipe("model:\n  arch: [resnet50\n", name="bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: YAML syntax error"):
        load_config(bad)


def test_imagefolder_val_classes_must_exist_in_train(tmp_path, write_recipe):
    for split, classes in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for name in classes:
            (tmp_path / "imnet" / split / name).mkdir(parents=True)
            (tmp_path / "imnet" / split / name / "x.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="val/ has 1 classes that train/ lacks"):
        load_recipe(write_recipe(), ["data.source=imagefolder", f"data.path={tmp_path / 'imnet'}"])


def test_empty_imagefolder_is_refused_before_any_data_work(tmp_path, write_recipe):
    (tmp_path / "imnet" / "train").mkdir(parents=True)
    (tmp_path / "imnet" / "val").mkdir()
    overrides = ["data.source=imagefolder", f"data.path={tmp_path / 'imnet'}"]
    with pytest.raises(ConfigError, match="train/ holds no class folders"):
        load_recipe(write_recipe(), overrides)
    (tmp_path / "imnet" / "train" / "n01440764").mkdir()
    with pytest.raises(ConfigError, match="1 class folders in train/ are empty .first: n01440764."):
        load_recipe(write_recipe(), overrides)


@pytest.mark.slow
def test_train_script_reports_bad_config_in_one_line_with_exit_code_2(write_recipe, subprocess_env):
    result = subprocess.run(
        [sys.executable, str(TRAIN_PY), str(write_recipe()), "optimizer.lr=-0.1"],
        capture_output=True, text=True, env=subprocess_env, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: optimizer.lr=-0.1: must be > 0"


def test_data_augmentations_refuses_randaugment_and_unknown_names_saying_where_they_are_switched_on():
    with pytest.raises(ConfigError, match=r"^data.augmentations.randaugment: randaugment is switched on by "
                                          r"data.auto_augment; set that key$"):
        load_recipe(REPO / "yamls" / "quickstart.yaml", ["data.augmentations.randaugment={}"], check_paths=False)
    with pytest.raises(ConfigError, match=r"^data.augmentations.xyz: no augmentation is switched on under "
                                          r"data.augmentations yet \(randaugment by data.auto_augment\)"):
        load_recipe(REPO / "yamls" / "quickstart.yaml", ["data.augmentations.xyz={}"], check_paths=False)
