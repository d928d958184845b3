"""The kept ImageFolder index: the same samples as torchvision, read back while the tree is unchanged, rebuilt when
it changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from rsb_composer.data import index_cache
from rsb_composer.data.datasets import ImageFolderSplit


def make_tree(root: Path) -> Path:
    split = root / "train"
    for name, files in {"b_cls": ["2.jpg", "1.JPEG", "notes.txt"], "a_cls": ["x.png", "sub/y.jpg", "sub/deeper/z.jpg"],
                        "c_cls": ["only.jpeg"]}.items():
        for file in files:
            path = split / name / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    age(split)
    return split


def age(split: Path, seconds: float = 600) -> None:
    """Date every folder back, as a tree that was not just written (the index distrusts fresh folders); each a
    second apart, as real folders are (the index refuses trees whose folders all share one time)."""
    for offset, folder in enumerate([split, *(p for p in split.rglob("*") if p.is_dir())]):
        past = time.time() - seconds - offset
        os.utime(folder, (past, past))


CLASSES = {"a_cls": 0, "b_cls": 1, "c_cls": 2}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def count_walks(monkeypatch) -> list[int]:
    walks = [0]
    real = index_cache._walk

    def counting(*args):
        walks[0] += 1
        return real(*args)

    monkeypatch.setattr(index_cache, "_walk", counting)
    return walks


def test_same_samples_as_torchvision_then_read_from_the_index(tmp_path, monkeypatch):
    split = make_tree(tmp_path / "data")
    walks = count_walks(monkeypatch)
    expected = make_dataset(str(split), CLASSES, IMG_EXTENSIONS)
    first = list(ImageFolderSplit(split, list(CLASSES)).samples)
    assert first == expected and walks[0] == 1
    assert (tmp_path / "data" / "train.rsb-index.npz").is_file()  # beside the data
    second = list(ImageFolderSplit(split, list(CLASSES)).samples)
    assert second == expected and walks[0] == 1  # not listed again


@pytest.mark.parametrize("change", ["add", "remove", "rename", "new_subfolder"])
def test_a_changed_tree_is_listed_again(tmp_path, monkeypatch, change):
    split = make_tree(tmp_path / "data")
    ImageFolderSplit(split, list(CLASSES))
    folder = split / "b_cls"
    if change == "add":
        (folder / "3.jpg").write_bytes(b"")
    elif change == "remove":
        (folder / "2.jpg").unlink()
    elif change == "rename":
        (folder / "2.jpg").rename(folder / "4.jpg")
    else:
        (folder / "new").mkdir()
        (folder / "new" / "5.jpg").write_bytes(b"")
    age(split, seconds=300)  # older than the index, but not the mtimes it recorded
    walks = count_walks(monkeypatch)
    samples = list(ImageFolderSplit(split, list(CLASSES)).samples)
    assert walks[0] == 1
    assert samples == make_dataset(str(split), CLASSES, IMG_EXTENSIONS)


def test_a_tree_changed_just_before_listing_is_not_trusted(tmp_path, monkeypatch):
    split = make_tree(tmp_path / "data")
    (split / "c_cls" / "fresh.jpg").write_bytes(b"")  # c_cls modified now: a same-tick change could hide
    monkeypatch.setattr(index_cache, "MTIME_SLACK_NS", 300 * 10**9)  # "just before", however slow this machine
    ImageFolderSplit(split, list(CLASSES))
    walks = count_walks(monkeypatch)
    ImageFolderSplit(split, list(CLASSES))
    assert walks[0] == 1


def test_a_file_added_while_the_tree_is_being_walked_is_seen_next_start(tmp_path, monkeypatch):
    split = make_tree(tmp_path / "data")
    real = index_cache._list_folder

    def listing_then_adding(top, folders, directory):
        listed = real(top, folders, directory)
        if top.endswith("a_cls"):  # a writer adds a file just after the walk has listed a_cls
            Path(top, "late.jpg").write_bytes(b"")
        return listed

    monkeypatch.setattr(index_cache, "_list_folder", listing_then_adding)
    first = list(ImageFolderSplit(split, list(CLASSES)).samples)
    assert not any(path.endswith("late.jpg") for path, _ in first)
    monkeypatch.setattr(index_cache, "_list_folder", real)
    second = list(ImageFolderSplit(split, list(CLASSES)).samples)
    assert second == make_dataset(str(split), CLASSES, IMG_EXTENSIONS)
    assert any(path.endswith("late.jpg") for path, _ in second)


def test_folders_all_of_one_time_keep_no_index(tmp_path):
    split = make_tree(tmp_path / "data")
    for folder in [split, *(p for p in split.rglob("*") if p.is_dir())]:
        os.utime(folder, (1_000_000, 1_000_000))  # as object-store mounts report them
    ImageFolderSplit(split, list(CLASSES))
    assert not any(path.exists() for path in index_cache.index_paths(split))


def test_an_index_that_is_not_ours_is_ignored(tmp_path):
    split = make_tree(tmp_path / "data")
    (tmp_path / "data" / "train.rsb-index.npz").write_text("[1, 2]")
    assert list(ImageFolderSplit(split, list(CLASSES)).samples) == make_dataset(str(split), CLASSES, IMG_EXTENSIONS)


def test_index_is_readable_by_others(tmp_path):
    split = make_tree(tmp_path / "data")
    ImageFolderSplit(split, list(CLASSES))
    assert (tmp_path / "data" / "train.rsb-index.npz").stat().st_mode & 0o777 == 0o644


def test_unwritable_data_folder_keeps_the_index_in_the_cache(tmp_path, monkeypatch):
    split = make_tree(tmp_path / "data")
    # A folder where the index file would go: writing beside the data fails (as on a read-only mount; chmod
    # would not stop root).
    (tmp_path / "data" / "train.rsb-index.npz").mkdir()
    ImageFolderSplit(split, list(CLASSES))
    walks = count_walks(monkeypatch)
    assert list(ImageFolderSplit(split, list(CLASSES)).samples) == make_dataset(str(split), CLASSES, IMG_EXTENSIONS)
    assert walks[0] == 0
    assert len(list((tmp_path / "cache" / "rsb-composer" / "index").glob("train-*.npz"))) == 1


def test_empty_class_error_is_torchvisions(tmp_path):
    split = make_tree(tmp_path / "data")
    (split / "d_cls").mkdir()
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes d_cls"):
        ImageFolderSplit(split, [*CLASSES, "d_cls"])
    assert len(ImageFolderSplit(split, [*CLASSES, "d_cls"], allow_empty=True, use_index=False).samples) == 6


def test_samples_are_arrays_not_a_python_object_per_file(tmp_path):
    """Workers copy every page of Python objects they read (reference counts): the sample list is three arrays,
    and reading it back from the index makes no object per file."""
    import sys

    import numpy as np

    split = tmp_path / "data" / "train"
    for c in range(3):
        (split / f"c{c}").mkdir(parents=True)
        for i in range(1000):
            (split / f"c{c}" / f"{i}.jpg").write_bytes(b"")
    age(split)
    classes = ["c0", "c1", "c2"]
    expected = make_dataset(str(split), dict(zip(classes, range(3), strict=True)), IMG_EXTENSIONS)
    ImageFolderSplit(split, classes)  # lists the tree and keeps the index
    before = sys.getallocatedblocks()
    samples = ImageFolderSplit(split, classes).samples
    assert sys.getallocatedblocks() - before < 300  # 3000 files: a list of tuples would add 6000 blocks
    assert all(isinstance(a, np.ndarray) for a in (samples.paths, samples.offsets, samples.labels))
    assert list(samples) == expected and samples[-1] == expected[-1] and samples.label(1500) == 1
