"""The stacks the project runs on: `rsb-composer doctor`'s rules on stacks of our own, the doctor on this environment,
and the install files kept in step with Composer's metadata, pyproject.toml and README.md."""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from rsb_composer.tools import doctor as doc
from tests.helpers import REPO

COMPOSER_REQUIRES = ["torch<2.7.1,>=2.6.0", "torchvision<0.22.1,>=0.21.0", "torchmetrics<1.7.5,>=1.0",
                     "pillow<12,>=10.3.0", "tabulate==0.9.0"]


def stack(**versions: str | None) -> doc.Stack:
    base = {"torch": "2.14.1", "torchvision": "0.29.1", "torchmetrics": "1.9.0", "mosaicml": "0.32.1",
            "pillow": "13.0.0", "tabulate": "0.9.0", "wandb": "0.18.7"}
    return doc.Stack(python="3.12.3", versions={**base, **versions}, composer_requires=COMPOSER_REQUIRES)


def problems(s: doc.Stack) -> list[str]:
    return [f.text for f in doc.diagnose(s) if f.kind == "problem"]


def test_a_current_stack_with_composers_pins_lifted_is_fine(capsys):
    assert doc.doctor(stack()) == 0
    out = capsys.readouterr().out
    assert "this stack is inside" in out and "problem:" not in out
    # pip check's complaints are explained, each pin named with what is installed
    assert "torch<2.7.1,>=2.6.0 (installed 2.14.1)" in out and "lifted on purpose" in out


def test_a_known_bad_combination_is_named_with_its_fix(capsys):
    bad = stack(torchvision="0.22.0", wandb="0.31.0")
    assert doc.doctor(bad) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem:")]
    assert len(lines) == 2
    assert "torchvision 0.22.0 is built for torch 2.7, not torch 2.14.1" in lines[0]
    assert lines[0].endswith("pip install torchvision==0.29.*")
    assert "wandb 0.31.0" in lines[1] and "pip install 'wandb>=0.16,<0.19'" in lines[1]


@pytest.mark.parametrize("change,expected", [
    ({"torch": "2.5.1", "torchvision": "0.20.1"}, "torch 2.5.1 is older than the tested range"),
    ({"mosaicml": None}, "Composer (mosaicml) is not installed"),
    ({"mosaicml": "0.31.0"}, "Composer 0.31.0: the project is tested with 0.32.1 only"),
    ({"tabulate": "0.8.10"}, "Composer 0.32.1 needs tabulate==0.9.0 (installed 0.8.10)"),
    ({"torchmetrics": "1.2.0"}, "torchmetrics 1.2.0 is older than the tested range (1.4 to 1.9)"),
    ({"tabulate": None}, "Composer 0.32.1 needs tabulate==0.9.0: "),  # not installed: import composer would fail
])
def test_each_unsupported_component_is_one_problem(change, expected):
    found = problems(stack(**change))
    assert len(found) == 1 and found[0].startswith(expected)


PROJECT_REQUIRES = ["timm<1.1,>=1.0.15", "opencv-python-headless<6,>=4.8", "wandb<0.19,>=0.16"]


def test_the_projects_own_pins_count_though_the_no_deps_installs_do_not_enforce_them():
    s = stack(timm="1.0.31", **{"opencv-python-headless": "5.1.0.95"})
    s.project_requires = PROJECT_REQUIRES
    assert problems(s) == []
    s.versions["timm"] = "1.1.2"
    assert problems(s) == ["rsb-composer needs timm<1.1,>=1.0.15 (installed 1.1.2): pip install -r "
                           "requirements/keep-torch.txt"]
    # A GPU image's OpenCV may be the non-headless build; a tracker's package may be absent until a recipe uses it.
    s.versions.update({"timm": "1.0.31", "opencv-python-headless": None, "opencv-python": "4.12.0.88", "wandb": None})
    assert problems(s) == []


def test_a_torch_that_does_not_import_and_a_vendors_build():
    broken = stack()
    broken.import_error = "OSError: libcudnn.so.9: cannot open shared object file"
    assert problems(broken) == ["torch 2.14.1 is installed but does not import (OSError: libcudnn.so.9: cannot open "
                                "shared object file): reinstall torch and torchvision together"]
    # NGC containers pair their own torchvision with a pre-release torch: no advice to replace it from pip.
    assert problems(stack(torch="2.9.0a0+50eac811a6.nv25.09", torchvision="0.24.0a0+98f8b375")) == []


