#!/usr/bin/env bash
# The final check of envs/setup-lmms-venv.sh, on its own:
# does the lmms-eval environment at VENV_DIR work?
#
#   envs/check-lmms-venv.sh VENV_DIR
#
# VENV_DIR may be relative to the current folder or absolute.
# The pins of torch and torchvision held; lmms-eval's evaluator, task
# index and the project's backends import.
set -euo pipefail

die() { echo "check-lmms-venv: $*" >&2; exit 1; }

setup=envs/setup-lmms-venv.sh
# shellcheck source=envs/venv-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv-lib.sh"
py=$(venv_check_python "$@") || exit 1  # absolute: the check may run from another folder
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs=$repo/envs/lmms-eval-requirements.txt
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
grep -E '^(torch|torchvision)==' "$reqs" > "$constraints"
"$py" - "$constraints" <<'EOF' || die "the check above failed"
import sys
from importlib.metadata import version

for line in open(sys.argv[1]):
    name, pins = line.strip().split("==", 1)
    want = pins.split(",")[0]
    assert version(name) == want, f"{name} {version(name)} installed, {pins} pinned"
import torchvision  # noqa: F401  (its operators load only beside the torch build it was built for)
from lmms_eval import evaluator  # noqa: F401
from lmms_eval.models import get_model

from vlm4vla_core.vqa.lmms import BACKENDS, LMMS_EVAL_VERSION

assert version("lmms-eval") == LMMS_EVAL_VERSION, version("lmms-eval")
for backend in sorted(set(BACKENDS.values())):
    get_model(backend)
import torch

print(f"ok: lmms-eval {version('lmms-eval')}, torch {torch.__version__}, torchvision {version('torchvision')}, "
      f"transformers {version('transformers')}; backends {', '.join(sorted(set(BACKENDS.values())))}")
EOF
