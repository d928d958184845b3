#!/usr/bin/env bash
# One command on a GPU machine without internet: install from the wheel folder over the image's torch, report the
# stack, and measure what needs a GPU (docs/stacks.md, "On a GPU machine without internet"):
#
#     bash scripts/gpu/check.sh .whl OUT_DIR       # OUT_DIR gets doctor.txt, gpu_check.json and gpu_check.md
#
# gpu-check writes its JSON and markdown after every row, so a run cut short still leaves what it measured.
set -uo pipefail
wheels=${1:?usage: bash scripts/gpu/check.sh WHEEL_FOLDER OUT_DIR}
out=${2:?usage: bash scripts/gpu/check.sh WHEEL_FOLDER OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
bash "$(dirname "$0")/install.sh" "$wheels" || exit $?
"$python" -m rsb_composer.cli doctor | tee "$out/doctor.txt"
doctor=${PIPESTATUS[0]}
"$python" -m rsb_composer.cli gpu-check --out "$out" "${@:3}"
check=$?
[ "$doctor" -eq 0 ] || echo "doctor found problems (above, and in $out/doctor.txt)" >&2
exit $(( check != 0 ? check : doctor ))
