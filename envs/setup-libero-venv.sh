#!/usr/bin/env bash
# Create or update the LIBERO-10 simulator virtual environment.
#
#   envs/setup-libero-venv.sh VENV_DIR
#
# Creates VENV_DIR with Python 3.11 if it does not exist (PYTHON=... picks another 3.11
# interpreter), installs the exact pins of envs/libero-requirements.txt, then the project itself
# without its dependencies (`pip install --no-deps -e .`), so that vlm4vla_core imports there.
# Safe to run again: an up-to-date environment is left as it is. Point the benchmark's
# `simulator_python` at VENV_DIR/bin/python to run the rollouts there.
set -euo pipefail

die() { echo "setup-libero-venv: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 VENV_DIR"
venv=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs=$repo/envs/libero-requirements.txt
[ -f "$reqs" ] || die "missing $reqs"
grep -qs '^name = "vlm4vla"' "$repo/pyproject.toml" || die "no vlm4vla pyproject.toml in $repo"

# shellcheck source=envs/venv-lib.sh
source "$repo/envs/venv-lib.sh"
venv_python "$venv" 3.11 "the pins (MuJoCo 2.3.7) need 3.11"
py=$venv/bin/python

echo "installing the pinned simulator requirements into $venv"
"$py" -m pip install --quiet -r "$reqs" || die "pip could not install $reqs (see above)"
echo "installing vlm4vla_core (editable, no dependencies) from $repo"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo (see above)"

# Check (envs/check-libero-venv.sh, which also runs on its own)
"$repo/envs/check-libero-venv.sh" "$venv" || die "the environment is installed but its check failed (see above)"
echo "done: simulator Python is $py"
