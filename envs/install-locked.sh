#!/usr/bin/env bash
# Install the core environment (training, workflow, analysis, tests) from its lock.
#
#   envs/install-locked.sh PYTHON
#
# PYTHON is the interpreter of the environment to fill (make setup: .venv/bin/python; the conda
# environment envs/vlm4vla.yaml: its python, through vlm4vla.post-deploy.sh). Three steps:
#   1. every package of envs/vlm4vla-lock.txt at its exact version, each file checked against the
#      lock's hashes, and nothing else (--no-deps: no resolver runs, so no other version can come in);
#   2. torch at the version pyproject.toml pins, the one package the lock leaves out: the CPU build
#      where pip finds one (a local wheel folder, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu),
#      PyPI's CUDA build otherwise (GPU nodes); its other dependencies are already in place from step 1;
#   3. the project itself, editable and without dependencies;
# then `pip check` and `python -m vlm4vla_core lock-check` (installed versions equal the lock).
set -euo pipefail

die() { echo "install-locked: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 PYTHON"
py=$1
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || die "$py is not a Python 3.11 interpreter (the lock is resolved for 3.11)"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock=$repo/envs/vlm4vla-lock.txt
[ -f "$lock" ] || die "missing $lock (make lock writes it)"
torch=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' "$repo/pyproject.toml")
[ -n "$torch" ] || die "$repo/pyproject.toml pins no torch (\"torch==X\" in project.dependencies)"

echo "installing the lock $lock (exact versions, hashes checked)"
"$py" -m pip install --quiet --require-hashes --no-deps -r "$lock" || die "pip could not install $lock (see above)"
echo "installing torch==$torch"
"$py" -m pip install --quiet "torch==$torch" || die "pip could not install torch==$torch (see above)"
echo "installing vlm4vla_core (editable, no dependencies) from $repo"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo"
"$py" -m pip check || die "the installed packages do not satisfy each other's requirements (see above)"
(cd "$repo" && "$py" -m vlm4vla_core lock-check) || die "the installed versions differ from $lock (see above)"
