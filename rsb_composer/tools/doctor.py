"""``rsb-composer doctor``: the software stack and the GPUs, whether the combination is inside the tested range, and
the known-bad combinations with their fixes.

:mod:`rsb_composer.tools.stack` reads the stack; every rule in :data:`RULES` looks at one
:class:`~rsb_composer.tools.stack.Stack` and returns a :class:`Finding` or None; a finding is a ``problem`` (exit
1, one line each) or a ``note`` (said, exit 0). Tests feed the rules a stack of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from rsb_composer import composer_fixes
from rsb_composer.tools.stack import OPENCV_VARIANTS, SHOWN, Gpu, Stack, read_stack

__all__ = ["RULES", "Finding", "Gpu", "Stack", "diagnose", "doctor", "read_stack"]

# The stacks the suite runs on (docs/stacks.md, "Tested stacks"; .ci/run runs both ends for torch).
TESTED_PYTHON = ("3.11", "3.13")
TESTED_TORCH = ("2.7.0", "2.14.1")
TESTED_TORCHMETRICS = ("1.4", "1.9")
COMPOSER_VERSION = "0.32.1"
# Composer 0.32.1's pins that follow torch's release train; requirements/keep-torch.txt lifts them.
LIFTED_PINS = ("torch", "torchvision", "torchmetrics", "numpy", "pillow", "packaging")
# torchvision 0.N is built for torch 2.(N - 15): 0.22 for 2.7 ... 0.29 for 2.14.
TORCHVISION_OFFSET = 15
# Needed only when a recipe turns them on (loggers.wandb, data.source: streaming): absent is not a problem.
OPTIONAL_AT_RUNTIME = ("wandb", "mosaicml-streaming", "boto3", "paramiko")


@dataclass
class Finding:
    kind: str  # "problem" or "note"
    text: str


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _release(text: str | None) -> Version | None:
    """The release part only: 2.11.0+cu130 and 2.11.0a0+git... both count as 2.11.0."""
    version = _version(text)
    return Version(version.base_version) if version else None


def python_range(stack: Stack) -> Finding | None:
    low, high = TESTED_PYTHON
    minor = Version(".".join(stack.python.split(".")[:2]))
    if not Version(low) <= minor <= Version(high):
        return Finding("problem", f"Python {stack.python} is outside the supported {low} to {high}: use one of those")
    return None


def _tested_range(name: str, installed: str | None, tested: tuple[str, str], install: str) -> Finding | None:
    """Missing or older than the tested range: a problem, with ``install`` as the fix; newer: a note."""
    version = _release(installed)
    low, high = (Version(v) for v in tested)
    if version is None:
        return Finding("problem", f"{name} is not installed: {install}")
    if version < low:
        return Finding("problem", f"{name} {version} is older than the tested range ({low} to {high}): {install}")
    if (version.major, version.minor) > (high.major, high.minor):
        return Finding("note", f"{name} {version} is newer than the tested range ({low} to {high}): untested; "
                               "run `pytest -m \"not slow\"` once, and report what fails")
    return None


def torch_range(stack: Stack) -> Finding | None:
    return _tested_range("torch", stack.versions.get("torch"), TESTED_TORCH,
                         f"install torch >={TESTED_TORCH[0]} with its torchvision (README's first command)")


def torchvision_matches_torch(stack: Stack) -> Finding | None:
    torch, vision = _release(stack.versions.get("torch")), _release(stack.versions.get("torchvision"))
    if torch is None:
        return None
    if vision is None:
        return Finding("problem", f"torchvision is not installed: pip install torchvision==0.{torch.minor + 15}.* "
                                  f"(the release built for torch {torch.major}.{torch.minor})")
    expected = torch.minor + TORCHVISION_OFFSET
    installed = _version(stack.versions.get("torch"))
    if installed is not None and (installed.is_prerelease or installed.is_devrelease):
        return None  # a vendor's build (NGC's 2.N.0a0+...nv) pairs its own torchvision: pip's would replace torch
    if torch.major == 2 and vision.minor != expected:
        return Finding("problem", f"torchvision {vision} is built for torch 2.{vision.minor - TORCHVISION_OFFSET}, "
                                  f"not torch {torch} (its operators fail to load, e.g. 'operator torchvision::nms "
                                  f"does not exist'): pip install torchvision==0.{expected}.*")
    return None


def torchmetrics_range(stack: Stack) -> Finding | None:
    return _tested_range("torchmetrics", stack.versions.get("torchmetrics"), TESTED_TORCHMETRICS,
                         f"pip install 'torchmetrics>={TESTED_TORCHMETRICS[0]}'")


def composer_version(stack: Stack) -> Finding | None:
    composer = stack.versions.get("mosaicml")
    if composer is None:
        return Finding("problem", "Composer (mosaicml) is not installed: pip install -e \".[dev]\", or README's "
                                  "\"Keeping your PyTorch\" command")
    if composer != COMPOSER_VERSION:
        return Finding("problem", f"Composer {composer}: the project is tested with {COMPOSER_VERSION} only: "
                                  f"pip install --no-deps mosaicml=={COMPOSER_VERSION}")
    return None


def _unmet(requires: list[str], versions: dict[str, str | None]) -> tuple[list[str], list[str], list[str]]:
    """The requirements ``versions`` misses: (lifted pins, other broken ones, not installed at all)."""
    lifted, broken, missing = [], [], []
    for text in requires:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        installed = versions.get(name)
        if installed is None:
            missing.append(str(requirement))
        elif not requirement.specifier.contains(installed, prereleases=True):
            (lifted if name in LIFTED_PINS else broken).append(f"{requirement} (installed {installed})")
    return lifted, broken, missing


def composer_pins(stack: Stack) -> Finding | None:
    """The pins `pip check` reports after the "Keeping your PyTorch" install: expected for LIFTED_PINS, a problem for
    any other, and for a requirement that is not installed at all (``import composer`` would fail)."""
    lifted, broken, missing = _unmet(stack.composer_requires, stack.versions)
    if broken or missing:
        return Finding("problem", f"Composer {COMPOSER_VERSION} needs {'; '.join(broken + missing)}: pip install -r "
                                  "requirements/keep-torch.txt (or scripts/gpu/install.sh on a machine offline)")
    if lifted:
        return Finding("note", f"Composer {COMPOSER_VERSION} pins {', '.join(lifted)}: lifted on purpose (README, "
                               "\"Keeping your PyTorch\"); `pip check` lists these and nothing else")
    return None


def project_requirements(stack: Stack) -> Finding | None:
    """The project's own dependencies, which the --no-deps installs do not enforce. Trackers may be absent (a
    tracker's package is needed only when the recipe turns it on); OpenCV counts in any of its distributions."""
    versions = dict(stack.versions)
    for variant in OPENCV_VARIANTS:
        versions["opencv-python-headless"] = versions.get("opencv-python-headless") or versions.get(variant)
    _, broken, missing = _unmet(stack.project_requires, versions)
    missing = [m for m in missing if Requirement(m).name.lower() not in OPTIONAL_AT_RUNTIME]
    if broken or missing:
        return Finding("problem", f"rsb-composer needs {'; '.join(broken + missing)}: pip install -r "
                                  "requirements/keep-torch.txt")
    return None


