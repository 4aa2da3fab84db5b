"""Records two short LIBERO-10 demos of task 0 in the real simulator, in the HDF5 demos' terms.

``PYTHONPATH=. .venv-libero/bin/python tests/libero_record.py tests/data/libero_recorded_demos.npz``
(the LIBERO simulator environment) wrote the fixture ``tests/data/libero_recorded_demos.npz``.
Demo 0 starts from the suite's init state 0 and moves the arm a little: its task is not done at the
end. Demo 1 starts from init state 1 with the alphabet soup and the tomato sauce set into the basket
and left to settle (the task's goal holds from the start), then moves the arm away from the basket:
its task is done at the end. Both hold leading no-ops, a repeated no-op and a gripper-only action.
Per demo: ``states_d`` (the simulator state before each action), ``actions_d`` and ``done_d`` (the
task done after the last action); no images (a replay renders its own).
"""

import sys

import numpy as np

from vlm4vla_core.benchmarks.libero10.sim import LiberoSim

STILL, UP, RIGHT = [0, 0, 0, 0, 0, 0, -1], [0, 0, 0.6, 0, 0, 0, -1], [0, 0.5, 0, 0, 0, 0, -1]
CLOSE = [0, 0, 0, 0, 0, 0, 1]  # arm still, gripper closes: not a no-op
ACTIONS = np.array([STILL, STILL, UP, UP, STILL, CLOSE, CLOSE, RIGHT, RIGHT, UP], dtype=np.float64)


def record(sim, actions):
    states, done = [], False
    for a in actions:
        states.append(sim._env.sim.get_state().flatten())
        _, done = sim.step(a)
    return np.array(states), done


def into_basket(sim):
    """Set the soup and the sauce into the basket of the current scene and let them settle."""
    inner = sim._env.env
    data, model = inner.sim.data, inner.sim.model
    basket = data.body_xpos[model.body_name2id("basket_1_main")].copy()
    for name, dx in (("alphabet_soup_1", -0.03), ("tomato_sauce_1", 0.03)):
        qpos = data.get_joint_qpos(f"{name}_joint0").copy()
        qpos[:3] = basket + np.array([dx, 0.0, 0.05])
        data.set_joint_qpos(f"{name}_joint0", qpos)
    inner.sim.forward()
    for _ in range(20):
        sim.step(np.array(STILL, dtype=np.float64))
    return inner._check_success()


def main(out):
    arrays = {}
    with LiberoSim(camera_size=128, wrist=False) as sim:
        sim.reset(0, 0)
        states, done = record(sim, ACTIONS)
        arrays.update(states_0=states, actions_0=ACTIONS, done_0=done)
        sim.reset(0, 1)
        if not into_basket(sim):
            raise SystemExit("the goal does not hold after setting the objects into the basket")
        states, done = record(sim, ACTIONS)
        arrays.update(states_1=states, actions_1=ACTIONS, done_1=done)
    np.savez_compressed(out, **arrays)
    print(f"recorded: done {bool(arrays['done_0'])}, {bool(arrays['done_1'])}")


if __name__ == "__main__":
    main(sys.argv[1])
