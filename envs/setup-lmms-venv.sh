#!/usr/bin/env bash
# Create or update the lmms-eval virtual environment (standard VQA benchmarks, stage vqa-lmms).
#
#   envs/setup-lmms-venv.sh VENV_DIR
#
# lmms-eval needs torchvision, which the project's core environment must never get, so it lives
# here. Creates VENV_DIR with Python 3.11 if it does not exist (PYTHON=... picks another 3.11
# interpreter), installs torch and torchvision first, at the pins of envs/lmms-eval-requirements.txt,
# then the rest of that file under a constraint on those two (so that no dependency swaps the torch
# build for another), then the project itself without its dependencies (`pip install --no-deps -e .`).
# Safe to run again: an up-to-date environment is left as it is. Point a vqa_sets entry's
# `python:` key at VENV_DIR/bin/python to run its lmms-eval task there.
set -euo pipefail

die() { echo "setup-lmms-venv: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 VENV_DIR"
venv=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs=$repo/envs/lmms-eval-requirements.txt
[ -f "$reqs" ] || die "missing $reqs"
grep -qs '^name = "vlm4vla"' "$repo/pyproject.toml" || die "no vlm4vla pyproject.toml in $repo"

# shellcheck source=envs/venv-lib.sh
source "$repo/envs/venv-lib.sh"
venv_python "$venv" 3.11 "the pins are for 3.11"
py=$venv/bin/python

# torch and torchvision first, then everything else constrained to exactly those two
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
grep -E '^(torch|torchvision)==' "$reqs" > "$constraints"
[ "$(wc -l < "$constraints")" -eq 2 ] || die "$reqs must pin torch and torchvision (torch==X, torchvision==Y)"
echo "installing $(tr '\n' ' ' < "$constraints")into $venv"
# shellcheck disable=SC2046  # one argument per line of the file
"$py" -m pip install --quiet $(cat "$constraints") || die "pip could not install $(tr '\n' ' ' < "$constraints")"
echo "installing the pinned lmms-eval requirements into $venv"
"$py" -m pip install --quiet -c "$constraints" -r "$reqs" || die "pip could not install $reqs (see above)"
echo "installing vlm4vla_core (editable, no dependencies) from $repo"
(cd "$repo" && "$py" -m pip install --quiet --no-deps -e .) || die "pip could not install the project from $repo (see above)"

# Check (envs/check-lmms-venv.sh, which also runs on its own)
"$repo/envs/check-lmms-venv.sh" "$venv" || die "the environment is installed but its check failed (see above)"
echo "done: lmms-eval Python is $py"