def wandb_version(stack: Stack) -> Finding | None:
    wandb = _release(stack.versions.get("wandb"))
    if wandb is not None and wandb >= Version("0.19"):
        return Finding("problem", f"wandb {wandb}: Composer {COMPOSER_VERSION}'s WandBLogger needs wandb < 0.19 (it "
                                  "calls wandb.run.get_url, which later releases removed): pip install "
                                  "'wandb>=0.16,<0.19'")
    return None


def _has_kernels(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Kernels built for the GPU's architecture or an older one of the same major (sm_XY), or PTX of any older one
    (compute_XY), which the driver compiles at start."""
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        number = number.rstrip("af")  # sm_90a, sm_100f: architecture-specific variants of sm_90, sm_100
        if not number.isdigit() or len(number) < 2:
            continue
        built = (int(number[:-1]), int(number[-1]))
        if (kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]) or (
                kind == "compute" and built <= capability):
            return True
    return False


def gpu_architectures(stack: Stack) -> Finding | None:
    """A GPU whose architecture this torch build has no kernels for fails at its first CUDA operation."""
    if not stack.arch_list:
        return None
    missing = [f"GPU {i} ({gpu.name}, sm_{gpu.capability[0]}{gpu.capability[1]})" for i, gpu in enumerate(stack.gpus)
               if not _has_kernels(gpu.capability, stack.arch_list)]
    if missing:
        return Finding("problem", f"{', '.join(missing)}: this torch build (CUDA {stack.cuda}) has kernels for "
                                  f"{' '.join(stack.arch_list)} only: install a torch build for a CUDA that "
                                  "supports it")
    return None


def torch_import(stack: Stack) -> Finding | None:
    if stack.import_error:
        return Finding("problem", f"torch {stack.versions.get('torch')} is installed but does not import "
                                  f"({stack.import_error}): reinstall torch and torchvision together")
    return None


def cuda_without_gpu(stack: Stack) -> Finding | None:
    if stack.cuda and not stack.gpus:
        return Finding("note", f"no GPU visible (torch is a CUDA {stack.cuda} build; CUDA_VISIBLE_DEVICES, the "
                               "driver, or a CPU-only machine): training runs on the CPU")
    return None


RULES: dict[str, Callable[[Stack], Finding | None]] = {
    "python": python_range, "torch": torch_range, "torchvision": torchvision_matches_torch,
    "torchmetrics": torchmetrics_range, "composer": composer_version, "composer_pins": composer_pins,
    "project": project_requirements, "torch_import": torch_import,
    "wandb": wandb_version, "gpu_architectures": gpu_architectures, "cuda_without_gpu": cuda_without_gpu,
}


def diagnose(stack: Stack) -> list[Finding]:
    return [finding for rule in RULES.values() if (finding := rule(stack)) is not None]


def describe(stack: Stack) -> list[str]:
    """The stack, one line per component, for people."""
    v = stack.versions
    cuda = (f" (CUDA {stack.cuda}, cuDNN {stack.cudnn or 'n/a'}, NCCL {stack.nccl or 'n/a'})" if stack.cuda
            else " (CPU build)")
    lines = [f"python        {stack.python}", f"torch         {v.get('torch')}{cuda}"]
    lines += [f"{('composer' if n == 'mosaicml' else n):<13} {v.get(n) or 'not installed'}" for n in SHOWN[1:]]
    gpus = ", ".join(f"{g.name} (sm_{g.capability[0]}{g.capability[1]})" for g in stack.gpus) or "none"
    lines.append(f"GPUs          {len(stack.gpus)}: {gpus}" if stack.gpus else "GPUs          none")
    return lines


def doctor(stack: Stack, as_json: bool = False) -> int:
    findings = diagnose(stack)
    problems = [f for f in findings if f.kind == "problem"]
    workarounds = composer_fixes.active(stack.versions)
    if as_json:
        print(json.dumps({"stack": asdict(stack), "findings": [asdict(f) for f in findings],
                          "workarounds": [fix.name for fix in workarounds], "ok": not problems}, indent=2))
        return 1 if problems else 0
    print("\n".join(describe(stack)))
    low, high = TESTED_TORCH
    inside = not any(f.kind == "note" and "tested range" in f.text for f in findings) and not problems
    print(f"tested: Python {TESTED_PYTHON[0]}-{TESTED_PYTHON[1]}, torch {low}-{high}, Composer {COMPOSER_VERSION}: "
          + ("this stack is inside" if inside else "see below"))
    for finding in findings:
        print(f"{finding.kind}: {finding.text}")
    for fix in workarounds:  # each one's module says what it does and when it can go
        print(f"workaround: {fix.name} ({fix.library} {stack.versions[fix.library]}, applied on {fix.applies_to}): "
              f"rsb_composer/composer_fixes/{fix.name}.py")
    return 1 if problems else 0
