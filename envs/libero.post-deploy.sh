#!/usr/bin/env bash
# Snakemake runs this once inside the new LIBERO environment, from the workflow's working directory
# (the vlm4vla checkout): install the project without its dependencies (the simulator worker and
# the policy client need numpy, msgpack and websockets, which envs/libero.yaml pins; no torch).
set -euo pipefail
if ! grep -qs '^name = "vlm4vla"' pyproject.toml; then
  echo "run snakemake from the vlm4vla checkout (no vlm4vla pyproject.toml in $PWD)" >&2
  exit 1
fi
python -m pip install --no-deps -e .
