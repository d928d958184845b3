"""The software stack of this environment, for ``rsb-composer doctor``: Python, the versions of the installed
distributions (read from their metadata: Composer is not imported, as the doctor has to work where Composer's
import is what fails), torch's CUDA, cuDNN and NCCL, and the GPUs."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata

from packaging.requirements import Requirement

SHOWN = ("torch", "torchvision", "torchmetrics", "mosaicml", "timm", "pillow", "numpy", "wandb")
OPENCV_VARIANTS = ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")


@dataclass
class Gpu:
    name: str
    capability: tuple[int, int]


@dataclass
class Stack:
    python: str
    versions: dict[str, str | None]  # distribution name (lower case) -> version, None when not installed
    cuda: str | None = None  # the CUDA torch was built with
    cudnn: str | None = None
    nccl: str | None = None
    gpus: list[Gpu] = field(default_factory=list)
    arch_list: list[str] = field(default_factory=list)  # torch.cuda.get_arch_list(): sm_90, compute_90, ...
    composer_requires: list[str] = field(default_factory=list)  # mosaicml's Requires-Dist, extras left out
    project_requires: list[str] = field(default_factory=list)  # rsb-composer's, extras left out
    import_error: str | None = None  # torch's, when it is installed but does not import


def _cudnn_release(number: int | None) -> str | None:
    """cuDNN's version number as a release: 92400 is 9.24.0 (9.x counts major x 10000), 8902 is 8.9.2."""
    if not number:
        return None
    major_unit = 10000 if number >= 90000 else 1000
    return f"{number // major_unit}.{number % major_unit // 100}.{number % 100}"


def _requires(distribution: str) -> list[str]:
    """A distribution's requirements without its extras' (none when it is not installed)."""
    try:
        return [r for r in metadata.requires(distribution) or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        return []


def read_stack() -> Stack:
    """This environment's stack (imports torch, not Composer)."""
    versions: dict[str, str | None] = {}
    for name in SHOWN:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    requires = {dist: _requires(dist) for dist in ("mosaicml", "rsb-composer")}
    for name in [Requirement(t).name for r in requires.values() for t in r] + list(OPENCV_VARIANTS):
        name = name.lower().replace("_", "-")
        if name not in versions:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
    stack = Stack(python=platform.python_version(), versions=versions, composer_requires=requires["mosaicml"],
                  project_requires=requires["rsb-composer"])
    if versions["torch"] is None:
        return stack
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any failure to import is what the doctor reports
        stack.import_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return stack

    stack.cuda = torch.version.cuda
    if torch.cuda.is_available():
        stack.gpus = [Gpu(torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
                      for i in range(torch.cuda.device_count())]
        stack.arch_list = torch.cuda.get_arch_list()
    if stack.cuda:
        try:
            stack.cudnn = _cudnn_release(torch.backends.cudnn.version())
        except RuntimeError:
            stack.cudnn = None
        try:
            stack.nccl = ".".join(str(part) for part in torch.cuda.nccl.version())
        except (AttributeError, RuntimeError):
            stack.nccl = None
    return stack


