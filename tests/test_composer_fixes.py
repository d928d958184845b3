"""rsb_composer.composer_fixes: the registry is complete (each workaround with its module, its version range and
a test of the upstream behaviour it works around), a workaround applies only inside its range, and the doctor lists
the active ones. The upstream tests and each workaround's own tests are in tests/test_fixes_composer.py (Composer's)
and tests/test_fixes_torch_timm.py (torch's, timm's and Pillow's).

The ``test_upstream_*`` tests are the upgrade check (docs/development.md, "Workarounds"): after bumping Composer,
torch, timm or Pillow, run ``pytest tests/test_composer_fixes.py tests/test_fixes_*.py``; "<name> can go: upstream
fixed it in <library> <version>" means delete that module, its FIXES entry and its tests; "widen applies_to" means
the new version still needs the workaround.
"""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import composer.loss
import composer.loss.utils
import pytest
from composer.utils import checkpoint, dist
from timm.data import auto_augment

from rsb_composer import composer_fixes
from rsb_composer.composer_fixes import (
    soft_cross_entropy,
    timm_posterize,
)
from tests.helpers import REPO, unpatched

PACKAGE = REPO / "rsb_composer" / "composer_fixes"
# The upstream tests, by name, in the files that hold them.
UPSTREAM_TESTS = {name for path in (REPO / "tests").glob("test_fixes_*.py")
                  for name in re.findall(r"^def (test_upstream_\w+)", path.read_text(), re.M)}


# --- the registry ------------------------------------------------------------------------------------------------

def test_every_fix_is_complete_with_its_module_and_its_upstream_test():
    composer_fixes.check_registry()
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(composer_fixes.BY_NAME), "a module without its FIXES entry, or an entry without module"
    for fix in composer_fixes.FIXES:
        assert composer_fixes.installed_version(fix.library) is not None, f"{fix.name}: {fix.library} is no package"
        assert f"test_upstream_{fix.name}" in UPSTREAM_TESTS, f"{fix.name} has no test of its upstream"


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
