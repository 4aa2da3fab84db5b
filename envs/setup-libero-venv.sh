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

if [ -e "$venv" ] && [ ! -x "$venv/bin/python" ]; then
  die "$venv exists but is not a virtual environment (no bin/python); remove it or pick another path"
fi
if [ ! -x "$venv/bin/python" ]; then
  python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null || die "$python not found: install Python 3.11 or set PYTHON=/path/to/python3.11"
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$python does not run"
  [ "$version" = 3.11 ] || die "$python is Python $version; the pins (MuJoCo 2.3.7) need 3.11: set PYTHON=/path/to/python3.11"
  echo "creating $venv with $python"
  "$python" -m venv "$venv" || die "could not create the venv with $python (Debian/Ubuntu: apt-get install python3.11-venv)"
fi
py=$venv/bin/python
"$py" -m pip --version >/dev/null 2>&1 || "$py" -m ensurepip --upgrade >/dev/null \
  || die "$venv has no pip and ensurepip failed: remove it and run again"
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$version" = 3.11 ] || die "$venv has Python $version; the pins (MuJoCo 2.3.7) need 3.11: remove it or pass another VENV_DIR"

echo "installing the pinned simulator requirements into $venv"
"$py" -m pip install --quiet -r "$reqs" || die "pip could not install $reqs (see above)"
echo "installing vlm4vla_core (editable, no dependencies) from $repo"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo (see above)"

# Check: the simulator module and the policy client import, and the suite loads (no env is built).
"$py" - <<'EOF' || die "the environment is installed but the check above failed"
import vlm4vla_core.benchmarks.libero10.sim as sim
import vlm4vla_core.serving.client  # noqa: F401  (the policy client)
tasks = sim.suite_tasks()
assert len(tasks) == 10, tasks
print(f"ok: {sim.SUITE}, {len(tasks)} tasks, {sum(t['num_init_states'] for t in tasks)} init states")
EOF
echo "done: simulator Python is $py"
