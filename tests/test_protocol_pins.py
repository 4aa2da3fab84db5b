"""The paper's benchmark protocols pinned to the official code, constant by constant.

Every constant is checked twice: in the plug-in's defaults (what a config that leaves the key out
runs) and in the study's config.yaml (what the paper study runs). Each check names the official
file and line it transcribes. Sources, at the commits of the protocol reference:

- VLM4VLA: github.com/CladernyJorn/VLM4VLA at 20fedc9 (the paper's evaluators and scripts)
- CALVIN:  github.com/mees/calvin at fa03f01
- SimplerEnv: github.com/simpler-env/SimplerEnv at 4ab7178

Also here: the gripper sign at each simulator boundary, from the policy's head to the simulator's
action, and the image transforms on fixtures that tell a rotation from a flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import Obs, run_episodes
from vlm4vla_core.benchmarks.calvin import canonical_to_calvin
from vlm4vla_core.benchmarks.libero10 import NOOP, libero_image
from vlm4vla_core.benchmarks.simpler_bridge import TASKS
from vlm4vla_core.benchmarks.simpler_bridge.convert import GripperRule, to_controller
from vlm4vla_core.config import Study, execute_steps

ROOT = Path(__file__).resolve().parents[1]
CALVIN, SIMPLER, LIBERO = benchmarks.get("calvin"), benchmarks.get("simpler_bridge"), benchmarks.get("libero10")


@pytest.fixture(scope="module")
def study() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def both(study: dict, name: str, bench) -> list[dict]:
    """The plug-in's defaults (an entry with the required keys only) and config.yaml's entry."""
    minimal = dict(kind=bench.kind, chunk=study["benchmarks"][name]["chunk"], data_path="unused")
    return [bench.settings(minimal), bench.settings(study["benchmarks"][name])]


# -- CALVIN ABC->D ----------------------------------------------------------------------------------
def test_calvin_step_limit_chains_and_chunk(study):
    for entry in both(study, "calvin", CALVIN):
        # VLM4VLA eval/calvin/evaluate_ddp.py:52 `EP_LEN = 360`; CALVIN evaluation/evaluate_policy.py:38
        assert entry["max_steps"] == 360
        # VLM4VLA eval/calvin/evaluate_ddp.py:53 `NUM_SEQUENCES = 1000`; CALVIN evaluate_policy.py:39
        assert entry["chains"] == 1000
        assert len(CALVIN.episodes(entry, 0)) == 1000
    # VLM4VLA configs/calvin_finetune/finetune_qwen25vl-3b_calvin.json:12 `"fwd_pred_next_n": 10`
    assert study["benchmarks"]["calvin"]["chunk"] == 10


class _CalvinEnv:
    """Scene frames mark one corner pixel with the step; the oracle reports the first subtask done at
    step 2 and nothing after."""

    def __init__(self, log):
        self.log, self.t = log, 0

    def reset(self, robot_obs, scene_obs):
        self.log.append("reset")
        return {"render": lambda: np.full((4, 4, 3), 0, np.uint8)}

    def info(self):
        return {}

    def step(self, action):
        self.t += 1
        self.log.append(np.asarray(action).tolist())
        frame = np.zeros((4, 4, 3), np.uint8)
        frame[0, 0] = self.t  # one corner pixel: any flip moves it
        return {"render": lambda f=frame: f}, {}

    def success(self, start, info, subtask):
        return self.t == 2


def test_calvin_no_wait_steps_policy_reset_per_subtask_and_gripper_at_the_boundary(monkeypatch):
    log, seen = [], []
    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: _CalvinEnv(log))
    entry = CALVIN.settings(dict(kind="calvin", chunk=10, data_path="x", chains=1, max_steps=3))

    def infer(requests):
        seen.extend(r["image"].copy() for r in requests)
        chunk = np.zeros((10, 7), np.float32)
        chunk[:, :6] = np.arange(6) * 0.1
        chunk[:, 6] = 1.0  # canonical +1: closed
        return [chunk for _ in requests]

    [rec] = run_episodes(CALVIN, entry, CALVIN.episodes(entry, 0), infer, execute=10, progress=False)
    # no no-op or wait step: the first env.step already carries the policy's action (VLM4VLA
    # eval/calvin/evaluate_ddp.py:302-303 `for _ in range(EP_LEN): action = model.step(...)`); the env is
    # reset once per chain; subtask 1 succeeds at step 2, subtask 2 runs its 3 steps and fails
    assert log[0] == "reset" and log.count("reset") == 1 and len(log) == 1 + 2 + 3 and rec["steps"] == 5
    assert rec["completed"] == 1 and [r["steps"] for r in rec["subtask_results"]] == [2, 3]
    # evaluate_ddp.py:299 `model.reset()` before every subtask: a fresh chunk although 8 of 10 actions are queued
    assert rec["plans"] == 2 and len(seen) == 2
    # CALVIN's env takes -1 close / +1 open: VLM4VLA eval/calvin/model_wrapper.py:373 `(g - 0.5) * 2` of the
    # open-positive label, then :397 `1 if action[-1] > 0 else -1`; a canonical closed arrives as -1
    assert np.allclose(log[1:], [[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, -1.0]] * 5)
    # the image as rendered (rgb_static, model_wrapper.py:249), no rotation or flip: the marked corner stays
    assert seen[1][0, 0].tolist() == [2, 2, 2] and int(seen[1].sum()) == 6


def test_calvin_gripper_convention():
    # +1 canonical (closed) -> CALVIN -1 (close); -1 canonical (open) -> +1 (open); exactly +-1
    assert canonical_to_calvin(np.array([0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 0.7]))[-1] == -1.0
    assert canonical_to_calvin(np.array([0.3, -0.2, 0.1, 0.5, -0.4, 0.2, -0.7]))[-1] == 1.0
    arm = np.array([0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 1.0])
    assert canonical_to_calvin(arm)[:6].tolist() == arm[:6].tolist()  # the arm passes unchanged


# -- LIBERO-10 -------------------------------------------------------------------------------------
def test_libero_step_limit_wait_steps_trials_and_seed(study):
    for entry in both(study, "libero10", LIBERO):
        # VLM4VLA eval/libero/libero_evaluator.py:148 `max_steps = 520  # longest training demo has 505 steps`
        assert entry["max_steps"] == 520
        # libero_evaluator.py:26 `num_steps_wait=10`
        assert entry["wait_steps"] == 10
        # VLM4VLA eval/libero/run_libero_eval.py:55 `--num_trials_per_task default=50`
        assert entry["episodes_per_task"] == 50 and len(LIBERO.episodes(entry, 0)) == 500
        # libero_evaluator.py:86 `env.seed(0)`; :137 `get_libero_env(task, resolution=256)`
        assert entry["env_seed"] == 0 and entry["camera_size"] == 256
        # the project's deliberate difference: no centre crop (it trains without crop augmentation)
        assert entry["center_crop"] is False
    # VLM4VLA configs/oxe_training/libero10/finetune_qwen25vl-3b_libero10.json:12 `"fwd_pred_next_n": 4`
    assert study["benchmarks"]["libero10"]["chunk"] == 4
    # libero_evaluator.py:43 the no-op `env.step([0, 0, 0, 0, 0, 0, -1])` (-1 = open)
    assert NOOP.tolist() == [0, 0, 0, 0, 0, 0, -1]


def test_libero_image_is_rotated_not_flipped():
    # VLM4VLA eval/libero/libero_evaluator.py:96 `img = img[::-1, ::-1]  # rotate 180 degrees`
    frame = np.zeros((6, 8, 3), np.uint8)
    frame[0, 0] = (255, 1, 2)  # a single marked corner: a rotation takes it to the opposite corner
    out = libero_image(frame)
    assert out.shape == (6, 8, 3)
    assert out[-1, -1].tolist() == [255, 1, 2] and int(out.sum()) == 258
    assert not np.array_equal(out, frame[::-1]) and not np.array_equal(out, frame[:, ::-1])  # not a flip
    assert not np.array_equal(out, np.rot90(frame, 2, axes=(1, 0))[::-1])


def test_libero_centre_crop_side_is_the_root_of_the_area():
    # VLM4VLA eval/libero/model_wrapper.py:155 `crop_scale = 0.9`, :221-222 `tf.sqrt(crop_scale)` per side
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[0, 0] = 9
    frame[-1, -1] = 7
    out = libero_image(frame, 0.9)
    side = int(round(256 * np.sqrt(0.9)))
    assert out.shape == (side, side, 3) == (243, 243, 3)
    assert int(out.sum()) == 0  # both corners fall outside a centred box
    # a centred box: the margins on both sides differ by at most one pixel
    frame = np.arange(256, dtype=np.uint8)[None, :, None].repeat(256, 0).repeat(3, 2)
    cols = libero_image(frame, 0.9)[0, :, 0].astype(int)
    left, right = 255 - cols[0], cols[-1]
    assert abs(left - right) <= 1 and left + right + side - 1 == 255


def test_libero_gripper_convention_and_no_op_wait(monkeypatch):
    # VLM4VLA eval/libero/model_wrapper.py:197 `action[..., -1] = -1.0 * (2.0 * (g > 0.5) - 1.0)` on the
    # open-positive label: +1 = close, -1 = open, the canonical convention itself
    log = []

    class Env:
        def reset(self, task_id, init_index):
            return {"agentview": np.zeros((4, 4, 3), np.uint8)}

        def step(self, action):
            log.append(np.asarray(action, float).tolist())
            return {"agentview": np.zeros((4, 4, 3), np.uint8)}, False

    monkeypatch.setattr(type(LIBERO), "simulator", lambda self, entry: Env())
    entry = LIBERO.settings(dict(kind="libero10", chunk=4, data_path="x", tasks=[0], episodes_per_task=1,
                                 max_steps=2))
    canonical = [0.1, -0.2, 0.3, -0.05, 0.04, 0.02, 1.0]
    run_episodes(LIBERO, entry, LIBERO.episodes(entry, 0),
                 lambda reqs: [np.array([canonical] * 4, np.float32) for _ in reqs], execute=4, progress=False)
    assert log[:10] == [NOOP.tolist()] * 10 and len(log) == 12
    assert np.allclose(log[10], canonical) and log[10][6] == 1.0  # closed stays +1 (close)


# -- SimplerEnv-Bridge -----------------------------------------------------------------------------
def test_bridge_tasks_steps_episodes_and_setups(study):
    # VLM4VLA scripts/bridge.bash:15, :23, :31 `--max-episode-steps 60`; :46 `--max-episode-steps 120` (eggplant);
    # :16, :24, :32, :47 the env names; :18 `--obj-variation-mode episode --obj-episode-range 0 24`
    official = {"PutCarrotOnPlateInScene-v0": 60, "StackGreenCubeOnYellowCubeBakedTexInScene-v0": 60,
                "PutSpoonOnTableClothInScene-v0": 60, "PutEggplantInBasketScene-v0": 120}
    for entry in both(study, "simpler_bridge", SIMPLER):
        eps = SIMPLER.episodes(entry, 0)
        assert entry["episodes_per_task"] == 24 and len(eps) == 96
        assert {e.params["env_id"]: e.params["max_steps"] for e in eps} == official
        assert sorted({e.params["episode_id"] for e in eps}) == list(range(24))
        # the official evaluator's success is overwritten every step (maniskill2_evaluator.py:131): final step
        assert entry["success"] == "final_step"
        # VLM4VLA eval/simpler/model_wrapper.py:70 `late_close_gripper = 2`, :143-152 (open after 2 in a row)
        assert entry["gripper_filter"] == "consecutive_open_2"
    # bridge.bash:7-11 the table setup; :38-42 the sink setup
    table = ("bridge_table_1_v1", "widowx", "bridge_real_eval_1.png", (0.147, 0.028))
    sink = ("bridge_table_1_v2", "widowx_sink_camera_setup", "bridge_sink.png", (0.127, 0.06))
    for name, task in TASKS.items():
        setup = (task["scene_name"], task["robot"], task["overlay"], tuple(task["init_xy"]))
        assert setup == (sink if task["env_id"] == "PutEggplantInBasketScene-v0" else table)
    # VLM4VLA configs/oxe_training/bridge/finetune_qwen25vl-3b_bridge.json:12 `"fwd_pred_next_n": 4`
    assert study["benchmarks"]["simpler_bridge"]["chunk"] == 4


def test_bridge_controller_and_camera():
    from vlm4vla_core.benchmarks import simpler_bridge

    # bridge.bash:15 `--control-freq 5 --sim-freq 500`; :19 `--robot-init-rot-quat-center 0 0 0 1`
    assert (simpler_bridge.CONTROL_FREQ, simpler_bridge.SIM_FREQ) == (5, 500)
    assert simpler_bridge.ROBOT_INIT_QUAT == (0.0, 0.0, 0.0, 1.0)
    # SimplerEnv simpler_env/utils/env/env_builder.py:26 (widowx)
    assert simpler_bridge.CONTROL_MODE == "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
    # SimplerEnv simpler_env/utils/env/observation_utils.py:7 (widowx: 3rd_view_camera)
    assert simpler_bridge.CAMERA == "3rd_view_camera"
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[0, 0] = 1
    assert np.array_equal(SIMPLER.image_transform({})(frame), frame)  # the frame as rendered


def test_bridge_gripper_convention():
    # VLM4VLA eval/simpler/model_wrapper.py:143 `2.0 * (open_gripper > 0.5) - 1.0`: the env takes +1 open
    assert to_controller(np.array([0, 0, 0, 0, 0, 0, 1.0]))[6] == -1.0  # canonical closed -> close
    assert to_controller(np.array([0, 0, 0, 0, 0, 0, -1.0]))[6] == 1.0  # canonical open -> open
    # :144-152: open is sent only from the second consecutive open prediction on
    rule = GripperRule("consecutive_open_2")
    assert [rule(p) for p in (1, 1, 1, -1, 1)] == [-1, 1, 1, -1, -1]


def test_bridge_controller_rotation_with_three_non_zero_angles():
    """VLM4VLA eval/simpler/model_wrapper.py:112-114: `roll, pitch, yaw = rotation_delta`,
    `euler2axangle(roll, pitch, yaw)` (transforms3d's static x-y-z axes), sent as axis * angle.
    scipy's extrinsic "xyz" Euler is the same rotation; every angle differs, so a swap of any two shows."""
    from scipy.spatial.transform import Rotation

    for rpy in [(0.11, -0.07, 0.23), (-0.3, 0.2, 0.05), (0.6, -0.45, -0.9)]:
        canonical = np.array([0.01, -0.02, 0.03, *rpy, 1.0])
        env = to_controller(canonical)
        assert env[:3].tolist() == [0.01, -0.02, 0.03]
        want = Rotation.from_euler("xyz", rpy).as_rotvec()
        assert np.allclose(env[3:6], want, atol=1e-12), (rpy, env[3:6], want)
        got = Rotation.from_rotvec(env[3:6]).as_matrix()
        assert np.allclose(got, Rotation.from_euler("xyz", rpy).as_matrix(), atol=1e-12)
        for swapped in [(rpy[1], rpy[0], rpy[2]), (rpy[2], rpy[1], rpy[0]), (rpy[0], rpy[2], rpy[1])]:
            assert not np.allclose(env[3:6], Rotation.from_euler("xyz", swapped).as_rotvec(), atol=1e-4)
        assert not np.allclose(env[3:6], Rotation.from_euler("XYZ", rpy).as_rotvec(), atol=1e-4)  # not intrinsic


# -- execution modes --------------------------------------------------------------------------------
#: execute_step values each official script evaluates: VLM4VLA eval/calvin/evaluate_ddp.py:303
#: `model.step(obs, lang_annotation, execute_step=10)`; eval/simpler/eval_ckpts_bridge.py:25
#: `execute_step = [4, 2, 1]`; eval/libero/eval_ckpts_libero.py:17 `execute_step = [4, 2]`
OFFICIAL_EXECUTE = {"calvin": {10}, "simpler_bridge": {4, 2, 1}, "libero10": {4, 2}}


def evaluated_execute_steps(study: Study, name: str, entry: dict) -> set[int]:
    modes = entry.get("modes") or study.evaluation.modes
    return {execute_steps(m, entry["chunk"]) for m in modes}


@pytest.mark.parametrize("name", sorted(OFFICIAL_EXECUTE))
def test_execution_modes_cover_the_official_ones(study, name):
    bench = benchmarks.get(study["benchmarks"][name]["kind"])
    for entry in both(study, name, bench):
        got = evaluated_execute_steps(Study.from_dict(study), name, entry)
        assert OFFICIAL_EXECUTE[name] <= got, (name, got)
        if "modes" in entry:  # a per-benchmark list runs exactly the official ones
            assert got == OFFICIAL_EXECUTE[name], (name, got)


# -- the gripper from the policy's head to each simulator ----------------------------------------
#: asymmetric bounds of different scales per dimension (what a dataset's 1st/99th percentiles look like)
ARM_LOW = (-0.02, -0.5, 0.0, -3.0, 0.1, -0.002)
ARM_HIGH = (0.06, 0.25, 2.0, 1.0, 0.3, 0.004)


@pytest.fixture(scope="module")
def forced_policy(tmp_path_factory):
    """A tiny policy whose head ignores its input: the arm output and the gripper logit are its bias."""
    import torch

    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy

    root = tmp_path_factory.mktemp("forced")
    get_adapter("qwen2_5_vl").make_tiny(root / "tiny", 56, seed=0)
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(root / "tiny"), chunk=2, action_dim=7, image_size=56,
                       head_hidden=8, head_layers=1, arm_low=ARM_LOW, arm_high=ARM_HIGH)
    policy = VLAPolicy(cfg).eval()

    def force(logit: float):
        last = policy.head[-1]
        with torch.no_grad():
            last.weight.zero_()
            bias = torch.zeros(2, 7)
            bias[:, 6] = logit
            last.bias.copy_(bias.reshape(-1))
        return policy

    return force


