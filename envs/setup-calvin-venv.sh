#!/usr/bin/env bash
# Create or update the CALVIN simulator virtual environment.
#
#   envs/setup-calvin-venv.sh VENV_DIR CALVIN_ENV_SRC
#
# CALVIN_ENV_SRC is a local git clone of https://github.com/mees/calvin_env (calvin_env is not on
# PyPI; its tacto submodule is not needed). Creates VENV_DIR with Python 3.11 if it does not exist
# (PYTHON=... picks another 3.11 interpreter), installs the pins of envs/calvin-requirements.txt,
# then calvin_env from the clone and the project itself, both editable and without dependencies.
# Safe to run again. Point the benchmark's `simulator_python` at VENV_DIR/bin/python.
set -euo pipefail

die() { echo "setup-calvin-venv: $*" >&2; exit 1; }

[ $# -eq 2 ] && [ -n "$1" ] && [ -n "$2" ] || die "usage: $0 VENV_DIR CALVIN_ENV_SRC"
venv=$1
src=$(cd "$2" 2>/dev/null && pwd) || die "$2: no such folder (git clone https://github.com/mees/calvin_env)"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs=$repo/envs/calvin-requirements.txt
[ -f "$src/calvin_env/envs/play_table_env.py" ] && [ -f "$src/conf/config_data_collection.yaml" ] \
  || die "$src is not a calvin_env checkout (calvin_env/envs/play_table_env.py, conf/ expected)"
git -C "$src" rev-parse HEAD >/dev/null 2>&1 \
  || die "$src is not a git clone: calvin_env reads its own commit hash when an env is built"

# shellcheck source=envs/venv-lib.sh
source "$repo/envs/venv-lib.sh"
venv_python "$venv" 3.11 "the pins need 3.11"
py=$venv/bin/python

"$py" -m pip install --quiet -r "$reqs" || die "pip could not install $reqs (see above)"
"$py" -m pip install --quiet --no-deps -e "$src" || die "pip could not install calvin_env from $src"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo"

# Check (envs/check-calvin-venv.sh, which also runs on its own)
"$repo/envs/check-calvin-venv.sh" "$venv" || die "the environment is installed but its check failed (see above)"
echo "done: simulator Python is $py"
