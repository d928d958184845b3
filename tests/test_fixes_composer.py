"""Composer's workarounds (rsb_composer/composer_fixes/): for each, the test of the upstream behaviour it works
around on the installed Composer (``test_upstream_<name>``: the upgrade check, see tests/test_composer_fixes.py)
and the tests of its own job."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import warnings

import composer.loss
import composer.loss.utils
import pytest
import torch
import torch.nn.functional as F
from composer.utils import checkpoint, dist

from rsb_composer.composer_fixes import (
    checkpoint_loading,
    one_hot,
    rng_resume,
    signal_files,
    soft_cross_entropy,
)
from rsb_composer.config import ConfigError
from tests.helpers import host_reads, unpatched, upstream_verdict

# --- signal_files ------------------------------------------------------------------------------------------------

def _names_on_two_nodes(function, monkeypatch) -> list[str]:
    """The signal file names node 0 and node 1 get, each with its own random draw, rank 0's broadcast delivered."""
    sent: list[object] = []

    def broadcast_object_list(objects: list[object], src: int = 0) -> None:
        if sent:
            objects[:] = sent
        else:
            sent[:] = objects

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_object_list)
    names = []
    for node in (0, 1):
        monkeypatch.setattr(dist, "get_node_rank", lambda node=node: node)
        names.append(function(random.Random(node)))
    return names


def test_upstream_signal_files(monkeypatch):
    node0, node1 = _names_on_two_nodes(unpatched(dist.get_node_signal_file_name), monkeypatch)
    assert node0.startswith("._signal_file_node0_")
    upstream_verdict("signal_files", node1 == node0, "gives node 1 node 0's signal file name")


def test_each_node_gets_its_own_signal_file_with_the_shared_random_part(monkeypatch):
    node0, node1 = _names_on_two_nodes(signal_files.per_node(unpatched(dist.get_node_signal_file_name)), monkeypatch)
    assert node0.startswith("._signal_file_node0_") and node1.startswith("._signal_file_node1_")
    assert node0.rsplit("_", 1)[1] == node1.rsplit("_", 1)[1]


# --- checkpoint_loading ------------------------------------------------------------------------------------------

class _Planted:
    """Unpickling it makes a folder: the sign that loading ran code from the file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _planted_checkpoint(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "latest-rank0.pt"
    torch.save({"state": {"model": {"w": torch.ones(2)}}, "extra": _Planted(str(marker))}, path)
    return path, marker


def test_upstream_checkpoint_loading(tmp_path):
    path, marker = _planted_checkpoint(tmp_path)
    with contextlib.suppress(pickle.UnpicklingError):  # a weights-only load refuses it: upstream fixed
        unpatched(checkpoint._torch_load_with_validation)(str(path), "cpu")
    upstream_verdict("checkpoint_loading", marker.exists(), "loads checkpoints with torch.load(weights_only=False)")


def test_checkpoints_load_as_data_and_a_planted_one_is_refused_unless_trusted(tmp_path):
    load = checkpoint_loading.data_only(unpatched(checkpoint._torch_load_with_validation))
    plain = tmp_path / "plain.pt"
    torch.save({"state": {"model": {"w": torch.ones(2)}}}, plain)
    assert torch.equal(load(str(plain), "cpu")["state"]["model"]["w"], torch.ones(2))
    path, marker = _planted_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match=r"latest-rank0.pt: refusing to unpickle posix.mkdir .*checkpoints.trust"):
        load(str(path), "cpu")
    assert not marker.exists()
    checkpoint_loading.trust(True)
    try:
        load(str(path), "cpu")
    finally:
        checkpoint_loading.trust(False)
    assert marker.exists()  # knowingly accepted: Composer's own full unpickling


# --- rng_resume --------------------------------------------------------------------------------------------------

def _trainer_draws(tmp_path, restore: bool = False, **kwargs) -> dict[int, float]:
    """torch.rand() at each batch's forward of a tiny run whose train dataset resumes by itself."""
    from composer import Trainer
    from composer.core import Callback
    from composer.models import ComposerClassifier
    from torch.utils.data import DataLoader, Dataset

    class Resumable(Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int):
            return torch.full((4,), float(index)), index % 2

        def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, int]:
            return {"sample_in_epoch": num_samples}

        def load_state_dict(self, state) -> None:  # dataset resumption: Composer does not replay the epoch
            pass

    draws: dict[int, float] = {}

    class Draws(Callback):
        def before_forward(self, state, logger) -> None:
            draws[int(state.timestamp.batch)] = torch.rand(1).item()

    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    trainer = Trainer(model=model, optimizers=torch.optim.SGD(model.parameters(), lr=0.1), max_duration="3ba",
                      train_dataloader=DataLoader(Resumable(), batch_size=2), callbacks=[Draws()], device="cpu",
                      progress_bar=False, log_to_console=False, seed=1, **kwargs)
    if restore:
        rng_resume.restore_rng_on_dataset_resume(trainer)
    trainer.fit()
    trainer.close()
    return draws