@pytest.mark.parametrize("logit", [2.5, -2.5])
def test_positive_logit_means_closed_at_every_simulator(forced_policy, logit):
    policy = forced_policy(logit)
    frame = np.zeros((56, 56, 3), np.uint8)
    [chunk] = policy.predict([frame], ["pick up the block"])
    closed = logit > 0
    assert chunk[:, 6].tolist() == [1.0 if closed else -1.0] * 2  # canonical: +1 closed
    action = chunk[0]
    assert canonical_to_calvin(action)[6] == (-1.0 if closed else 1.0)  # CALVIN: -1 close
    assert to_controller(action)[6] == (-1.0 if closed else 1.0)  # WidowX: -1 close
    assert LIBERO.action_to_env({})(action)[6] == (1.0 if closed else -1.0)  # LIBERO: +1 close


def test_gripper_loss_is_low_for_the_logit_sign_of_the_label(forced_policy):
    """The head learns the same sign: a closed label (+1) is fitted by a positive logit."""
    import torch

    policy = forced_policy(4.0)
    inputs = policy.encode([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    closed, opened = torch.zeros(1, 2, 7), torch.zeros(1, 2, 7)
    closed[..., 6], opened[..., 6] = 1.0, -1.0
    with torch.no_grad():
        _, m_closed = policy.loss(inputs, closed)
        _, m_open = policy.loss(inputs, opened)
    # binary cross-entropy of a logit 4 against label 1 and 0: log(1 + e^-4) and log(1 + e^4)
    assert m_closed["gripper"] == pytest.approx(np.log1p(np.exp(-4.0)), rel=1e-5)
    assert m_open["gripper"] == pytest.approx(np.log1p(np.exp(4.0)), rel=1e-5)
    assert m_closed["gripper_acc"] == 1.0 and m_open["gripper_acc"] == 0.0


def test_calvin_modes_are_ranked_by_average_length_not_by_full_chains():
    """The paper reports CALVIN by the average length (SR@1..5 summed); a mode with more full chains but
    a shorter average must lose the ``best`` rule, in one job and in a merge of shards."""
    from vlm4vla_core.config import select_mode
    from vlm4vla_core.evaluate import merge

    full = [dict(index=i, completed=c, success=c == 5) for i, c in enumerate([5, 0, 0, 0])]  # avg 1.25, 1 full
    half = [dict(index=i, completed=4, success=False) for i in range(4)]  # avg 4.0, no full chain
    assert CALVIN.metric == "avg_len" and CALVIN.score(full) == 1.25 and CALVIN.score(half) == 4.0
    assert select_mode({"whole_chunk": CALVIN.score(full), "half_chunk": CALVIN.score(half)}, "best") == "half_chunk"
    shards = [dict(kind="calvin", backbone="b", benchmark="calvin", ablation="full", seed=0, checkpoint="c",
                   episodes_total=4, mode_selection="best", shard=[k, 2],
                   modes={"whole_chunk": dict(execute_steps=10, episodes=full[k::2]),
                          "half_chunk": dict(execute_steps=5, episodes=half[k::2])}) for k in range(2)]
    assert merge(shards, ["s0", "s1"])["reported_mode"] == "half_chunk"
    # the success rate picks the other mode: the two rules differ on these records
    assert SIMPLER.score(full) == 0.25 > SIMPLER.score(half) == 0.0


def test_arm_scaling_is_centred_per_dimension_and_round_trips_inside_the_bounds(forced_policy):
    """What holds for the policy's arm scaling whatever its range: each dimension's midpoint of
    (low, high) maps to 0, the scaling is odd around it and proportional to each dimension's own width,
    and actions well inside the bounds come back unchanged."""
    import torch

    policy = forced_policy(0.0)
    low, high = np.array(ARM_LOW), np.array(ARM_HIGH)
    mid, half = (low + high) / 2, (high - low) / 2
    sign = np.array([1, -1, 1, -1, 1, -1])
    for frac in (0.0, 0.1, 0.3):
        a = torch.tensor(mid + frac * sign * half, dtype=torch.float32)
        n = policy.normalize_arm(a)
        assert torch.allclose(n.abs(), n.abs()[0].expand(6), atol=1e-5)  # same share of each width
        assert torch.allclose(n, -policy.normalize_arm(torch.tensor(mid - frac * sign * half, dtype=torch.float32)),
                              atol=1e-5)
        assert torch.allclose(policy.denormalize_arm(n), a, rtol=1e-5, atol=1e-7)
        if frac:
            assert (torch.sign(n) == torch.tensor(sign, dtype=n.dtype)).all()
        else:
            assert torch.allclose(n, torch.zeros(6), atol=1e-5)
    out = policy.normalize_arm(torch.tensor(mid + 0.2 * half, dtype=torch.float32))
    inner = policy.normalize_arm(torch.tensor(mid + 0.1 * half, dtype=torch.float32))
    assert torch.allclose(out, 2 * inner, atol=1e-6)  # linear inside the bounds
    # actions predicted by the head come back in each dimension's own units: the head's zero is the midpoint
    [chunk] = policy.predict([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    assert np.allclose(chunk[:, :6], mid, rtol=1e-5, atol=1e-7)


def test_a_zero_logit_is_open_and_the_loss_reports_its_parts(forced_policy):
    import torch
    from dataclasses import replace

    policy = forced_policy(0.0)
    [chunk] = policy.predict([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    assert chunk[:, 6].tolist() == [-1.0, -1.0]  # closed needs a positive logit: 0 is open
    inputs = policy.encode([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    closed = torch.zeros(1, 2, 7)
    closed[..., :6] = torch.tensor((np.array(ARM_LOW) + np.array(ARM_HIGH)) / 2, dtype=torch.float32)
    closed[..., 6] = 1.0
    with torch.no_grad():
        total, m = policy.loss(inputs, closed)
    assert set(m) == {"loss", "arm", "gripper", "gripper_acc"}
    assert m["gripper"] == pytest.approx(np.log(2.0)) and m["gripper_acc"] == 0.0
    assert m["arm"] == pytest.approx(0.0, abs=1e-8)  # the head's zero is the midpoint of every dimension
    assert m["loss"] == pytest.approx(m["arm"] + policy.cfg.gripper_weight * m["gripper"]) == total.item()
    # a dimension without spread in the data (low == high) still scales to finite values
    saved = policy.cfg
    policy.cfg = replace(saved, arm_low=(0.0,) * 6, arm_high=(0.0,) * 6)
    try:
        assert torch.isfinite(policy.normalize_arm(torch.tensor([0.0, 1e-3, -1e-3, 0.0, 0.0, 0.0]))).all()
    finally:
        policy.cfg = saved


@pytest.mark.parametrize("kind", ["huber", "mse"])
def test_arm_loss_is_the_configured_kind_and_a_zero_gripper_action_is_open(forced_policy, kind):
    """The arm loss is VLM4VLA's Huber (base_policy.py ``loss``) or MSE as configured, checked against the closed
    form on a label far from the head's output (where the two differ); a gripper action of exactly 0 is labelled
    open (closed needs a positive action)."""
    import torch
    from dataclasses import replace

    policy = forced_policy(4.0)
    policy.cfg = replace(policy.cfg, loss=kind)
    inputs = policy.encode([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    actions = torch.zeros(1, 2, 7)
    actions[..., :6] = torch.tensor(ARM_HIGH, dtype=torch.float32)  # label 1 in every dimension; the head says 0
    actions[0, 0, 6], actions[0, 1, 6] = 0.0, 1.0
    with torch.no_grad():
        _, m = policy.loss(inputs, actions)
    label = policy.normalize_arm(actions[..., :6])
    d = label.abs()
    expected = (torch.where(d < 1, 0.5 * d**2, d - 0.5) if kind == "huber" else d**2).mean().item()
    assert m["arm"] == pytest.approx(expected, rel=1e-5) and abs(float(label.max()) - 1) < 1e-5
    # the gripper: logit 4 against labels [0 (open), 1 (closed)]
    assert m["gripper"] == pytest.approx((np.log1p(np.exp(4.0)) + np.log1p(np.exp(-4.0))) / 2, rel=1e-5)
    assert m["gripper_acc"] == 0.5


def test_full_range_labels_clip_below_the_low_percentile_and_accuracy_reads_the_logit_sign(forced_policy):
    """``arm_range: full`` clips an action below q01 to -norm (and above q99 to +norm), as above; the gripper
    accuracy counts a logit of 0.5 as closed (the sign of the logit, not a margin)."""
    import torch

    from vlm4vla_core.policy import arm_to_label

    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    far = np.array([-9.0, 5.0])  # below q01 in the first dimension, above q99 in the second
    assert arm_to_label(far, low, high, 0.65, "full").tolist() == pytest.approx([-0.65, 0.65])
    assert arm_to_label(far, low, high, 0.65, "official").tolist() == pytest.approx([-1.0, 1.0])
    policy = forced_policy(0.5)
    inputs = policy.encode([np.zeros((56, 56, 3), np.uint8)], ["pick up the block"])
    closed = torch.zeros(1, 2, 7)
    closed[..., 6] = 1.0
    with torch.no_grad():
        _, m = policy.loss(inputs, closed)
    assert m["gripper_acc"] == 1.0
