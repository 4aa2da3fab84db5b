"""SimplerEnv-Bridge: WidowX visual matching, 4 tasks x 24 episodes, trained on Bridge V2.

The protocol, point by point, its data sources and where it differs from the official evaluator:
docs/benchmarks/simpler-bridge.md (each constant's official file and line is pinned in
tests/test_protocol_pins.py).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.base import Benchmark, Episode, Obs

EPISODES_PER_TASK = 24
CONTROL_FREQ, SIM_FREQ = 5, 500
CONTROL_MODE = "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
CAMERA = "3rd_view_camera"
ROBOT_INIT_QUAT = (0.0, 0.0, 0.0, 1.0)
_TABLE = dict(scene_name="bridge_table_1_v1", robot="widowx", overlay="bridge_real_eval_1.png", init_xy=(0.147, 0.028))
_SINK = dict(scene_name="bridge_table_1_v2", robot="widowx_sink_camera_setup", overlay="bridge_sink.png",
             init_xy=(0.127, 0.06))
#: short name (the config's) -> official env id, instruction, step limit and setup
TASKS = {
    "put_spoon_on_towel": dict(env_id="PutSpoonOnTableClothInScene-v0", instruction="put the spoon on the towel",
                               max_steps=60, **_TABLE),
    "put_carrot_on_plate": dict(env_id="PutCarrotOnPlateInScene-v0", instruction="put carrot on plate",
                                max_steps=60, **_TABLE),
    "stack_green_cube_on_yellow_cube": dict(env_id="StackGreenCubeOnYellowCubeBakedTexInScene-v0",
                                            instruction="stack the green block on the yellow block",
                                            max_steps=60, **_TABLE),
    "put_eggplant_in_basket": dict(env_id="PutEggplantInBasketScene-v0", instruction="put eggplant into yellow basket",
                                   max_steps=120, **_SINK),
}
#: the official Bridge statistics (VLM4VLA configs/data/oxe_dataset_stats/dataset_statistics_bridge.json,
#: 60,064 trajectories), shipped with their source in data/official_stats.json
OFFICIAL_STATS = Path(__file__).parent / "official" / "official_stats.json"


class SimplerBridgeBenchmark(Benchmark):
    kind = "simpler_bridge"
    action_dim = 7
    keys = {
        "tasks": {"type": "array", "items": {"enum": list(TASKS)}, "minItems": 1, "uniqueItems": True,
                  "description": "short task names (default: all four), each mapped to its official env id"},
        "episodes_per_task": {"type": "integer", "minimum": 1, "maximum": EPISODES_PER_TASK},
        "max_steps": {"type": ["integer", "null"], "minimum": 1,
                      "description": "one step limit for every task, for checks only (null: the official 60/120)"},
        "gripper_filter": {"enum": ["consecutive_open_2", "none"]},
        "success": {"enum": ["final_step", "any_step"], "description": "which success the records report"},
        "norm_stats": {"type": "string",
                       "description": "arm q01/q99 from: official (the published file, the paper's), data (the imported "
                                      "copy's), or the path of a stats file with action.q01/q99"},
        "image_key": {"type": "string", "description": "camera feature of a LeRobot copy (the primary: image_0)"},
        "state_key": {"type": "string", "description": "state feature of a LeRobot copy (xyz, rpy first)"},
        "action_key": {"type": "string", "description": "action feature of a LeRobot copy (gripper last, 1 = open)"},
        "split": {"type": "string", "description": "TFDS split of the RLDS original"},
        "rlds_python": {"type": "string", "description": "Python with TensorFlow and tensorflow-datasets"},
        "vulkan_check": {"type": "boolean", "description": "check for a usable Vulkan device before any episode"},
    }
    required = ("data_path",)
    defaults = {"tasks": list(TASKS), "episodes_per_task": EPISODES_PER_TASK, "max_steps": None,
                "gripper_filter": "consecutive_open_2", "success": "final_step", "norm_stats": "official",
                "image_key": "image_0", "state_key": "observation.state", "action_key": "action", "split": "train",
                "vulkan_check": True, "image_size": 224}
    #: VLM4VLA runs three modes: 4, 2 and 1 of the 4-step chunk (eval/simpler/eval_ckpts_bridge.py: ``[4, 2, 1]``)
    official_modes = ("whole_chunk", "half_chunk", "single_step")
    data_env = "vlm4vla.yaml"
    sim_env = "simpler.yaml"
    official_stats = OFFICIAL_STATS

    # -- data -----------------------------------------------------------------------------------
    def build_data(self, entry: dict, out: Path, workers: int = 1) -> None:
        from vlm4vla_core.benchmarks.simpler_bridge.importer import import_bridge

        import_bridge(entry, Path(out))

    # -- protocol -------------------------------------------------------------------------------
    def episodes(self, entry: dict, seed: int) -> list[Episode]:
        out = []
        for name in entry["tasks"]:
            task = TASKS[name]
            limit = entry["max_steps"] or task["max_steps"]
            for episode_id in range(entry["episodes_per_task"]):
                out.append(Episode(len(out), name, task["instruction"],
                                   {"env_id": task["env_id"], "episode_id": episode_id, "max_steps": limit}))
        return out

    def step_budget(self, entry: dict, episode: Episode) -> dict:
        limit = episode.params["max_steps"]
        return dict(env_steps=limit, policy_steps=limit, segments=1)

    def preflight(self, entry: dict) -> None:
        """Before the policy loads: a usable Vulkan device in the simulator's environment (SAPIEN renders
        through Vulkan only, and hangs or fails deep inside otherwise)."""
        if not entry["vulkan_check"]:
            return
        cmd = [*self.simulator_command(entry), "-m", "vlm4vla_core.benchmarks.simpler_bridge.sim", "--check-vulkan"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"the Vulkan check could not run ({' '.join(cmd)}): {err}") from None
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else
                               f"the Vulkan check failed ({' '.join(cmd)}, exit {res.returncode})")

    def simulator(self, entry: dict):
        from vlm4vla_core.benchmarks.simpler_bridge.sim import SimplerSim

        return SimplerSim(check_vulkan=entry["vulkan_check"])

    def run_episode(self, sim, episode: Episode, entry: dict):
        from vlm4vla_core.benchmarks.simpler_bridge.convert import GripperRule

        task, limit = TASKS[episode.task], episode.params["max_steps"]
        setup = {k: task[k] for k in ("scene_name", "robot", "overlay", "init_xy")}
        image, instruction = sim.reset(episode.params["env_id"], episode.params["episode_id"], setup, limit)
        gripper, reset, first_success, info, steps = GripperRule(entry["gripper_filter"]), True, None, {}, 0
        while steps < limit:
            action = yield Obs(instruction, lambda o=image: o, reset=reset)
            action = np.array(action, dtype=np.float64)
            action[6] = gripper(action[6])
            image, info = sim.step(action)
            steps, reset = steps + 1, False
            if info["success"] and first_success is None:
                first_success = steps
            if info["instruction"] != instruction:  # the official wrapper resets the policy
                instruction, reset = info["instruction"], True
                gripper.reset()
            if info["truncated"]:
                break
        final, any_step = bool(info.get("success", False)), first_success is not None
        return dict(success=final if entry["success"] == "final_step" else any_step, success_rule=entry["success"],
                    success_final_step=final, success_any_step=any_step, first_success_step=first_success,
                    steps=steps, truncated=bool(info.get("truncated", False)),
                    episode_stats=info.get("episode_stats", {}), env_instruction=instruction)

    def outcome(self, record: dict, entry: dict) -> str:
        """Under the final-step rule, an episode that succeeded at some step but not at the last one
        (the object dropped or moved off again) is told apart from one that never succeeded."""
        if not record.get("error") and not record.get("success") and record.get("success_any_step"):
            return "succeeded, then undone"
        return super().outcome(record, entry)

    def success_step(self, record: dict):
        """The episode runs to its limit whatever happens: time to success is the first step with success."""
        return record.get("first_success_step") if record.get("success") else None

    def image_transform(self, entry: dict):
        return lambda image: np.ascontiguousarray(image)  # the 640x480 3rd-view frame; the policy resizes it

    def action_to_env(self, entry: dict):
        from vlm4vla_core.benchmarks.simpler_bridge.convert import to_controller

        return to_controller


# -- metric helpers -------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    return (0.0 if successes == 0 else lo, 1.0 if successes == n else hi)  # exact at the ends


def summary(records: list[dict], key: str = "success") -> dict:
    """Per-task success rate and the mean over tasks (in %), each with a Wilson 95% interval.

    The mean's interval is Wilson's on the pooled episodes, which equals the mean of the task rates
    when every task has the same number of episodes (24 in the protocol); otherwise it is marked."""
    tasks: dict[str, list[bool]] = {}
    for r in records:
        tasks.setdefault(r["task"], []).append(bool(r[key]))
    rows = {}
    for task, hits in tasks.items():
        k, n = sum(hits), len(hits)
        lo, hi = wilson(k, n)
        rows[task] = dict(success_rate=100.0 * k / n, successes=k, episodes=n, wilson95=[100 * lo, 100 * hi])
    k, n = sum(r["successes"] for r in rows.values()), sum(r["episodes"] for r in rows.values())
    lo, hi = wilson(k, n)
    mean = float(np.mean([r["success_rate"] for r in rows.values()])) if rows else 0.0
    equal = len({r["episodes"] for r in rows.values()}) <= 1
    return dict(key=key, tasks=rows, mean=dict(success_rate=mean, successes=k, episodes=n,
                                               wilson95=[100 * lo, 100 * hi], pooled_equals_mean=equal))


BENCHMARK = SimplerBridgeBenchmark()