def test_upstream_rng_resume(tmp_path):
    uninterrupted = _trainer_draws(tmp_path, save_folder=str(tmp_path), save_interval="1ba",
                                   save_filename="ba{batch}.pt")
    resumed = _trainer_draws(tmp_path, load_path=str(tmp_path / "ba1.pt"))
    assert set(resumed) == {1, 2}
    upstream_verdict("rng_resume", resumed[1] != uninterrupted[1],
                     "leaves the random state unrestored on a mid-epoch resume through dataset resumption")


def test_a_mid_epoch_resume_draws_as_the_uninterrupted_run(tmp_path):
    uninterrupted = _trainer_draws(tmp_path, save_folder=str(tmp_path), save_interval="1ba",
                                   save_filename="ba{batch}.pt")
    resumed = _trainer_draws(tmp_path, restore=True, load_path=str(tmp_path / "ba1.pt"))
    assert resumed == {1: uninterrupted[1], 2: uninterrupted[2]}


# --- one_hot -----------------------------------------------------------------------------------------------------

def test_upstream_one_hot():
    reads = host_reads(unpatched(composer.loss.utils._one_hot), torch.tensor([3, 0, 9]), num_classes=10, dim=1)
    upstream_verdict("one_hot", reads > 0, "reads its labels into Python (_one_hot)")


def test_one_hot_without_reads_gives_composers_tensor():
    original = unpatched(composer.loss.utils._one_hot)
    patched = one_hot.without_reads(original)
    labels = torch.tensor([3, 0, 9, 9, 1])
    assert torch.equal(patched(labels, num_classes=10, dim=1), original(labels, num_classes=10, dim=1))
    assert host_reads(patched, labels, num_classes=10, dim=1) == 0
    with pytest.warns(UserWarning, match="Negative label"):
        expected = original(torch.tensor([2, -1, 0]), num_classes=4, dim=1)
    assert torch.equal(patched(torch.tensor([2, -1, 0]), num_classes=4, dim=1), expected)  # a zero row


# --- soft_cross_entropy ------------------------------------------------------------------------------------------

def _soft_targets() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    a, b = F.one_hot(torch.randint(0, 10, (8,)), 10).float(), F.one_hot(torch.randint(0, 10, (8,)), 10).float()
    return torch.randn(8, 10), 0.7 * a + 0.3 * b


def test_upstream_soft_cross_entropy():
    reads = host_reads(composer.loss.soft_cross_entropy, *_soft_targets())
    upstream_verdict("soft_cross_entropy", reads > 0, "reads the targets' total probability into Python")


def test_our_soft_cross_entropy_reads_nothing_and_gives_composers_loss():
    """Bit for bit, every argument: tests/test_losses.py (the loss.name=cross_entropy the recipes build)."""
    logits, targets = _soft_targets()
    assert host_reads(soft_cross_entropy.soft_cross_entropy, logits, targets) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Composer's "less than 1 total probability" (float rounding of 0.7 + 0.3)
        expected = composer.loss.soft_cross_entropy(logits, targets)
    assert torch.equal(soft_cross_entropy.soft_cross_entropy(logits, targets), expected)
    # Where Composer raised (no probability at all), a NaN loss: callbacks.divergence stops the run.
    assert soft_cross_entropy.soft_cross_entropy(logits, torch.zeros_like(targets)).isnan()


# --- wandb_download ----------------------------------------------------------------------------------------------

def test_upstream_wandb_download(monkeypatch):
    wandb = pytest.importorskip("wandb")
    from composer.loggers import WandBLogger

    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: None)  # no API key or network needed
    try:
        WandBLogger(project="p").download_file("latest", "here")
        answer: BaseException | None = None
    except Exception as err:  # noqa: BLE001 - whatever it raises is the behaviour under test
        answer = err
    upstream_verdict("wandb_download", not isinstance(answer, FileNotFoundError),
                     f"fails a download before W&B's init other than with FileNotFoundError ({answer!r})")
