#!/usr/bin/env bash
# The final check of envs/setup-simpler-venv.sh, on its own:
# does the SimplerEnv-Bridge simulator environment at VENV_DIR work?
#
#   envs/check-simpler-venv.sh VENV_DIR
#
# VENV_DIR may be relative to the current folder or absolute.
# The envs register, the overlays are found, the policy client imports
# (no env is built); then a usable Vulkan device is looked for (SAPIEN renders through Vulkan only).
set -euo pipefail

die() { echo "check-simpler-venv: $*" >&2; exit 1; }

setup=envs/setup-simpler-venv.sh
# shellcheck source=envs/venv-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv-lib.sh"
py=$(venv_check_python "$@") || exit 1  # absolute: the check may run from another folder
"$py" - <<'PY' || die "the check above failed"
import gymnasium as gym
import vlm4vla_core.serving.client  # noqa: F401  (the policy client)
from vlm4vla_core.benchmarks.simpler_bridge import TASKS
from vlm4vla_core.benchmarks.simpler_bridge import sim
sim._stack()
for task in TASKS.values():
    gym.spec(task["env_id"])
    sim.overlay_path(task["overlay"])
print(f"ok: {len(TASKS)} Bridge envs registered, overlays found")
PY
"$py" -m vlm4vla_core.benchmarks.simpler_bridge.sim --check-vulkan \
  || echo "installed, but this machine has no usable Vulkan device: the rollouts need one (see above)" >&2
