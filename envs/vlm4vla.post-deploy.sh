#!/usr/bin/env bash
# Snakemake runs this once inside the new environment, from the workflow's working directory
# (the vlm4vla checkout): install the core environment's lock and the project (envs/install-locked.sh).
set -euo pipefail
if ! grep -qs '^name = "vlm4vla"' pyproject.toml; then
  echo "run snakemake from the vlm4vla checkout (no vlm4vla pyproject.toml in $PWD)" >&2
  exit 1
fi
envs/install-locked.sh python
