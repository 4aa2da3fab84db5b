#!/usr/bin/env bash
# The final check of envs/setup-calvin-venv.sh, on its own:
# does the CALVIN simulator environment at VENV_DIR work?
#
#   envs/check-calvin-venv.sh VENV_DIR
#
# VENV_DIR may be relative to the current folder or absolute.
# Scene D composes from calvin_env's conf, resets to a chain's initial
# condition, renders rgb_static through EGL, steps and runs the oracle.
set -euo pipefail

die() { echo "check-calvin-venv: $*" >&2; exit 1; }

setup=envs/setup-calvin-venv.sh
# shellcheck source=envs/venv-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv-lib.sh"
py=$(venv_check_python "$@") || exit 1  # absolute: the check may run from another folder
# run outside any folder named calvin_env (its conf would shadow the installed one)
(cd / && "$py" - <<'PY') || die "the check above failed"
import numpy as np
from vlm4vla_core.benchmarks.calvin import protocol
from vlm4vla_core.benchmarks.calvin.sim import CalvinSim
import vlm4vla_core.serving.client  # noqa: F401  (the policy client)
with CalvinSim(None) as sim:
    condition, subtasks = protocol.chains()[0]
    obs = sim.reset(*protocol.initial_state(condition))
    image, start = obs["render"](), sim.info()
    obs, info = sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert image.shape == (200, 200, 3) and image.std() > 0, image.shape
    assert not sim.success(start, info, subtasks[0])
    print(f"ok: {sim.scene_source}; rgb_static {image.shape}")
PY
