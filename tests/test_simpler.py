"""SimplerEnv-Bridge: the protocol against a fake SimplerEnv that records every call (episode ids, the
task setups, step limits, final-step success), the action conversion and the gripper rule on hand-made
predictions, the per-task and 4-task mean with Wilson intervals, the Vulkan check, and the importer on
LeRobot and RLDS fixtures written in the native layouts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import run_episodes
from vlm4vla_core.benchmarks.simpler_bridge import OFFICIAL_STATS, TASKS, summary, wilson
from vlm4vla_core.benchmarks.simpler_bridge import importer as bridge_importer
from vlm4vla_core.benchmarks.simpler_bridge.convert import (GripperRule, binarize_gripper, euler_to_rotvec,
                                                            standardize_trajectory, to_controller)
from vlm4vla_core.config import ConfigError
from vlm4vla_core.episodes.source import TrainingSet

from bridge_fixtures import tf_python, trajectories, write_lerobot_v20, write_rlds

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = benchmarks.get("simpler_bridge")
ENV_IDS = ["PutSpoonOnTableClothInScene-v0", "PutCarrotOnPlateInScene-v0",
           "StackGreenCubeOnYellowCubeBakedTexInScene-v0", "PutEggplantInBasketScene-v0"]


def entry(**kw) -> dict:
    return BRIDGE.settings({**dict(kind="simpler_bridge", chunk=4, data_path="unused", vulkan_check=False), **kw})


class FakeSimpler:
    """Records resets and env actions. Frames encode (episode id, step). ``success`` holds at the steps
    listed per (env id, episode id); ``truncated`` comes at the limit the env was built with;
    ``new_instruction`` switches the instruction after the given step."""

    def __init__(self, log: list, success_steps: dict | None = None, new_instruction: dict | None = None):
        self.log, self.success_steps, self.new_instruction = log, success_steps or {}, new_instruction or {}

    def _frame(self):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0], frame[..., 1] = self.key[1], self.t
        return frame

    def reset(self, env_id, episode_id, setup, max_steps):
        self.key, self.t, self.limit = (env_id, episode_id), 0, max_steps
        self.instruction = next(t["instruction"] for t in TASKS.values() if t["env_id"] == env_id)
        self.log.append(("reset", env_id, episode_id, dict(setup), max_steps))
        return self._frame(), self.instruction

    def step(self, action):
        self.t += 1
        self.log.append(("step", self.key, np.asarray(action, float).tolist()))
        if self.new_instruction.get(self.key) == self.t:
            self.instruction = "a new instruction"
        return self._frame(), dict(success=self.t in self.success_steps.get(self.key, ()),
                                   truncated=self.t >= self.limit, instruction=self.instruction,
                                   episode_stats={"moved_correct_obj": True})


def policy(requests_log: list, gripper=-1.0):
    """Chunks of 4 canonical actions: x = request count, y = position in the chunk, yaw 0.1, gripper as given."""

    def infer(requests):
        out = []
        for r in requests:
            requests_log.append(r)
            chunk = np.zeros((4, 7), np.float32)
            chunk[:, 0], chunk[:, 1], chunk[:, 5], chunk[:, 6] = len(requests_log), np.arange(4), 0.1, gripper
            out.append(chunk)
        return out

    return infer


# -- config and episodes -------------------------------------------------------------------------
def test_config_names_map_to_the_official_env_ids_and_limits():
    entry = yaml.safe_load((ROOT / "config.yaml").read_text())["benchmarks"]["simpler_bridge"]
    BRIDGE.check("simpler_bridge", entry)
    e = BRIDGE.settings(entry)
    assert e["gripper_filter"] == "consecutive_open_2" and e["success"] == "final_step"
    assert [TASKS[t]["env_id"] for t in e["tasks"]] == ENV_IDS
    eps = BRIDGE.episodes(e, seed=0)
    assert eps == BRIDGE.episodes(e, seed=2)  # fixed episode ids: the training seed changes nothing
    assert len(eps) == 96 and [x.index for x in eps] == list(range(96))
    assert [(x.params["env_id"], x.params["episode_id"]) for x in eps] == [(t, i) for t in ENV_IDS for i in range(24)]
    assert {x.params["env_id"]: x.params["max_steps"] for x in eps} == dict(zip(ENV_IDS, [60, 60, 60, 120]))
    assert TASKS["put_eggplant_in_basket"]["scene_name"] == "bridge_table_1_v2"
    assert TASKS["put_eggplant_in_basket"]["robot"] == "widowx_sink_camera_setup"
    assert {TASKS[t]["overlay"] for t in list(TASKS)[:3]} == {"bridge_real_eval_1.png"}
    for bad, match in [({"tasks": ["put_spoon_on_plate"]}, "tasks"), ({"gripper_filter": "sticky"}, "gripper_filter"),
                       ({"episodes_per_task": 25}, "episodes_per_task"), ({"max_step": 3}, "max_steps")]:
        with pytest.raises(ConfigError, match=match):
            BRIDGE.check("simpler_bridge", {**entry, **bad})


# -- protocol ------------------------------------------------------------------------------------
def test_protocol_on_a_fake_simpler(monkeypatch):
    log, requests = [], []
    spoon, carrot, cube, egg = ENV_IDS
    success_steps = {(spoon, 1): {60}, (carrot, 0): {30, 31}, (egg, 1): set(range(100, 121))}
    monkeypatch.setattr(type(BRIDGE), "simulator", lambda self, e: FakeSimpler(log, success_steps))
    e = entry(episodes_per_task=2)
    eps = BRIDGE.episodes(e, 0)
    records = run_episodes(BRIDGE, e, eps, policy(requests), execute=4, slots=3, progress=False)

    resets = [x for x in log if x[0] == "reset"]
    assert sorted((r[1], r[2]) for r in resets) == [(t, i) for t in sorted(ENV_IDS) for i in range(2)]
    for _, env_id, _, setup, limit in resets:
        task = next(t for t in TASKS.values() if t["env_id"] == env_id)
        assert setup == {k: task[k] for k in ("scene_name", "robot", "overlay", "init_xy")}
        assert limit == (120 if env_id == egg else 60)
    steps = {}
    for x in log:
        if x[0] == "step":
            steps.setdefault(x[1], []).append(x[2])
    assert {k: len(v) for k, v in steps.items()} == {(t, i): 120 if t == egg else 60 for t in ENV_IDS for i in range(2)}
    by = {(r["env_id"], r["episode_id"]): r for r in records}
    assert by[(spoon, 1)]["success"] and by[(spoon, 1)]["success_final_step"]
    assert not by[(carrot, 0)]["success"] and by[(carrot, 0)]["success_any_step"]  # held at steps 30-31 only
    assert by[(carrot, 0)]["first_success_step"] == 30 and by[(carrot, 0)]["success_rule"] == "final_step"
    assert by[(egg, 1)]["success"] and by[(egg, 1)]["steps"] == 120 and by[(egg, 1)]["plans"] == 30
    assert not any(by[k]["success"] for k in by if k not in {(spoon, 1), (egg, 1)})
    assert all(r["truncated"] and r["episode_stats"] == {"moved_correct_obj": True} for r in records)
    assert [r["index"] for r in records] == list(range(8))
    first = requests[0]
    assert first["instruction"] == "put the spoon on the towel" and first["image"].shape == (48, 64, 3)
    # env actions: xyz as predicted, yaw 0.1 -> rotation vector (0, 0, 0.1), gripper open only from the 2nd step
    a = steps[(spoon, 0)]
    assert a[0][:3] == [1.0, 0.0, 0.0] and np.allclose(a[0][3:6], [0, 0, 0.1]) and a[1][1] == 1.0
    assert [s[6] for s in a[:3]] == [-1.0, 1.0, 1.0]
    any_rule = run_episodes(BRIDGE, entry(episodes_per_task=2, success="any_step"), eps, policy([]), 4,
                            progress=False)
    assert [r["success"] for r in any_rule] == [r["success_any_step"] for r in records]
    assert summary(any_rule)["tasks"]["put_carrot_on_plate"]["successes"] == 1


def test_step_limit_override_and_instruction_change(monkeypatch):
    log, requests = [], []
    key = (ENV_IDS[2], 0)
    monkeypatch.setattr(type(BRIDGE), "simulator", lambda self, e: FakeSimpler(log, new_instruction={key: 3}))
    e = entry(tasks=["stack_green_cube_on_yellow_cube"], episodes_per_task=1, max_steps=9)
    [rec] = run_episodes(BRIDGE, e, BRIDGE.episodes(e, 0), policy(requests), execute=4, progress=False)
    assert rec["steps"] == 9 and log[0][4] == 9 and rec["env_instruction"] == "a new instruction"
    # plans at steps 0 and 3 (the changed instruction resets the policy and the gripper rule), then 7
    assert [r["instruction"] for r in requests] == ["stack the green block on the yellow block"] + \
        ["a new instruction"] * 2
    assert [x[2][6] for x in log if x[0] == "step"] == [-1, 1, 1, -1, 1, 1, 1, 1, 1]


# -- action conversion and the gripper rule ------------------------------------------------------
def _matrix(roll, pitch, yaw):
    c, s = np.cos, np.sin
    rx = np.array([[1, 0, 0], [0, c(roll), -s(roll)], [0, s(roll), c(roll)]])
    ry = np.array([[c(pitch), 0, s(pitch)], [0, 1, 0], [-s(pitch), 0, c(pitch)]])
    rz = np.array([[c(yaw), -s(yaw), 0], [s(yaw), c(yaw), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rodrigues(v):
    angle = np.linalg.norm(v)
    if angle == 0:
        return np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]]) / angle
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_action_conversion_on_hand_made_predictions():
    for rpy in [(0.1, 0, 0), (0, -0.2, 0), (0, 0, 0.3), (0.05, -0.08, 0.2), (0.5, 0.4, -0.9)]:
        v = euler_to_rotvec(*rpy)
        assert np.allclose(_rodrigues(v), _matrix(*rpy), atol=1e-9)  # static x-y-z Euler, as transforms3d
    assert np.allclose(euler_to_rotvec(0, 0, 0), 0)
    env = to_controller(np.array([0.01, -0.02, 0.003, 0, 0, 0.2, -1.0]))  # canonical -1 = open
    assert np.allclose(env, [0.01, -0.02, 0.003, 0, 0, 0.2, 1.0])  # metres as they are, gripper +1 = open
    assert to_controller(np.array([0, 0, 0, 0, 0, 0, 1.0]))[6] == -1.0  # closed
    assert to_controller(np.zeros(7))[6] == -1.0  # open probability 0.5 is not > 0.5: close
    with pytest.raises(ValueError):
        to_controller(np.zeros(6))


def test_gripper_rules():
    predicted = [1, 1, -1, 1, 1, 1, -1, -1, 1]  # env convention: +1 open
    rule = GripperRule("consecutive_open_2")
    assert [rule(p) for p in predicted] == [-1, 1, -1, -1, 1, 1, -1, -1, -1]
    rule.reset()
    assert rule(1) == -1  # the count starts again
    rule = GripperRule("none")
    assert [rule(p) for p in predicted] == predicted
    with pytest.raises(ValueError):
        GripperRule("sticky")


# -- metric -------------------------------------------------------------------------------------
def test_per_task_and_mean_success_with_wilson_intervals():
    lo, hi = wilson(12, 24)
    assert abs(lo - 0.3142) < 1e-3 and abs(hi - 0.6858) < 1e-3
    assert wilson(0, 24)[0] == 0 and abs(wilson(0, 24)[1] - 0.1380) < 1e-3
    hits = {"put_spoon_on_towel": 6, "put_carrot_on_plate": 12, "stack_green_cube_on_yellow_cube": 0,
            "put_eggplant_in_basket": 24}
    records = [dict(task=t, success=i < k, success_any_step=i < k + 1) for t, k in hits.items() for i in range(24)]
    s = summary(records)
    assert [s["tasks"][t]["success_rate"] for t in hits] == [25.0, 50.0, 0.0, 100.0]
    assert s["mean"]["success_rate"] == 43.75 and s["mean"]["episodes"] == 96 and s["mean"]["pooled_equals_mean"]
    assert np.allclose(s["mean"]["wilson95"], [100 * x for x in wilson(42, 96)])
    assert summary(records, "success_any_step")["mean"]["successes"] == 42 + 3
    assert BRIDGE.score(records) == 0.4375


# -- Vulkan ---------------------------------------------------------------------------------------
def test_vulkan_check_stops_with_what_to_install(tmp_path):
    from vlm4vla_core.benchmarks.simpler_bridge import sim

    with pytest.raises(RuntimeError, match="no Vulkan loader"):
        sim.vulkan_devices("libvulkan-missing.so.9")
    env = dict(os.environ, LD_LIBRARY_PATH="")
    res = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libvulkan.so.1')"], env=env,
                         capture_output=True)
    if res.returncode == 0:
        pytest.skip("this machine has a Vulkan loader: the failure path is not reachable here")
    with pytest.raises(RuntimeError, match="apt-get install libvulkan1") as err:
        BRIDGE.preflight(entry(vulkan_check=True))
    assert "no usable Vulkan device" in str(err.value)
    BRIDGE.preflight(entry(vulkan_check=False))
    # the evaluate stage stops before the policy loads and before any episode
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    for key in ("pretraining", "embodied_sft", "vqa_sets", "claims"):  # the demo's variants and claims name its backbones
        raw.pop(key, None)
    raw["benchmarks"] = {"simpler_bridge": dict(kind="simpler_bridge", chunk=4, data_path="unused")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, "-m", "vlm4vla_core", "evaluate", "--config", str(tmp_path / "study.yaml"),
                          "--benchmark", "simpler_bridge", "--seed", "0", "--policy", str(tmp_path / "no-policy"),
                          "--out", str(tmp_path / "eval.json")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "Vulkan" in res.stderr and "libnvidia-gl" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "eval.json.parts").exists()


# -- data -----------------------------------------------------------------------------------------
def test_standardization_on_a_hand_made_trajectory():
    assert binarize_gripper(np.array([1, 0.5, 0.2, 0, 0.97, 0.5])).tolist() == [1, 0, 0, 0, 1, 0.5]
    state = np.array([[0, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 1], [3, 0, 0, 0, 0, 0.1, 0],
                      [6, 1, 0, 0, 0, 0.3, 0], [10, 1, 0, 0, 0, 0.3, 0]], np.float32)
    action = np.array([[0] * 7, [9, 9, 9, 9, 9, 9, 1], [9, 9, 9, 9, 9, 9, 0.6], [9, 9, 9, 9, 9, 9, 0.01],
                       [0] * 7], np.float32)
    out = standardize_trajectory(state, action)  # raw frames 1..3
    assert out.shape == (3, 7)
    assert np.allclose(out[:, 0], [2, 3, 4]) and np.allclose(out[:, 1], [0, 1, 0]) and np.allclose(out[:, 5], [0.1, 0.2, 0])
    assert out[:, 6].tolist() == [-1, 1, 1]  # open, in-between -> next settled (closed), closed; +1 = closed


def _expected(t):
    return standardize_trajectory(t["state"], t["action"])


def _check_training_set(folder: Path, trajs, kept):
    data = TrainingSet(folder)
    stats = json.loads((folder / "stats.json").read_text())
    assert data.num_frames == sum(len(trajs[e]["action"]) - 2 for e in kept) and data.action_dim == 7
    for k, e in enumerate(kept):
        assert np.allclose(data.episode_actions(k), _expected(trajs[e]), atol=1e-6)
    offset = 0
    for e in kept:
        image, task = data.frame(offset)  # the first kept frame is raw frame 1
        assert task == trajs[e]["task"] and image.shape == (16, 16, 3)
        assert abs(int(image[..., 0].mean()) - int(trajs[e]["image_0"][1, 0, 0, 0])) <= 3
        assert image[..., 2].mean() < 20  # image_0, not image_1
        n = len(trajs[e]["action"]) - 2
        chunk = data.action_chunk(offset + n - 1, 3)  # past the end the last used action repeats
        assert np.allclose(chunk, _expected(trajs[e])[-1], atol=1e-6)
        offset += n
    return data, stats


def test_importer_reads_a_lerobot_copy_in_place_and_resumes(tmp_path, monkeypatch, capsys):
    trajs = trajectories([6, 5, 2, 7, 4, 3], unlabeled={1})
    src = write_lerobot_v20(tmp_path / "bridge_orig_lerobot", trajs, state_dim=8)
    e = entry(data_path=str(src))
    out = tmp_path / "data"
    monkeypatch.setattr(bridge_importer, "FLUSH_EVERY", 1)
    calls = []
    real = bridge_importer.standardize_trajectory

    def stop_at_third(state, action):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is stopped
        return real(state, action)

    monkeypatch.setattr(bridge_importer, "standardize_trajectory", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        BRIDGE.build_data(e, out)
    assert not out.exists() and json.loads((tmp_path / "data.work" / "progress.json").read_text())["done"] == 2
    monkeypatch.setattr(bridge_importer, "standardize_trajectory", real)
    capsys.readouterr()
    BRIDGE.build_data(e, out)
    assert "resuming: 2 of 4" in capsys.readouterr().out and not (tmp_path / "data.work").exists()
    kept = [0, 3, 4, 5]  # 1 has no instruction, 2 is too short
    data, stats = _check_training_set(out, trajs, kept)
    assert stats["skipped_unlabeled"] == 1 and stats["skipped_short"] == 1 and stats["kept"] == 4
    assert stats["kept_first_action_not_zero"] == 0 and stats["image_key"] == "observation.images.image_0"
    assert data.root == src.resolve() and sorted(p.name for p in out.iterdir()) == ["actions.npy", "dataset.json",
                                                                                    "stats.json"]
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["episodes"] == kept and manifest["frames"] == [[1, 5], [1, 6], [1, 3], [1, 2]]
    assert BRIDGE.action_bounds(entry(norm_stats="data"), stats) == (stats["action"]["q01"][:6],
                                                                      stats["action"]["q99"][:6])
    official = json.loads(OFFICIAL_STATS.read_text())["action"]
    assert BRIDGE.action_bounds(entry(norm_stats="official"), stats) == (official["q01"][:6], official["q99"][:6])
    with pytest.raises(ConfigError, match="data_path"):
        BRIDGE.build_data(entry(data_path=str(tmp_path / "nowhere")), tmp_path / "x")


def test_importer_converts_the_rlds_original(tmp_path):
    python = tf_python()
    if python is None:
        pytest.skip("no TensorFlow here: set VLM4VLA_TF_PYTHON to a Python with tensorflow and tensorflow-datasets")
    trajs = trajectories([6, 5, 2, 7], unlabeled={1})
    tfds_dir = write_rlds(python, tmp_path / "rlds", trajs)
    e = entry(data_path=str(tmp_path / "rlds" / "tfds"), rlds_python=python)  # a parent of the version folder
    BRIDGE.build_data(e, tmp_path / "data")
    journal = [json.loads(x) for x in (tmp_path / "data/lerobot/meta/journal.jsonl").read_text().splitlines()]
    order = [int(r["file_path"].removeprefix("raw/traj")) for r in journal]  # TFDS orders the split itself
    assert sorted(order) == [0, 1, 2, 3] and all(r["length"] == len(trajs[o]["action"]) for r, o in zip(journal, order))
    assert bridge_importer.find_tfds(tmp_path / "rlds" / "tfds") == tfds_dir
    copy = [trajs[o] for o in order]
    kept = [k for k, t in enumerate(copy) if t["task"] and len(t["action"]) >= 3]
    data, stats = _check_training_set(tmp_path / "data", copy, kept)
    assert stats["skipped_unlabeled"] == 1 and stats["skipped_short"] == 1 and stats["source_format"].startswith("rlds")
    assert json.loads((tmp_path / "data/dataset.json").read_text())["root"] == "lerobot"
    assert not (tmp_path / "data.work").exists()


def test_metrics_of_an_eval_file(tmp_path, capsys):
    from vlm4vla_core.benchmarks.simpler_bridge import metrics

    episodes = [dict(index=i, task=t, success=i % 2 == 0, success_final_step=i % 2 == 0, success_any_step=True)
                for i, t in enumerate(["put_spoon_on_towel", "put_carrot_on_plate"] * 4)]
    run = dict(modes={"whole_chunk": dict(execute_steps=4, episodes=episodes)}, reported_mode="whole_chunk")
    (tmp_path / "eval.json").write_text(json.dumps(run))
    assert metrics.main([str(tmp_path / "eval.json"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "success at the final step (official)" in out and "success at any step" in out
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["success_final_step"]["tasks"]["put_spoon_on_towel"]["success_rate"] == 100.0
    assert rep["success_final_step"]["mean"]["success_rate"] == 50.0 and rep["success_any_step"]["mean"]["successes"] == 8


# -- a new env per episode -----------------------------------------------------------------------
class FakeManiSkillEnv:
    """A ManiSkill2_real2sim env stand-in: keeps physics state across steps (``state`` grows with every
    action), so a reused env would carry the last episode's state into the next one."""

    def __init__(self, log, env_id, kwargs):
        self.log, self.env_id, self.kwargs, self.state, self.closed, self.resets = log, env_id, kwargs, 0.0, False, 0

    def reset(self, options):
        assert not self.closed
        self.resets += 1
        self.episode, self.t = options["obj_init_options"]["episode_id"], 0
        self.log.append(("reset", self.env_id, self.episode, self.state))
        return self._obs(), {}

    def _obs(self):
        frame = np.full((4, 4, 3), int(self.state) % 256, np.uint8)
        return {"image": {"3rd_view_camera": {"rgb": frame}}}

    def step(self, action):
        self.t += 1
        self.state += 1.0  # leftover state a reset of this fake does not clear
        return self._obs(), 0.0, False, self.t >= self.kwargs["max_episode_steps"], {"episode_stats": {}}

    def get_language_instruction(self):
        return next(t["instruction"] for t in TASKS.values() if t["env_id"] == self.env_id)

    def close(self):
        self.closed = True


