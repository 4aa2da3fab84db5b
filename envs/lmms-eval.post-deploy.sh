#!/usr/bin/env bash
# Snakemake runs this once inside the new lmms-eval environment, from the workflow's working
# directory (the vlm4vla checkout): install the project without its dependencies (the vqa-lmms
# stage needs torch, transformers and lmms-eval, which envs/lmms-eval.yaml pins).
set -euo pipefail
if ! grep -qs '^name = "vlm4vla"' pyproject.toml; then
  echo "run snakemake from the vlm4vla checkout (no vlm4vla pyproject.toml in $PWD)" >&2
  exit 1
fi
python -m pip install --no-deps -e .
