"""CALVIN ABC->D: 1000 chains of 5 language-conditioned subtasks in scene D.

The protocol, point by point, its data sources and where it differs from the official evaluator:
docs/benchmarks/calvin.md (each constant's official file and line is pinned in
tests/test_protocol_pins.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.base import Benchmark, Episode, Obs
from vlm4vla_core.benchmarks.calvin import protocol
from vlm4vla_core.config import ConfigError

#: the range of ``rel_actions``: the official CALVIN dataset normalises them with no percentile step, so the
#: policy's percentile stage is the identity on it, and its clip to +-arm_norm is the official one
REL_ACTION_RANGE = 1.0


class CalvinBenchmark(Benchmark):
    kind = "calvin"
    action_dim = 7
    keys = {
        "max_steps": {"type": "integer", "minimum": 1, "description": "environment steps per subtask"},
        "chains": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "the first K chains (default 1000)"},
        "sequences": {"type": ["string", "null"], "description": "another chain file in eval_sequences.json's layout"},
        "scene": {"enum": ["auto", "dataset", "calvin_env"],
                  "description": "scene D from data_path/validation/.hydra/merged_config.yaml, or from calvin_env's conf"},
        "egl_device": {"type": ["integer", "string", "null"], "description": "EGL device to render on, or auto"},
        "use_egl": {"type": "boolean"},
        "split": {"type": "string", "description": "folder of task_ABC_D to import (training)"},
        "lang_folder": {"type": "string"},
        "windows_per_block": {"type": "integer", "minimum": 1, "description": "import unit (resume granularity)"},
        "image_key": {"type": "string", "description": "image feature of a LeRobot copy"},
        "action_key": {"type": "string", "description": "action feature of a LeRobot copy"},
        "gripper": {"enum": ["calvin", "canonical"],
                    "description": "gripper sign of a LeRobot copy: calvin (-1 close, +1 open) or canonical (+1 closed)"},
    }
    required = ("data_path",)
    defaults = {"max_steps": 360, "chains": 1000, "sequences": None, "scene": "auto", "egl_device": "auto",
                "use_egl": True, "split": "training", "lang_folder": "lang_annotations", "windows_per_block": 256,
                "gripper": "calvin", "image_size": 224}
    #: VLM4VLA runs one mode: the whole 10-step chunk (eval/calvin/evaluate_ddp.py: ``execute_step=10``)
    official_modes = ("whole_chunk",)
    data_env = "vlm4vla.yaml"
    sim_env = "calvin.yaml"
    metric = "avg_len"

    def check_values(self, name: str, entry: dict) -> None:
        egl = entry["egl_device"]
        if isinstance(egl, str) and egl != "auto":
            raise ConfigError(f"key 'benchmarks.{name}.egl_device': {egl!r} is not an integer or 'auto'")
        if entry["sequences"] is None and entry["chains"] > 1000:
            raise ConfigError(f"key 'benchmarks.{name}.chains': the official file has 1000 chains")

    # -- data -------------------------------------------------------------------------------------------
    def build_data(self, entry: dict, out: Path, workers: int = 1) -> None:
        from vlm4vla_core.benchmarks.calvin.importer import import_calvin

        import_calvin(entry, Path(out), workers=workers)

    def write_fixture(self, entry: dict, out: Path, frame_size: int | None = None) -> None:
        """A task_ABC_D with two segments and four language windows (vlm4vla_core.testing.calvin)."""
        from vlm4vla_core.testing.calvin import write_task_abc_d

        write_task_abc_d(Path(out), size=frame_size or 200)

    def action_bounds(self, entry: dict, stats: dict) -> tuple[list[float], list[float]]:
        return [-REL_ACTION_RANGE] * 6, [REL_ACTION_RANGE] * 6

    # -- protocol -----------------------------------------------------------------------------------------
    def episodes(self, entry: dict, seed: int) -> list[Episode]:
        texts = protocol.instructions()
        found = protocol.chains(entry.get("sequences"))
        if entry["chains"] > len(found):
            raise ConfigError(f"benchmarks.calvin.chains: {entry['chains']} asked, the chain file has {len(found)}")
        out = []
        for i, (condition, subtasks) in enumerate(found[: entry["chains"]]):
            missing = [t for t in subtasks if t not in texts]
            if missing:
                raise ValueError(f"chain {i}: no validation instruction for {missing}")
            out.append(Episode(i, "chain", texts[subtasks[0]], {
                "initial_condition": condition, "subtasks": subtasks, "instructions": [texts[t] for t in subtasks]}))
        return out

    def simulator(self, entry: dict):
        from vlm4vla_core.benchmarks.calvin.sim import CalvinSim

        return CalvinSim(entry.get("data_path"), scene=entry["scene"], egl_device=entry["egl_device"],
                         use_egl=entry["use_egl"])

    def run_episode(self, sim, episode: Episode, entry: dict):
        robot_obs, scene_obs = protocol.initial_state(episode.params["initial_condition"])
        obs = sim.reset(robot_obs, scene_obs)  # once per chain
        results, steps = [], 0
        for subtask, text in zip(episode.params["subtasks"], episode.params["instructions"]):
            start_info, done, used = sim.info(), False, 0
            while used < entry["max_steps"] and not done:
                action = yield Obs(text, lambda o=obs: o, reset=used == 0)  # the policy reset of every subtask
                obs, info = sim.step(action)
                used += 1
                done = sim.success(start_info, info, subtask)
            steps += used
            results.append({"task": subtask, "success": done, "steps": used})
            if not done:
                break
        completed = sum(r["success"] for r in results)
        return dict(success=completed == protocol.CHAIN_LENGTH, completed=completed, steps=steps,
                    subtask_results=results, scene=getattr(sim, "scene_source", None))

    def outcome(self, record: dict, entry: dict) -> str:
        """A chain that did not complete stopped at subtask k (1..5): that subtask ran out of its steps."""
        if record.get("error") or record.get("success"):
            return super().outcome(record, entry)
        return f"stopped at subtask {int(record.get('completed', 0)) + 1}"

    def step_budget(self, entry: dict, episode: Episode) -> dict:
        n = len(episode.params["subtasks"])  # every subtask to its limit: a chain that completes them all
        return dict(env_steps=n * entry["max_steps"], policy_steps=n * entry["max_steps"], segments=n)

    def image_transform(self, entry: dict):
        return lambda obs: np.asarray(obs["render"]())

    def action_to_env(self, entry: dict):
        return canonical_to_calvin

    def score(self, episodes: list[dict]) -> float:
        return float(np.mean([float(e["completed"]) for e in episodes])) if episodes else 0.0


def canonical_to_calvin(action: np.ndarray) -> np.ndarray:
    """Canonical action (rel_actions arm, gripper +1 closed / -1 open) -> CALVIN's ``env.step`` action:
    the arm unchanged, the gripper exactly -1 (close) or +1 (open). A canonical 0 opens, as the official
    wrapper's ``1 if g > 0 else -1`` on its open-positive value does for a tie."""
    a = np.asarray(action, dtype=np.float64).copy()
    a[-1] = -1.0 if a[-1] > 0 else 1.0
    return a


def calvin_to_canonical(rel_actions: np.ndarray) -> np.ndarray:
    """CALVIN ``rel_actions`` [T, 7] (gripper -1 close / +1 open) -> canonical actions (gripper +1 closed)."""
    a = np.asarray(rel_actions, dtype=np.float32).copy()
    a[..., -1] = -a[..., -1]
    return a


BENCHMARK = CalvinBenchmark()
