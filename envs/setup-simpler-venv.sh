#!/usr/bin/env bash
# Create or update the SimplerEnv-Bridge simulator virtual environment.
#
#   envs/setup-simpler-venv.sh VENV_DIR
#
# Creates VENV_DIR with Python 3.10 if it does not exist (PYTHON=... picks another 3.10
# interpreter), installs the pins of envs/simpler-requirements.txt, clones SimplerEnv and
# ManiSkill2_real2sim at the commits below into VENV_DIR/src (they are not on PyPI; the envs' assets,
# the overlay images among them, live in ManiSkill2_real2sim/data beside the package, so both are
# installed editable), then the project itself without its dependencies. Safe to run again.
# Point the benchmark's `simulator_python` at VENV_DIR/bin/python to run the rollouts there.
# The last step checks for a usable Vulkan device: SAPIEN renders through Vulkan only.
set -euo pipefail

SIMPLER_COMMIT=4ab7178e83e84ee06894034ec6dbf9e7aad1e882      # simpler-env/SimplerEnv, 2025-03-28
REAL2SIM_COMMIT=ef7a4d4fdf4b69f2c2154db5b15b9ac8dfe10682     # simpler-env/ManiSkill2_real2sim, 2024-10-18 (0.5.3)
SIMPLER_REPO=${SIMPLER_REPO:-https://github.com/simpler-env/SimplerEnv}
REAL2SIM_REPO=${REAL2SIM_REPO:-https://github.com/simpler-env/ManiSkill2_real2sim}

die() { echo "setup-simpler-venv: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 VENV_DIR"
venv=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs=$repo/envs/simpler-requirements.txt
[ -f "$reqs" ] || die "missing $reqs"
grep -qs '^name = "vlm4vla"' "$repo/pyproject.toml" || die "no vlm4vla pyproject.toml in $repo"

# shellcheck source=envs/venv-lib.sh
source "$repo/envs/venv-lib.sh"
venv_python "$venv" 3.10 "SimplerEnv with sapien 2.2.2 and numpy 1.24 needs 3.10"
py=$venv/bin/python

echo "installing the pinned simulator requirements into $venv"
"$py" -m pip install --quiet -r "$reqs" || die "pip could not install $reqs (see above)"

src=$venv/src
mkdir -p "$src"
checkout() {  # URL DIR COMMIT
  if [ ! -d "$2/.git" ]; then git clone --quiet "$1" "$2" || die "could not clone $1"; fi
  git -C "$2" fetch --quiet origin "$3" 2>/dev/null || true
  git -C "$2" checkout --quiet "$3" || die "$2: commit $3 is not there"
}
checkout "$REAL2SIM_REPO" "$src/ManiSkill2_real2sim" "$REAL2SIM_COMMIT"
checkout "$SIMPLER_REPO" "$src/SimplerEnv" "$SIMPLER_COMMIT"
echo "installing ManiSkill2_real2sim and SimplerEnv (editable, no dependencies: the pins above are theirs)"
"$py" -m pip install --quiet --no-deps -e "$src/ManiSkill2_real2sim" -e "$src/SimplerEnv" \
  || die "pip could not install the clones in $src"
echo "installing vlm4vla_core (editable, no dependencies) from $repo"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo"

# Check (envs/check-simpler-venv.sh, which also runs on its own)
"$repo/envs/check-simpler-venv.sh" "$venv" || die "the environment is installed but its check failed (see above)"
echo "done: simulator Python is $py"
