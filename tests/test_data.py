import numpy as np
import pytest
import torch
from PIL import Image

from rsb_composer.config import ConfigError, DataConfig, ToyConfig
from rsb_composer.data.datasets import ImageFolderSplit, SyntheticImages, list_classes
from rsb_composer.data.pipelines import PIPELINES
from rsb_composer.data.toy import MARKER, ensure_toy_dataset
from rsb_composer.data.transforms import eval_resize_size

SMALL = ToyConfig(num_classes=3, train_per_class=4, val_per_class=2, image_size=32, seed=5)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*.jpg"))


def test_toy_set_is_an_imagefolder_tree_of_real_jpegs(tmp_path):
    root = ensure_toy_dataset(SMALL, str(tmp_path / "toy"))
    assert list_classes(root / "train") == ["00_circle", "01_square", "02_triangle"]
    assert len(list((root / "train" / "00_circle").glob("*.jpg"))) == 4
    assert len(list((root / "val").rglob("*.jpg"))) == 6
    with Image.open(root / "train" / "01_square" / "00000.jpg") as image:
        assert image.format == "JPEG" and image.size == (32, 32)


def test_toy_generation_is_deterministic_and_reused(tmp_path):
    a = ensure_toy_dataset(SMALL, str(tmp_path / "a"))
    b = ensure_toy_dataset(SMALL, str(tmp_path / "b"))
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    stamp = (a / MARKER).stat().st_mtime_ns
    assert ensure_toy_dataset(SMALL, str(tmp_path / "a")) == a
    assert (a / MARKER).stat().st_mtime_ns == stamp  # reused, not regenerated


def test_toy_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.txt").write_text("do not delete")
    with pytest.raises(ConfigError, match="holds no toy set"):
        ensure_toy_dataset(SMALL, str(tmp_path / "busy"))


def test_classes_are_separable_by_colour_statistics(tmp_path):
    """The toy set is learnable: even mean colour per image separates most classes (a CNN does better)."""
    cfg = ToyConfig(num_classes=4, train_per_class=20, val_per_class=1, image_size=32, seed=1)
    root = ensure_toy_dataset(cfg, str(tmp_path / "toy"))
    hues = []
    for label, name in enumerate(list_classes(root / "train")):
        for path in sorted((root / "train" / name).glob("*.jpg")):
            hsv = np.asarray(Image.open(path).convert("HSV"), dtype=np.float32)
            saturated = hsv[..., 1] > 140
            hues.append((label, float(np.median(hsv[..., 0][saturated])) if saturated.any() else -1.0))
    centres = {lab: np.median([h for l2, h in hues if l2 == lab]) for lab in range(4)}
    correct = sum(min(centres, key=lambda c: abs(centres[c] - h)) == lab for lab, h in hues)
    assert correct / len(hues) > 0.8


def test_val_labels_follow_the_train_class_list(tmp_path):
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["a", "c"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "x.jpg")
    classes = list_classes(tmp_path / "train")
    val = ImageFolderSplit(tmp_path / "val", classes, allow_empty=True)
    # torchvision alone would number val's 'c' as 1; with train's list it stays 2.
    assert sorted(label for _, label in val.samples) == [0, 2]


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_train_and_eval_transforms_shapes_and_resize_rule(pipeline):
    assert eval_resize_size(48, 0.75) == 64
    chosen = PIPELINES.pick(pipeline)
    array = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    image = array if pipeline == "fast" else Image.fromarray(array)
    data = DataConfig(train_resolution=40, interpolation="bicubic", auto_augment="rand-m7-mstd0.5-inc1")
    train = chosen.train_transform(data)(image)
    out = chosen.eval_transform(48, 0.75, "bicubic")(image)
    assert train.shape == (3, 40, 40) and out.shape == (3, 48, 48)
    if pipeline == "fast":  # uint8, normalised later on the device
        assert train.dtype == out.dtype == torch.uint8
    else:
        assert train.dtype == torch.float32 and abs(float(out.mean())) < 3  # normalised


def test_synthetic_images_cycle_labels_and_keep_memory_constant():
    ds = SyntheticImages(num_samples=10_000, num_classes=7, resolution=16)
    assert len(ds) == 10_000 and ds.images.shape[0] == SyntheticImages.POOL
    image, label = ds[9]
    assert image.shape == (3, 16, 16) and label == 2
    assert torch.equal(ds[3][0], ds[3 + SyntheticImages.POOL][0])


class _FreezeProbe(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        import gc

        return gc.get_freeze_count()


def test_workers_leave_the_objects_they_inherit_out_of_garbage_collection(toy_dir):
    """A full collection in a worker writes to every inherited object's header, turning the training process's
    shared pages into private copies; the workers freeze what they inherit first."""
    from rsb_composer.config import DataConfig
    from rsb_composer.data import build_loaders

    data = DataConfig(source="toy", path=str(toy_dir), toy=ToyConfig(4, 16, 6, 40), batch_size=8, num_workers=1)
    init = build_loaders(data, seed=0).train.worker_init_fn
    probe = torch.utils.data.DataLoader(_FreezeProbe(), num_workers=1, worker_init_fn=init)
    assert next(iter(probe)).item() > 10_000  # torch, Composer and the rest, frozen in the worker


# torch (utils/data/dataloader.py) warns when a loader has more workers than the machine's CPUs, as 4 and 6 may be
# here: the counts are what this test is about, and its workers only hand over zeros.
@pytest.mark.filterwarnings("ignore:This DataLoader will create .* worker processes in total:UserWarning:torch")
@pytest.mark.parametrize("workers,timed", [(0, 3), (4, 3), (6, 2)])
def test_bench_datas_clock_starts_once_every_worker_delivered(workers, timed):
    """bench-data's rate is the steady one: the clock starts after one batch per worker (at least 2), so the
    batches that workers 3 to W prepared before it started are not counted as if they came for free, and it stops
    after whole rounds of the workers (their batches arrive in rounds)."""
    from torch.utils.data import DataLoader, TensorDataset

    from rsb_composer.data.throughput import measure_loader, timed_batches, warmup_batches

    assert timed_batches(workers, timed) == {0: 3, 4: 4, 6: 6}[workers]
    needed = max(2, workers) + timed_batches(workers, timed)
    loader = DataLoader(TensorDataset(torch.zeros(needed, 1)), batch_size=1, num_workers=workers)
    assert warmup_batches(loader) == max(2, workers)
    assert measure_loader(loader, timed) > 0
    short = DataLoader(TensorDataset(torch.zeros(needed - 1, 1)), batch_size=1, num_workers=workers)
    with pytest.raises(ValueError, match="ran out before the measurement"):
        measure_loader(short, timed)