def test_simpler_sim_builds_a_new_env_for_every_episode(monkeypatch, tmp_path):
    from vlm4vla_core.benchmarks.simpler_bridge import sim as simpler_sim

    log, built = [], []
    (tmp_path / "real_inpainting").mkdir()
    for name in ("bridge_real_eval_1.png", "bridge_sink.png"):
        (tmp_path / "real_inpainting" / name).write_bytes(b"png")

    class FakeGym:
        @staticmethod
        def make(env_id, **kwargs):
            built.append(FakeManiSkillEnv(log, env_id, kwargs))
            return built[-1]

    monkeypatch.setattr(simpler_sim, "_stack", lambda: (FakeGym, type("ms2", (), {"ASSET_DIR": tmp_path})))
    monkeypatch.setattr(type(BRIDGE), "simulator", lambda self, e: simpler_sim.SimplerSim(check_vulkan=False))
    e = entry(episodes_per_task=2, max_steps=3, tasks=["put_spoon_on_towel", "put_eggplant_in_basket"])
    records = run_episodes(BRIDGE, e, BRIDGE.episodes(e, 0), policy([]), execute=4, slots=1, progress=False)
    assert [r["steps"] for r in records] == [3] * 4
    assert len(built) == 4 and all(env.resets == 1 and env.closed for env in built)  # one env per episode
    assert [x[3] for x in log] == [0.0] * 4  # every episode starts from a fresh state
    assert [(env.env_id, x[2]) for env, x in zip(built, log)] == [(ENV_IDS[0], 0), (ENV_IDS[0], 1),
                                                                 (ENV_IDS[3], 0), (ENV_IDS[3], 1)]
    first = built[0].kwargs  # built as SimplerEnv's build_maniskill2_env for scripts/bridge.bash
    assert first["obs_mode"] == "rgbd" and first["sim_freq"] == 500 and first["control_freq"] == 5
    assert first["robot"] == "widowx" and first["scene_name"] == "bridge_table_1_v1"
    assert first["rgb_overlay_path"].endswith("real_inpainting/bridge_real_eval_1.png")
    assert built[2].kwargs["robot"] == "widowx_sink_camera_setup"
