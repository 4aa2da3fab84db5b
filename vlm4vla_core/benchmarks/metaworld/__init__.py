"""Embedded Meta-World benchmark: scripted-expert demonstrations and closed-loop rollouts.

The miniature study's benchmark; its protocol (episodes, success, actions, arm range) is
stated in docs/benchmarks/metaworld.md.

MuJoCo reads ``MUJOCO_GL`` when it is imported, so it is chosen here, before any submodule
imports mujoco: ``egl`` when libEGL is present, else ``osmesa`` (an explicit setting wins).
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

from vlm4vla_core.benchmarks.base import Benchmark, Episode, Obs
from vlm4vla_core.config import ConfigError

if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"

HORIZON = 500  # Meta-World v3 ends every episode there
EVAL_SEED_START = 1_000_000  # demo seeds are < this, evaluation seeds are >= this (see env.py)


class MetaWorldBenchmark(Benchmark):
    kind = "metaworld"
    action_dim = 4
    keys = {
        "tasks": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        "camera": {"type": "string"},
        "demos_per_task": {"type": "integer", "minimum": 1},
        "episodes_per_task": {"type": "integer", "minimum": 1},
        "max_steps": {"type": "integer", "minimum": 1, "maximum": HORIZON},
        "eval_seed_offset": {"type": "integer", "minimum": 0},
    }
    required = ("tasks", "image_size", "camera", "demos_per_task", "episodes_per_task", "max_steps")
    defaults = {"eval_seed_offset": 0, "eval_batch": 64}
    in_process = True
    arm_range = "full"
    data_env = sim_env = "metaworld.yaml"

    def check_values(self, name: str, entry: dict) -> None:
        import difflib

        from vlm4vla_core.benchmarks.metaworld.instructions import INSTRUCTIONS

        for i, task in enumerate(entry["tasks"]):
            if task not in INSTRUCTIONS:
                close = difflib.get_close_matches(task, list(INSTRUCTIONS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"key 'benchmarks.{name}.tasks.{i}': unknown Meta-World task {task!r}{hint}")

    def build_data(self, entry: dict, out: Path, workers: int = 1) -> None:
        from vlm4vla_core.benchmarks.metaworld.collect import collect

        collect(entry["tasks"], entry["demos_per_task"], out, entry["image_size"], entry["camera"],
                entry["max_steps"], workers=workers)

    vqa_generators = ("metaworld",)

    def write_vqa_split(self, generator: str, entry: dict, vqa_set: dict, out: Path, split: str) -> int:
        """Embodied VQA from this benchmark's scenes (``vlm4vla_core.benchmarks.metaworld.vqa``)."""
        from vlm4vla_core.benchmarks.metaworld.vqa import generate

        if generator not in self.vqa_generators:
            return super().write_vqa_split(generator, entry, vqa_set, out, split)
        episodes = vqa_set["train_episodes_per_task" if split == "train" else "heldout_episodes_per_task"]
        return generate(entry["tasks"], out, split, episodes, vqa_set.get("frames_per_episode", 2),
                        entry.get("image_size", 112), entry.get("camera", "corner4"), entry.get("max_steps", 150))

    def episodes(self, entry: dict, seed: int) -> list[Episode]:
        """Per task, ``episodes_per_task`` evaluation seeds from ``EVAL_SEED_START + eval_seed_offset +
        1000 * seed``: disjoint from the demonstrations, different for every training seed, the same
        for every backbone and ablation."""
        from vlm4vla_core.benchmarks.metaworld.instructions import instruction

        first = EVAL_SEED_START + entry["eval_seed_offset"] + 1000 * seed
        seeds = range(first, first + entry["episodes_per_task"])
        pairs = [(task, s) for task in entry["tasks"] for s in seeds]
        return [Episode(i, task, instruction(task, s), {"episode_seed": s}) for i, (task, s) in enumerate(pairs)]

    def simulator(self, entry: dict):
        return MetaWorldSim(entry)

    def run_episode(self, sim, episode: Episode, entry: dict):
        env = sim.env(episode.task)
        env.reset(episode.params["episode_seed"])
        while True:
            action = yield Obs(episode.instruction, env.render)
            env.step(action)
            if env.success or env.steps >= entry["max_steps"]:
                return dict(success=env.success, steps=env.steps)


class MetaWorldSim:
    """One env per task, created on first use and reused for the following episodes."""

    def __init__(self, entry: dict):
        self.entry, self.envs = entry, {}

    def env(self, task: str):
        if task not in self.envs:
            from vlm4vla_core.benchmarks.metaworld.env import MetaWorldEnv

            self.envs[task] = MetaWorldEnv(task, self.entry["image_size"], self.entry["camera"], self.entry["max_steps"])
        return self.envs[task]

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


BENCHMARK = MetaWorldBenchmark()
