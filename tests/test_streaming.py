"""MosaicML streaming: conversion round trip, and training from shards under composer -n 2 and across a resume."""

import collections
import hashlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streaming import StreamingDataset

from rsb_composer.config import ConfigError, ToyConfig
from rsb_composer.data.datasets import list_classes
from rsb_composer.data.streaming import StreamingImages, convert_imagefolder
from rsb_composer.data.toy import ensure_toy_dataset
from tests.helpers import COMPOSER, TRAIN_PY, free_port, metrics_table, read_line, run, same_weights, wait_for

TOY = ToyConfig(num_classes=4, train_per_class=16, val_per_class=6, image_size=40)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, toy_dir):
    root = ensure_toy_dataset(TOY, str(toy_dir))
    out = tmp_path_factory.mktemp("mds") / "toy-mds"
    convert_imagefolder(root, out, progress=False)
    return root, out


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_conversion_round_trip_keeps_images_and_labels(shards, tmp_path):
    root, out = shards
    classes = (out / "classes.txt").read_text().split()
    assert classes == list_classes(root / "train")
    for split in ("train", "val"):
        expected = collections.Counter(
            (classes.index(path.parent.name), _digest(path.read_bytes())) for path in (root / split).rglob("*.jpg")
        )
        dataset = StreamingDataset(local=str(out / split), shuffle=False, batch_size=1)
        got = collections.Counter((int(s["label"]), _digest(s["image"])) for s in (dataset[i] for i in
                                                                                 range(dataset.size)))
        assert got == expected  # the same JPEG bytes, the same labels


def _open_shards(start, done, remote, local, results):
    from rsb_composer.data.streaming import StreamingImages
    start.wait()
    try:
        dataset = StreamingImages(remote, local, "train", shuffle=False, batch_size=4, transform=None, seed=0)
        results.put(dataset._shm_prefix_int)
        done.wait()  # every dataset alive at once, so none can reuse a name another let go
    except Exception as error:  # noqa: BLE001 - the parent reports it
        results.put(repr(error))


@pytest.mark.slow
def test_runs_starting_together_on_one_node_each_get_their_own_shared_memory(shards, tmp_path):
    # Streaming checks for a free shared-memory name, then creates it: without our node lock, runs starting
    # together collide (FileExistsError), as two tests of this file once did on CI; six do nearly every time.
    _, out = shards
    n = 6
    context = multiprocessing.get_context("spawn")
    start, done, results = context.Barrier(n, timeout=120), context.Barrier(n, timeout=120), context.Queue()
    processes = [context.Process(target=_open_shards, args=(start, done, str(out), str(tmp_path / f"cache{i}"),
                                                            results), daemon=True) for i in range(n)]
    try:
        for process in processes:
            process.start()
        prefixes = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    assert all(isinstance(p, int) for p in prefixes), prefixes
    assert len(set(prefixes)) == n


@pytest.mark.slow
def test_a_cache_in_use_and_one_left_registered_get_a_one_line_error_with_the_fix(shards, tmp_path,
                                                                                  subprocess_env):
    # Streaming refuses a cache another live dataset registered, and one a run killed with SIGKILL during start-up
    # left registered; both now say so in one line naming data.local, the second naming what to remove.
    _, out = shards
    cache = tmp_path / "cache"
    hold = ("import time\nfrom rsb_composer.data.streaming import StreamingImages\n"
            f"d = StreamingImages({str(out)!r}, {str(cache)!r}, 'train', shuffle=False, batch_size=4, "
            "transform=None, seed=0)\nprint('registered', flush=True)\ntime.sleep(300)\n")  # alive till killed
    live = subprocess.Popen([sys.executable, "-c", hold], env=subprocess_env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)

    def open_cache():
        return StreamingImages(str(out), str(cache), "train", shuffle=False, batch_size=4, transform=None, seed=0)

    try:
        assert read_line(live, 120, "the holder's registration").strip() == "registered"
        with pytest.raises(ConfigError, match=r"data.local: another streaming dataset on this node reads shards "
                                              r"through .*cache/train"):
            open_cache()
    finally:
        os.killpg(live.pid, signal.SIGKILL)  # with its resource tracker, which would otherwise clean up
        live.wait(timeout=60)
    with pytest.raises(ConfigError, match=r"remove (/dev/shm/\d{6}_\* ?)+\)") as left:
        open_cache()
    for pattern in re.search(r"remove (.*)\)", str(left.value)).group(1).split():
        for path in Path("/").glob(pattern.lstrip("/")):
            path.unlink()
    dataset = open_cache()
    assert dataset.size == 64 and dataset[0][1] in range(4)


