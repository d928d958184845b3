"""The pre-flight checklist and the trainer-vs-plain-loop benchmark, on the CPU."""

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "rsb_composer.cli"]


def _cli(*args, env=None, cwd=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def _lines(result):
    return {line.split("]", 1)[1].split(":", 1)[0].strip(): line for line in result.stdout.splitlines()
            if line.startswith("[")}


def test_preflight_passes_on_toy_data(write_recipe, tmp_path, subprocess_env):
    result = _cli("preflight", write_recipe(), "--batches", "3", env=subprocess_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result)
    for title in ("configuration", "data readable", "train loader speed", "devices", "world size and LR", "W&B",
                  "disk for checkpoints", "time estimate"):
        assert title in lines and "[FAIL]" not in lines[title]
    assert "train 64 images, val 24 images, 4 classes" in lines["data readable"]
    assert "images/s per process" in lines["train loader speed"]
    assert "global batch 8" in lines["world size and LR"]
    assert result.stdout.strip().endswith("(0 failing, 1 warnings)") or "preflight: ready" in result.stdout


@pytest.mark.parametrize(
    ("override", "title", "message"),
    [
        ("data.path={missing}", "data readable", "no 'train' folder"),
        ("data.batch_size=0", "configuration", "data.batch_size=0: must be at least 1"),
        ("data.batch_size=4096", "data readable", "share of the train split"),
    ],
)
def test_preflight_fails_with_the_line_that_says_what_to_fix(write_recipe, tmp_path, subprocess_env, override,
                                                             title, message):
    overrides = ["data.source=imagefolder", override.format(missing=tmp_path / "nowhere")]
    if "missing" not in override:
        overrides = [override]
    result = _cli("preflight", write_recipe(), *overrides, "--batches", "2", env=subprocess_env, cwd=tmp_path)
    assert result.returncode == 1
    line = _lines(result)[title]
    assert line.startswith("[FAIL]") and message in line
    assert "preflight: NOT READY" in result.stdout


def test_bench_train_reports_the_trainer_and_the_plain_loop(write_recipe, tmp_path, subprocess_env):
    result = _cli("bench-train", write_recipe(), "--steps", "3", "--warmup", "1", "--repeats", "2", "--json",
                  env=subprocess_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["images_per_sec"] > 0 and figures["plain_images_per_sec"] > 0
    assert figures["timed_steps"] == 6  # 3 pairs in each of 2 runs, after the warm-up
    assert figures["ratio"] == pytest.approx(figures["images_per_sec"] / figures["plain_images_per_sec"])
    no_warmup = _cli("bench-train", write_recipe(), "--warmup", "0", env=subprocess_env, cwd=tmp_path)
    assert no_warmup.returncode == 2 and "--warmup and --repeats of at least 1" in no_warmup.stderr


def test_bench_data_times_the_configured_loader_beside_the_reference(write_recipe, tmp_path, subprocess_env):
    result = _cli("bench-data", write_recipe(), "data.auto_augment=rand-m7-mstd0.5-inc1", "--batches", "3",
                  "--reference", "--json", env=subprocess_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["images_per_sec"] > 0 and figures["reference_images_per_sec"] > 0
    assert figures["ratio"] == pytest.approx(figures["images_per_sec"] / figures["reference_images_per_sec"])
    synthetic = _cli("bench-data", write_recipe(), "data.source=synthetic", "--reference", env=subprocess_env,
                     cwd=tmp_path)
    assert synthetic.returncode == 2 and "has no images to decode" in synthetic.stderr


def test_bench_index_lists_a_generated_tree_and_keeps_its_index(tmp_path, subprocess_env):
    result = _cli("bench-index", str(tmp_path / "tree"), "--files", "200", "--json", env=subprocess_env,
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # bench_index itself refuses an index whose samples differ from torchvision's listing.
    assert figures["files"] == 200 and figures["classes"] == 200
    assert all(figures[k] > 0 for k in ("torchvision_listing_s", "first_start_s", "later_start_s"))
    assert (tmp_path / "tree" / "train.rsb-index.json").is_file()
