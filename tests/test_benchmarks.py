"""The benchmarks as a user runs them: bench-train, bench-data and bench-index through the CLI."""

import json

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow


def _figures(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_train_reports_the_trainer_and_the_plain_loop(write_recipe, tmp_path, subprocess_env):
    figures = _figures(cli("bench-train", write_recipe(), "--steps", "3", "--warmup", "1", "--repeats", "2",
                           "--json", env=subprocess_env, cwd=tmp_path))
    assert figures["images_per_sec"] > 0 and figures["plain_images_per_sec"] > 0
    assert figures["timed_steps"] == 6  # 3 pairs in each of 2 runs, after the warm-up
    assert figures["ratio"] == pytest.approx(figures["images_per_sec"] / figures["plain_images_per_sec"])
    no_warmup = cli("bench-train", write_recipe(), "--warmup", "0", env=subprocess_env, cwd=tmp_path, expect=2)
    assert "--warmup and --repeats of at least 1" in no_warmup.stderr


def test_bench_data_times_the_configured_loader_beside_the_reference(write_recipe, tmp_path, subprocess_env):
    figures = _figures(cli("bench-data", write_recipe(), "data.auto_augment=rand-m7-mstd0.5-inc1", "--batches", "3",
                           "--reference", "--json", env=subprocess_env, cwd=tmp_path))
    assert figures["images_per_sec"] > 0 and figures["reference_images_per_sec"] > 0
    assert figures["ratio"] == pytest.approx(figures["images_per_sec"] / figures["reference_images_per_sec"])
    synthetic = cli("bench-data", write_recipe(), "data.source=synthetic", "--reference", env=subprocess_env,
                    cwd=tmp_path, expect=2)
    assert "has no images to decode" in synthetic.stderr


def test_bench_index_lists_a_generated_tree_and_keeps_its_index(tmp_path, subprocess_env):
    figures = _figures(cli("bench-index", tmp_path / "tree", "--files", "200", "--json", env=subprocess_env,
                           cwd=tmp_path))
    # bench_index itself refuses an index whose samples differ from torchvision's listing.
    assert figures["files"] == 200 and figures["classes"] == 200
    assert all(figures[k] > 0 for k in ("torchvision_listing_s", "first_start_s", "later_start_s"))
    assert (tmp_path / "tree" / "train.rsb-index.npz").is_file()