@pytest.mark.slow
def test_training_from_shards_under_composer_n2(shards, write_recipe, tmp_path, subprocess_env):
    _, out = shards
    run([*COMPOSER, "-n", "2", "--master_port", free_port(), TRAIN_PY,
          str(write_recipe()), "data.source=streaming", f"data.remote={out}", f"data.local={tmp_path / 'cache'}",
         "max_duration=1ep", "scheduler.warmup_epochs=0"], subprocess_env, tmp_path, timeout=400)
    run_dir = tmp_path / "runs" / "tiny"
    for rank in (0, 1):
        text = (run_dir / "logs" / f"train_rank{rank}.log").read_text()
        assert re.search(rf"rank {rank} of 2 reads 32 of 64 train images", text)
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert (tmp_path / "cache" / "train" / "index.json").exists()  # shards came through the local cache


@pytest.mark.slow
def test_streaming_resumes_mid_epoch_at_the_right_sample(shards, write_recipe, tmp_path, subprocess_env):
    _, out = shards
    recipe = write_recipe()
    common = ["data.source=streaming", f"data.remote={out}", "max_duration=2ep", "scheduler.warmup_epochs=0",
              "checkpoints.save_interval=1ep", "checkpoints.keep_top_k=0"]

    def launch(name):
        return subprocess.Popen([sys.executable, str(TRAIN_PY), str(recipe), *common, f"run_dir={tmp_path / name}",
                                 f"data.local={tmp_path / name / 'cache'}"], env=subprocess_env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    interrupted = launch("b")
    # Epoch 1's checkpoint is written after its last batch's SIGTERM check (callbacks/preemption.py): the flag is
    # read next after a batch of epoch 2, so the signal sent now is answered mid-epoch 2.
    wait_for((tmp_path / "b" / "checkpoints" / "ep1-ba8-rank0.pt").exists, 300, "epoch 1's checkpoint",
             interrupted)
    interrupted.send_signal(signal.SIGTERM)
    output, _ = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 0 and "SIGTERM: saved" in output
    assert 8 < int(re.search(r"SIGTERM: saved .* at epoch 1, batch (\d+)", output).group(1)) < 16  # mid-epoch
    for process in (launch("b"), launch("a")):
        output, _ = process.communicate(timeout=400)
        assert process.returncode == 0, output[-3000:]

    def timestamp(name):
        path = Path(tmp_path / name / "checkpoints" / "latest-rank0.pt")
        return torch.load(path, map_location="cpu", weights_only=False)["state"]["timestamp"]["Timestamp"]

    # Streaming's own resumption: the resumed epoch read only the samples left in it, so both runs end after
    # exactly 2 epochs of 8 batches and 128 samples, and the table has each epoch once; each sample's
    # augmentation comes from its own random stream and the trainer's random state is restored, so the resumed
    # run ends with the uninterrupted run's weights and figures.
    a, b = timestamp("a"), timestamp("b")
    for key in ("epoch", "batch", "sample"):
        assert a[key] == b[key]
    assert (b["batch"], b["sample"]) == (16, 128)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    same_weights(tmp_path / "a", tmp_path / "b")
    assert metrics_table(tmp_path / "a") == metrics_table(tmp_path / "b")
