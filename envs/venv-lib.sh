# Sourced by the envs/setup-*-venv.sh and envs/check-*-venv.sh scripts (not run on its own); they define die() first.
#
#   venv_python VENV_DIR X.Y WHY
#
# Creates VENV_DIR with $PYTHON (default pythonX.Y) if it does not exist, makes sure it has pip,
# and stops (die) when it is not a virtual environment or its Python is not X.Y; WHY says why
# the pins need that version. Prints what it does on stderr.
venv_python() {
  local venv=$1 want=$2 why=$3 python version
  if [ -e "$venv" ] && [ ! -x "$venv/bin/python" ]; then
    die "$venv exists but is not a virtual environment (no bin/python); remove it or pick another path"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python=${PYTHON:-python$want}
    command -v "$python" >/dev/null || die "$python not found: install Python $want or set PYTHON=/path/to/python$want"
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$python does not run"
    [ "$version" = "$want" ] || die "$python is Python $version; $why: set PYTHON=/path/to/python$want"
    echo "creating $venv with $python" >&2
    "$python" -m venv "$venv" || die "could not create the venv with $python (Debian/Ubuntu: apt-get install python$want-venv)"
  fi
  "$venv/bin/python" -m pip --version >/dev/null 2>&1 || "$venv/bin/python" -m ensurepip --upgrade >/dev/null \
    || die "$venv has no pip and ensurepip failed: remove it and run again"
  version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$version" = "$want" ] || die "$venv has Python $version; $why: remove it or pass another VENV_DIR"
}

#   py=$(venv_check_python "$@") || exit 1
#
# The interpreter of a check-*-venv.sh script's one argument VENV_DIR (relative to the current
# folder or absolute), as an absolute path, so the check may run from another folder; stops with the
# usage or "no bin/python" (naming the setup script) otherwise. Needs die() and $setup (the setup
# script that creates the environment).
venv_check_python() {
  [ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 VENV_DIR"
  [ -x "$1/bin/python" ] || die "$1 has no bin/python ($setup creates it)"
  echo "$(cd "$1" && pwd)/bin/python"
}
