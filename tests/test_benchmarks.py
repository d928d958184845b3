"""The benchmarks as a user runs them: bench-train, bench-data, bench-index and bench-resume-load through the CLI."""

import json

import pytest
import torch

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


def test_bench_memory_reads_an_epoch_of_a_generated_tree_and_reports_worker_growth(tmp_path, subprocess_env):
    figures = _figures(cli("bench-memory", tmp_path / "tree", "--files", "2000", "--batch-size", "100", "--json",
                           env=subprocess_env, cwd=tmp_path))
    assert figures["files"] == figures["images"] == 2000 and figures["batches"] == 20
    assert len(figures["worker_private_mib_epoch_end"]) == 2 and figures["worker_private_mib_first_batch"][0] > 0
    first, last = figures["worker_private_mib_first_batch"], figures["worker_private_mib_epoch_end"]
    growth = [b - a for a, b in zip(first, last, strict=True)]
    assert figures["worker_growth_mib"] == pytest.approx(max(growth))  # the worse worker of the two columns
    assert (tmp_path / "tree" / "train.rsb-index.npz").is_file()


def test_bench_resume_starts_late_resumes_at_their_batch(write_recipe, tmp_path, subprocess_env):
    result = cli("bench-resume", write_recipe(), "--points", "0.75", "--json", env=subprocess_env, cwd=tmp_path)
    figures = _figures(result)
    assert figures["steps_per_epoch"] == 8 and figures["replay"] is False
    assert [(p["fraction"], p["batch_in_epoch"]) for p in figures["points"]] == [(0.75, 6)]
    assert figures["points"][0]["seconds_to_first_batch"] > 0
    assert "resuming epoch 1 at batch 6: the train sampler starts at sample 48" in result.stderr
    replayed = cli("bench-resume", write_recipe(), "--points", "0.75", "--replay", env=subprocess_env, cwd=tmp_path)
    assert "the train sampler starts" not in replayed.stderr  # no data position: Composer replays the epoch


def test_bench_syncs_counts_no_reads_between_forward_and_backward(write_recipe, tmp_path, subprocess_env):
    figures = _figures(cli("bench-syncs", write_recipe(), "--steps", "2", "--warmup", "1", "--json",
                           env=subprocess_env, cwd=tmp_path))
    assert figures["steps"] == 2 and figures["reads_between_forward_and_backward_per_step"] == 0
    assert ("cuda_syncs_per_step" in figures) == torch.cuda.is_available()  # counted only where CUDA runs


def test_bench_resume_load_times_both_loads_of_a_checkpoint_the_trainer_wrote(write_recipe, tmp_path, subprocess_env):
    figures = _figures(cli("bench-resume-load", write_recipe(), "--repeats", "2", "--json", env=subprocess_env,
                           cwd=tmp_path))
    assert figures["checkpoint_mib"] > 40  # resnet18 (45 MB of weights) with its optimizer's momentum
    assert figures["full_unpickling_s"] > 0 and figures["data_only_s"] > 0 and figures["repeats"] == 2
    assert figures["added_s"] == pytest.approx(figures["data_only_s"] - figures["full_unpickling_s"])
