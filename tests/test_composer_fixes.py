"""rsb_composer.composer_fixes: the registry is complete, a workaround applies only inside its version range, each
one does its job, and for each one a test of the upstream behaviour it works around, on the installed versions.

The ``test_upstream_*`` tests are the upgrade check (docs/development.md, "Workarounds"): after bumping Composer,
torch, timm or Pillow, run this file; "<name> can go: upstream fixed it in <library> <version>" means delete that
module, its FIXES entry and its tests; "widen applies_to" means the new version still needs the workaround.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import random
import re
import subprocess
import sys
import textwrap
import warnings
from types import SimpleNamespace

import composer.loss
import composer.loss.utils
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from composer.utils import checkpoint, dist
from PIL import Image, ImageOps
from timm.data import auto_augment

from rsb_composer import composer_fixes
from rsb_composer.composer_fixes import (
    checkpoint_loading,
    inductor_inplace_buffers,
    one_hot,
    rng_resume,
    signal_files,
    soft_cross_entropy,
    timm_posterize,
)
from rsb_composer.config import ConfigError
from rsb_composer.data import array_ops
from rsb_composer.data.randaugment import randaugment_hparams
from rsb_composer.tools.host_reads import HostReadWindow, counting_host_reads
from tests.helpers import REPO

PACKAGE = REPO / "rsb_composer" / "composer_fixes"


def upstream_verdict(name: str, present: bool, behaviour: str) -> None:
    """Fail when the upstream behaviour and the workaround's range disagree on the installed version.

    ``present``: the installed library still does ``behaviour``. Present and in range, or gone and out of range
    (nothing to work around on this stack), is consistent.
    """
    fix = composer_fixes.BY_NAME[name]
    library = fix.library
    version = composer_fixes.installed_version(library)
    if not present and fix.applies():
        pytest.fail(f"{name} can go: upstream fixed it in {library} {version} (it no longer {behaviour}); delete "
                    f"rsb_composer/composer_fixes/{name}.py, its FIXES entry and its tests")
    if present and not fix.applies():
        pytest.fail(f"{name}: {library} {version} still {behaviour}, outside the workaround's applies_to "
                    f"{fix.applies_to!r} ({fix.library}): widen applies_to")


def unpatched(function):
    """Composer's own function, under our patch if an earlier apply() put one on."""
    while getattr(function, "__rsb_composer_patched__", False):
        function = function.__wrapped__
    return function


def host_reads(function, *args, **kwargs) -> int:
    """How many tensor-to-Python reads (each a device synchronisation on a GPU) one call makes."""
    window = HostReadWindow()
    window.open = True
    with counting_host_reads(window), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Composer's own warnings about the targets: the reads are the point here
        function(*args, **kwargs)
    return sum(window.reads.values())


# --- the registry ------------------------------------------------------------------------------------------------

def test_every_fix_is_complete_with_its_module_and_its_upstream_test():
    composer_fixes.check_registry()
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(composer_fixes.BY_NAME), "a module without its FIXES entry, or an entry without module"
    for fix in composer_fixes.FIXES:
        assert composer_fixes.installed_version(fix.library) is not None, f"{fix.name}: {fix.library} is no package"
        assert callable(globals().get(f"test_upstream_{fix.name}")), f"{fix.name} has no test of its upstream"


@pytest.mark.parametrize("change,message", [
    ({"why": " "}, "FIXES['one_hot']: why is empty"),
    ({"removed_when": ""}, "FIXES['one_hot']: removed_when is empty"),
    ({"applies_to": ""}, "FIXES['one_hot']: applies_to is empty"),
    ({"applies_to": "0.32"}, "FIXES['one_hot']: applies_to='0.32' is not a PEP 440 specifier set"),
])
def test_an_incomplete_entry_is_refused_by_name(monkeypatch, change, message):
    broken = dataclasses.replace(composer_fixes.BY_NAME["one_hot"], **change)
    monkeypatch.setattr(composer_fixes, "FIXES", (broken,))
    with pytest.raises(ValueError, match=re.escape(message)):
        composer_fixes.check_registry()


