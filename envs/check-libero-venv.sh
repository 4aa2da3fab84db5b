#!/usr/bin/env bash
# The final check of envs/setup-libero-venv.sh, on its own:
# does the LIBERO-10 simulator environment at VENV_DIR work?
#
#   envs/check-libero-venv.sh VENV_DIR
#
# VENV_DIR may be relative to the current folder or absolute.
# The simulator module and the policy client import, and the suite
# loads (no env is built).
set -euo pipefail

die() { echo "check-libero-venv: $*" >&2; exit 1; }

setup=envs/setup-libero-venv.sh
# shellcheck source=envs/venv-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv-lib.sh"
py=$(venv_check_python "$@") || exit 1  # absolute: the check may run from another folder
"$py" - <<'EOF' || die "the check above failed"
import vlm4vla_core.benchmarks.libero10.sim as sim
import vlm4vla_core.serving.client  # noqa: F401  (the policy client)
tasks = sim.suite_tasks()
assert len(tasks) == 10, tasks
print(f"ok: {sim.SUITE}, {len(tasks)} tasks, {sum(t['num_init_states'] for t in tasks)} init states")
EOF
