#!/usr/bin/env bash
# Install Composer 0.32.1 and this project over a GPU machine image's own torch, from a wheel folder built by
# scripts/gpu/build_wheels.py, without a network (docs/stacks.md, "On a GPU machine without internet"):
#
#     bash scripts/gpu/install.sh .whl            # then: rsb-composer doctor; rsb-composer gpu-check --out DIR
#
# What the image already has (torch, torchvision, torchmetrics, timm, OpenCV, numpy, Pillow) stays as it is: pip
# takes from the folder only what scripts/gpu/requirements.txt needs beyond it, and names anything missing from both.
# PYTHON picks the interpreter (default python3); run from the repository root.
set -euo pipefail
wheels=${1:?usage: bash scripts/gpu/install.sh WHEEL_FOLDER}
[ -d "$wheels" ] || { echo "error: $wheels: no such folder (build it with python scripts/gpu/build_wheels.py $wheels)" >&2; exit 2; }
python=${PYTHON:-python3}
pip=("$python" -m pip install --quiet --no-index --find-links "$wheels")
"${pip[@]}" -r scripts/gpu/requirements.txt
# Composer's pins would replace the image's torch: it and the project go in without dependencies.
"${pip[@]}" --no-deps mosaicml==0.32.1 -e .
