"""Build the wheel folder for a GPU machine without internet (docs/stacks.md, "On a GPU machine without internet").

    python scripts/gpu/build_wheels.py .whl                     # for the image's Python 3.12, x86_64
    python scripts/gpu/build_wheels.py .whl --python-version 3.11  # for a rehearsal here

Downloads, without their dependencies, Composer 0.32.1 and the exact distributions of scripts/gpu/wheels.txt:
what an image holding torch, torchvision, torchmetrics, timm and OpenCV lacks for scripts/gpu/requirements.txt.
Refuses a folder over --max-mib (64 MiB: what the device tool carries). scripts/gpu/install.sh installs it.

wheels.txt is written by ``--freeze IMAGE_PYTHON``: pip, in an environment like the image's, resolves
requirements.txt and lists what it would have to install there (nothing is installed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMPOSER = "mosaicml==0.32.1"
# Editable installs build with setuptools in an isolated environment; Python 3.12's venvs come without it.
BUILD = "setuptools>=68"  # pyproject.toml's build-system
# manylinux tags a current x86_64 image accepts (pip download needs them spelled out for another platform).
PLATFORMS = ["manylinux2014_x86_64", "linux_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in (5, 12, 17, 24, 26, 27, 28,
                                                                                              31, 34, 35)]


def pins() -> list[str]:
    return [line.split("#")[0].strip() for line in (HERE / "wheels.txt").read_text().splitlines()
            if line.split("#")[0].strip()]


def freeze(image_python: str) -> int:
    """Write wheels.txt: what pip would install into ``image_python``'s environment for requirements.txt."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([image_python, "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report),
                        "-r", str(HERE / "requirements.txt")], check=True)
        items = json.loads(report.read_text())["install"]
    lines = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items)
    (HERE / "wheels.txt").write_text(
        "# Written by `python scripts/gpu/build_wheels.py --freeze IMAGE_PYTHON`: the distributions pip installs for\n"
        "# scripts/gpu/requirements.txt into an environment holding what the GPU image holds (docs/stacks.md).\n"
        + "\n".join(lines) + "\n")
    print(f"wrote {HERE / 'wheels.txt'}: {len(lines)} distributions")
    return 0


def build(out: Path, python_version: str, max_mib: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in PLATFORMS:
        target += ["--platform", platform]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(out), *target,
                    COMPOSER, BUILD, *pins()], check=True)
    files = sorted(out.glob("*.whl"))
    mib = sum(f.stat().st_size for f in files) / 2**20
    print(f"{out}: {len(files)} wheels, {mib:.1f} MiB, for CPython {python_version} on x86_64")
    if mib > max_mib:
        print(f"error: {out} holds {mib:.1f} MiB, over --max-mib={max_mib}: the device tool carries at most 64 MiB",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=".whl", help="the wheel folder (default .whl)")
    parser.add_argument("--python-version", default="3.12", help="the image's Python, major.minor (default 3.12)")
    parser.add_argument("--max-mib", type=float, default=64.0, help="refuse a larger folder (default 64)")
    parser.add_argument("--freeze", metavar="IMAGE_PYTHON", help="rewrite wheels.txt from this Python's environment")
    args = parser.parse_args(argv)
    if args.freeze:
        return freeze(args.freeze)
    return build(Path(args.out), args.python_version, args.max_mib)


if __name__ == "__main__":
    sys.exit(main())