@pytest.mark.parametrize("version,inside", [
    ("2.7.0", True), ("2.7.0+cpu", True), ("2.7.0a0+git1234", True), ("2.6.0", True), ("2.8.0", False),
    ("2.8.0a0+5228986c39.nv25.05", False), ("2.14.1+cu130", False), (None, False), ("not a version", False),
])
def test_a_range_counts_local_builds_and_prereleases_as_pep_440_orders_them(version, inside):
    fix = composer_fixes.Fix("x", "torch", "<2.8", why="w", removed_when="r")
    assert fix.applies({"torch": version}) is inside


def _stub_trainer() -> SimpleNamespace:
    """What restore_rng_on_dataset_resume reads: a mid-epoch resume through dataset resumption."""
    state = SimpleNamespace(dataset_resumption={"train": True}, timestamp=SimpleNamespace(batch_in_epoch=1),
                            callbacks=[])
    return SimpleNamespace(state=state, _rng_state=[{}])


@pytest.mark.parametrize("inside", [False, True])
def test_a_fix_applies_inside_its_range_only(monkeypatch, inside):
    import torch._inductor.config as inductor
    from composer.loggers import WandBLogger

    from rsb_composer.composer_fixes.wandb_download import LocalCheckpointWandBLogger

    versions = ({"mosaicml": "0.32.1", "torch": "2.7.0", "pillow": "13.0.0"} if inside else
                {"mosaicml": "0.33.0", "torch": "2.8.0", "pillow": "11.3.0"})
    monkeypatch.setattr(composer_fixes, "installed_version", versions.get)
    originals = {(dist, "get_node_signal_file_name"): unpatched(dist.get_node_signal_file_name),
                 (checkpoint, "_torch_load_with_validation"): unpatched(checkpoint._torch_load_with_validation),
                 (composer.loss.utils, "_one_hot"): unpatched(composer.loss.utils._one_hot)}
    for (module, attribute), original in originals.items():
        monkeypatch.setattr(module, attribute, original)
    for op_name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        monkeypatch.setitem(auto_augment.NAME_TO_OP, op_name, auto_augment.posterize)
    monkeypatch.setattr(WandBLogger, "download_file", lambda *args: "Composer's own")

    composer_fixes.apply()
    composer_fixes.apply_timm()
    with inductor.patch(inplace_buffers=True):  # (monkeypatch cannot restore an Inductor setting)
        composer_fixes.prepare_compile()
        inplace_buffers = inductor.inplace_buffers
    trainer = _stub_trainer()
    composer_fixes.restore_rng_on_dataset_resume(trainer)

    for (module, attribute), original in originals.items():
        assert (getattr(module, attribute) is not original) is inside, attribute
    assert (auto_augment.NAME_TO_OP["PosterizeIncreasing"] is timm_posterize.posterize) is inside
    assert inplace_buffers is not inside
    assert (composer_fixes.cross_entropy() is soft_cross_entropy.soft_cross_entropy) is inside
    assert (composer_fixes.cross_entropy() is composer.loss.soft_cross_entropy) is not inside
    assert (len(trainer.state.callbacks) == 1) is inside and (trainer._rng_state is None) is inside
    logger = LocalCheckpointWandBLogger.__new__(LocalCheckpointWandBLogger)  # no W&B set-up needed to ask it
    if inside:
        with pytest.raises(FileNotFoundError, match="latest: checkpoints are not stored in W&B"):
            logger.download_file("latest", "here")
    else:
        assert logger.download_file("latest", "here") == "Composer's own"