def test_a_newer_torch_or_python_outside_the_range():
    newer = stack(torch="2.15.0+cu130", torchvision="0.30.0")
    assert problems(newer) == []
    assert any("torch 2.15.0 is newer than the tested range" in f.text for f in doc.diagnose(newer))
    old_python = stack()
    old_python.python = "3.10.14"
    assert problems(old_python) == ["Python 3.10.14 is outside the supported 3.11 to 3.13: use one of those"]


@pytest.mark.parametrize("capability,arch_list,ok", [
    ((9, 0), ["sm_80", "sm_90"], True),  # H100
    ((8, 9), ["sm_80", "sm_90"], True),  # L40S runs sm_80 kernels (same major)
    ((10, 0), ["sm_80", "sm_90"], False),  # B200 on a build without Blackwell kernels
    ((10, 0), ["sm_80", "sm_90", "compute_90"], True),  # ... but with PTX to compile at start
    ((12, 0), ["sm_90", "sm_100", "sm_120"], True),
    ((7, 0), ["sm_75", "sm_80"], False),  # V100 on a build that dropped it
])
def test_gpu_architectures_this_torch_build_has_no_kernels_for(capability, arch_list, ok):
    s = stack()
    s.gpus, s.arch_list, s.cuda = [doc.Gpu("GPU", capability)], arch_list, "13.0"
    found = problems(s)
    assert found == [] if ok else (len(found) == 1 and found[0].startswith("GPU 0 (GPU, sm_"))


def test_this_environment_is_inside_the_tested_range(capsys):
    """Both stacks CI runs (the pinned one and the current one) must pass their own doctor."""
    import torch

    here = doc.read_stack()
    assert here.versions["torch"] == metadata.version("torch") and torch.__version__.startswith(
        here.versions["torch"].split("+")[0])
    assert here.versions["mosaicml"] == doc.COMPOSER_VERSION and here.composer_requires
    assert doc.doctor(here) == 0, capsys.readouterr().out


def _requirements(path) -> dict[str, list[Requirement]]:
    found: dict[str, list[Requirement]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            found.setdefault(requirement.name.lower().replace("_", "-"), []).append(requirement)
    return found


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def test_keep_torch_requirements_follow_composer_and_pyproject():
    keep = _requirements(REPO / "requirements" / "keep-torch.txt")
    assert "torch" not in keep and "torchvision" not in keep and "mosaicml" not in keep
    for text in metadata.requires("mosaicml"):
        requirement = Requirement(text)
        # Composer's own requirements and its extras the project installs ([wandb,streaming]), on this machine
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in ("", "wandb",
                                                                                              "streaming")):
            continue
        name = _name(requirement)
        if name in ("torch", "torchvision"):
            continue
        specs = {str(r.specifier) for r in keep.get(name, [])}
        if name in doc.LIFTED_PINS:  # Composer's lower bound kept, its upper bound lifted
            lower = {str(s) for s in requirement.specifier if s.operator == ">="}
            assert lower in [{s} for s in specs], f"{name}: {specs} should keep {lower} only"
        else:
            assert str(requirement.specifier) in specs, f"{name}: Composer asks {requirement.specifier}, file {specs}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    own = project["dependencies"] + [r for r in project["optional-dependencies"]["dev"] if "rsb-composer" not in r]
    own += project["optional-dependencies"]["tensorboard"] + project["optional-dependencies"]["mlflow"]
    for text in own:
        requirement = Requirement(text)
        if _name(requirement) != "mosaicml":
            assert str(requirement.specifier) in {str(r.specifier) for r in keep.get(_name(requirement), [])}, text


def test_the_gpu_image_list_asks_what_keep_torch_asks():
    keep = _requirements(REPO / "requirements" / "keep-torch.txt")
    for name, requirements in _requirements(REPO / "scripts" / "gpu" / "requirements.txt").items():
        for requirement in requirements:
            assert str(requirement.specifier) in {str(r.specifier) for r in keep[name]}, requirement


def _keep_torch_command(page: str) -> str:
    section = page.split("## Keeping your PyTorch", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_readme_gives_the_keep_torch_command_and_the_tested_range():
    readme = (REPO / "README.md").read_text()
    stacks = (REPO / "docs" / "stacks.md").read_text()  # the same install, in detail, and the tested stacks
    command = _keep_torch_command(readme)
    header = (REPO / "requirements" / "keep-torch.txt").read_text()
    assert command in header, "README and requirements/keep-torch.txt give different commands"
    assert _keep_torch_command(stacks) == command, "README and docs/stacks.md give different commands"
    low, high = doc.TESTED_TORCH
    for page in (readme, stacks):
        assert f"torch {low}" in page and f"torch {high}" in page
        assert f"Python {doc.TESTED_PYTHON[0]} to {doc.TESTED_PYTHON[1]}" in page
