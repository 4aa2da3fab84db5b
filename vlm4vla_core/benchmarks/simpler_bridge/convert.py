"""Bridge V2 conventions in numpy only: the training-label standardisation and the conversion of a
canonical action to the SimplerEnv WidowX controller.

Imported by the data stage and by the simulator worker (numpy only: no torch, no TensorFlow).

Training labels (OpenVLA's ``bridge_orig`` transform, which VLM4VLA trains on; its sources: docs/benchmarks/simpler-bridge.md):

1. drop step 0 of every trajectory (its action is all zeros in Bridge V2);
2. binarise the gripper: > 0.95 open (1), < 0.05 closed (0); a value in between takes the value of
   the next settled step; a trailing run of in-between values keeps the trajectory's last raw value
   (the official reverse scan starts from it);
3. relabel the arm from the reached states: ``state[t+1, :6] - state[t, :6]`` (xyz in metres, roll,
   pitch, yaw as plain differences), and drop the last step, which has no next state.

A trajectory of T raw steps gives T - 2 training frames: raw frames 1 .. T-2.

Controller (SimplerEnv's ``arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos``): xyz delta in
metres, rotation delta as an axis-angle vector from the Euler deltas (static-axis x-y-z order, as
``transforms3d.euler.euler2axangle`` with its default axes), and an absolute gripper command
+1 open / -1 closed.
"""

from __future__ import annotations

import numpy as np

OPEN_ABOVE, CLOSED_BELOW = 0.95, 0.05
GRIPPER_RULES = ("consecutive_open_2", "none")


# -- training labels ---------------------------------------------------------------------------
def binarize_gripper(values: np.ndarray) -> np.ndarray:
    """Bridge gripper actions (1 open, 0 closed, continuous in between) -> {0, 1} as the official code does."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    carry = values[-1] if len(values) else 0.0
    for i in range(len(values) - 1, -1, -1):
        if values[i] > OPEN_ABOVE:
            carry = 1.0
        elif values[i] < CLOSED_BELOW:
            carry = 0.0
        out[i] = carry
    return out


def standardize_trajectory(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Raw Bridge trajectory (state [T, >=6] xyz+rpy first, action [T, 7] with the gripper last, 1 = open)
    -> canonical training actions [T - 2, 7] of raw frames 1 .. T-2 (gripper +1 closed / -1 open)."""
    state, action = np.asarray(state, dtype=np.float64), np.asarray(action, dtype=np.float64)
    if len(state) != len(action) or state.ndim != 2 or state.shape[1] < 6 or action.ndim != 2 or action.shape[1] != 7:
        raise ValueError(f"state {state.shape} and action {action.shape}: expected [T, >=6] and [T, 7]")
    if len(action) < 3:
        raise ValueError(f"a trajectory of {len(action)} steps has no frame left after dropping the first and last")
    state, action = state[1:], action[1:]  # the all-zero first step
    opened = binarize_gripper(action[:, 6])
    arm = state[1:, :6] - state[:-1, :6]  # reached-state deltas; the last step has no next state
    return np.concatenate([arm, (1.0 - 2.0 * opened[:-1])[:, None]], axis=1).astype(np.float32)


# -- controller --------------------------------------------------------------------------------
def euler_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of R = Rz(yaw) Ry(pitch) Rx(roll) (static axes, x first)."""
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def euler_to_rotvec(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Axis * angle of the Euler rotation, angle = 2 acos(w) in [0, 2 pi) as transforms3d returns it."""
    q = euler_to_quat(roll, pitch, yaw)
    vec = q[1:]
    norm = np.linalg.norm(vec)
    if norm < 1e-8:
        return np.zeros(3)
    return vec / norm * 2.0 * np.arccos(np.clip(q[0], -1.0, 1.0))


def to_controller(action: np.ndarray) -> np.ndarray:
    """Canonical action (xyz m, rpy rad deltas, gripper +1 closed / -1 open) -> WidowX env action
    [xyz, axis-angle, gripper] with the gripper as predicted: +1 open / -1 close (before the gripper rule).
    The official decode opens when the predicted open probability is > 0.5, so a canonical 0 closes."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (7,):
        raise ValueError(f"a Bridge action has 7 values, got shape {action.shape}")
    return np.concatenate([action[:3], euler_to_rotvec(*action[3:6]), [1.0 if action[6] < 0 else -1.0]])


class GripperRule:
    """The gripper command sent to the env, per episode (``reset`` at its start and when the
    instruction changes, as the official wrapper's ``reset``).

    ``consecutive_open_2`` (VLM4VLA's wrapper): +1 (open) is sent only once the policy has predicted
    open on at least 2 consecutive steps, otherwise -1 (close); so every episode starts with a close
    command. ``none``: the prediction is sent as it is (SimplerEnv's Octo adapter for WidowX).
    """

    def __init__(self, rule: str):
        if rule not in GRIPPER_RULES:
            raise ValueError(f"gripper rule {rule!r} is not one of {GRIPPER_RULES}")
        self.rule, self.opens = rule, 0

    def reset(self) -> None:
        self.opens = 0

    def __call__(self, predicted: float) -> float:
        if self.rule == "none":
            return 1.0 if predicted > 0 else -1.0
        self.opens = self.opens + 1 if predicted > 0 else 0
        return 1.0 if self.opens >= 2 else -1.0
