#!/usr/bin/env bash
# Snakemake runs this once inside the new SimplerEnv environment, from the workflow's working directory
# (the vlm4vla checkout): clone SimplerEnv and ManiSkill2_real2sim at the commits of
# envs/setup-simpler-venv.sh into $CONDA_PREFIX/src and install them, and the project, without
# dependencies (envs/simpler.yaml pins them).
set -euo pipefail
if ! grep -qs '^name = "vlm4vla"' pyproject.toml; then
  echo "run snakemake from the vlm4vla checkout (no vlm4vla pyproject.toml in $PWD)" >&2
  exit 1
fi
eval "$(grep -E '^(SIMPLER|REAL2SIM)_(COMMIT|REPO)=' envs/setup-simpler-venv.sh)"
src=$CONDA_PREFIX/src
mkdir -p "$src"
for pair in "$REAL2SIM_REPO $src/ManiSkill2_real2sim $REAL2SIM_COMMIT" "$SIMPLER_REPO $src/SimplerEnv $SIMPLER_COMMIT"; do
  set -- $pair
  [ -d "$2/.git" ] || git clone --quiet "$1" "$2"
  git -C "$2" checkout --quiet "$3"
done
python -m pip install --no-deps -e "$src/ManiSkill2_real2sim" -e "$src/SimplerEnv"
python -m pip install --no-deps -e .