@pytest.mark.parametrize("versions,listed", [
    ({"torch": "2.7.0", "pillow": "11.3.0"}, {"inductor_inplace_buffers"}),
    ({"torch": "2.14.1", "pillow": "13.0.0"}, {"timm_posterize"}),
])
def test_the_doctor_lists_the_workarounds_active_on_a_stack(capsys, versions, listed):
    from rsb_composer.tools import doctor

    composers = {"signal_files", "checkpoint_loading", "rng_resume", "one_hot", "soft_cross_entropy",
                 "wandb_download"}
    stack = doctor.Stack(python="3.12.3", versions={"mosaicml": "0.32.1", **versions})
    doctor.doctor(stack)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("workaround: ")]
    assert {line.split()[1] for line in lines} == composers | listed
    line = next(line for line in lines if line.split()[1] in listed)
    fix = composer_fixes.BY_NAME[line.split()[1]]
    assert line == (f"workaround: {fix.name} ({fix.library} {versions[fix.library]}, applied on {fix.applies_to}): "
                    f"rsb_composer/composer_fixes/{fix.name}.py")


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


# --- inductor_inplace_buffers ------------------------------------------------------------------------------------

INDUCTOR_PROBE = textwrap.dedent("""
    import torch, torchvision
    import torch._inductor.config as inductor
    inductor.inplace_buffers = {inplace}
    model = torch.compile(torchvision.models.resnet18(num_classes=10))
    try:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    except Exception as err:
        print("failed:", type(err).__name__, str(err).splitlines()[0])
    else:
        print("compiled")
""")


def _compile_resnet18_backward(tmp_path, inplace: bool) -> str:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{inplace}")}
    done = subprocess.run([sys.executable, "-c", INDUCTOR_PROBE.format(inplace=inplace)], env=env, timeout=900,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_upstream_inductor_inplace_buffers(tmp_path):
    outcome = _compile_resnet18_backward(tmp_path, inplace=True)
    upstream_verdict("inductor_inplace_buffers", outcome.startswith("failed:"),
                     f"fails compiling ResNet-18's backward with inplace_buffers on ({outcome})")


def test_inductor_compiles_without_inplace_buffers():
    import torch._inductor.config as inductor

    with inductor.patch(inplace_buffers=True, allow_buffer_reuse=True):
        inductor_inplace_buffers.apply()
        assert inductor.inplace_buffers is False and inductor.allow_buffer_reuse  # freed buffers still reused


# --- timm_posterize ----------------------------------------------------------------------------------------------

def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))


def test_upstream_timm_posterize():
    asks_zero = auto_augment.LEVEL_TO_ARG["PosterizeIncreasing"](10, {}) == (0,)  # magnitude 10: mstd noise
    if not asks_zero:  # whatever Pillow does, nothing asks it for 0 bits any more
        pytest.fail(f"timm_posterize can go: upstream fixed it in timm {composer_fixes.installed_version('timm')} "
                    "(PosterizeIncreasing no longer asks for 0 bits at magnitude 10)")
    try:
        black = not np.asarray(auto_augment.posterize(_image(), 0)).any()
    except ValueError as err:
        assert "bits must be between" in str(err)
        black = False
    upstream_verdict("timm_posterize", not black, "refuses 0 bits (Pillow 12 gave a black image)")


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_posterize_keeps_zero_bits_a_black_image(mode):
    image = _image().convert(mode)
    out = timm_posterize.posterize(image, 0)
    assert out.mode == mode and out.size == image.size
    assert not np.asarray(out).any()
    # Other bit counts are timm's own op, unchanged, and the fast pipeline's array op agrees at every count.
    for bits in range(0, 9):
        expected = np.asarray(ImageOps.posterize(image, bits)) if bits else np.zeros_like(np.asarray(image))
        assert np.array_equal(np.asarray(timm_posterize.posterize(image, bits)), expected)
        assert np.array_equal(array_ops.posterize(np.asarray(image), bits), expected)


def test_randaugment_posterize_at_full_magnitude_on_this_pillow():
    """The recipes' RandAugment op at the magnitude the noise reaches, as the pipelines set timm up: a black image,
    no exception, on any Pillow (the workaround's op where the installed Pillow needs it, timm's own elsewhere)."""
    composer_fixes.apply_timm()
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10,
                                hparams=randaugment_hparams(32, "bicubic"))
    if composer_fixes.applies("timm_posterize"):
        assert op.aug_fn is timm_posterize.posterize
    assert not np.asarray(op(_image())).any()
