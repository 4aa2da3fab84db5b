"""Scripted-expert demonstrations on Meta-World, written as the project's training set.

``python -m vlm4vla_core collect-data --tasks drawer-open-v3 ... --episodes-per-task 20 --out DIR``

Episode seeds start at ``--seed-offset`` and stay below ``EVAL_SEED_START``. Only
successful episodes are kept; a failed seed is dropped (and listed in stats.json)
and the next unused seed is tried, so every task gets exactly N episodes. Frames
are those observed *before* each action. ``DIR/lerobot`` is a LeRobot v2.1 dataset
(one task string per episode: its instruction); ``DIR/stats.json`` holds the
per-dimension action statistics and the collection metadata (see
``vlm4vla_core.episodes.source``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mujoco
import numpy as np
from vlm4vla_core.progress import progress as counter

from vlm4vla_core.episodes import LeRobotWriter
from vlm4vla_core.episodes.source import write_training_set
from vlm4vla_core.io import atomic_dir

from .env import (
    DEFAULT_CAMERA,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_STEPS,
    EVAL_SEED_START,
    METAWORLD_VERSION,
    MetaWorldEnv,
    check_task,
)
from .instructions import instruction

FPS = 80  # Meta-World v3 steps at 80 Hz (frame_skip 5 of a 2.5 ms MuJoCo step)

def expert_episode(env: MetaWorldEnv, seed: int) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """Roll the scripted expert from seed; returns frames (one per action), actions [T, 4], success."""
    env.reset(seed)
    frames, actions = [], []
    while not env.success and env.steps < env.max_steps:
        frames.append(env.render())
        action = env.expert_action()
        actions.append(action)
        env.step(action)
    return frames, np.asarray(actions, dtype=np.float32).reshape(-1, 4), env.success


_ENVS: dict[tuple, MetaWorldEnv] = {}  # one env per task and worker process


def _episode_job(job: tuple[str, int, int, str, int]) -> tuple[str, int, bool, list[np.ndarray], np.ndarray]:
    task, seed, image_size, camera, max_steps = job
    key = (task, image_size, camera, max_steps)
    if key not in _ENVS:
        _ENVS[key] = MetaWorldEnv(task, image_size, camera, max_steps)
    frames, actions, success = expert_episode(_ENVS[key], seed)
    return task, seed, success, frames if success else [], actions


def collect(
    tasks: list[str],
    episodes_per_task: int,
    out: Path,
    image_size: int = DEFAULT_IMAGE_SIZE,
    camera: str = DEFAULT_CAMERA,
    max_steps: int = DEFAULT_MAX_STEPS,
    seed_offset: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Collect ``episodes_per_task`` successful expert episodes per task into ``out``; returns stats."""
    for task in tasks:
        check_task(task)
        instruction(task)
    if len(set(tasks)) != len(tasks) or not tasks:
        raise ValueError(f"--tasks must be a non-empty list without repeats, got {tasks}")
    if episodes_per_task < 1:
        raise ValueError(f"--episodes-per-task must be >= 1, got {episodes_per_task}")
    MetaWorldEnv(tasks[0], image_size, camera, max_steps).close()  # validate camera/size/steps early
    max_attempts = 2 * episodes_per_task + 10
    if seed_offset < 0 or seed_offset + max_attempts > EVAL_SEED_START:
        raise ValueError(f"--seed-offset must keep demo seeds in [0, {EVAL_SEED_START}), got {seed_offset}")

    kept: dict[str, dict[int, tuple[list[np.ndarray], np.ndarray]]] = {t: {} for t in tasks}
    dropped: dict[str, list[int]] = {t: [] for t in tasks}
    next_seed = {t: seed_offset for t in tasks}
    bar = counter(total=len(tasks) * episodes_per_task, desc="collect", unit="episodes", disable=not progress,
                  mininterval=2)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
    try:
        while True:
            jobs = []
            for t in tasks:
                need = episodes_per_task - len(kept[t])
                if need and next_seed[t] - seed_offset + need > max_attempts:
                    raise RuntimeError(
                        f"expert of {t} failed on {len(dropped[t])} seeds {dropped[t]} within max_steps={max_steps}; "
                        "raise --max-steps or drop the task"
                    )
                jobs += [(t, s, image_size, camera, max_steps) for s in range(next_seed[t], next_seed[t] + need)]
                next_seed[t] += need
            if not jobs:
                break
            results = pool.map(_episode_job, jobs) if pool else map(_episode_job, jobs)
            for task, seed, success, frames, actions in results:
                if success:
                    kept[task][seed] = (frames, actions)
                    bar.update(1)
                else:
                    dropped[task].append(seed)
                    bar.set_postfix(dropped=sum(map(len, dropped.values())))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - t0

    counts = {}
    with atomic_dir(Path(out)) as tmp:
        with LeRobotWriter(tmp / "lerobot", fps=FPS, action_dim=4, image_shape=(image_size, image_size, 3),
                           robot_type="sawyer") as writer:
            for task in tasks:
                seeds = sorted(kept[task])
                for seed in seeds:
                    frames, actions = kept[task][seed]
                    writer.add_episode(frames, actions, instruction(task, seed))
                lengths = [len(kept[task][s][1]) for s in seeds]
                counts[task] = dict(episodes=len(seeds), steps=int(sum(lengths)), mean_length=float(np.mean(lengths)),
                                    max_length=int(max(lengths)), seeds=seeds, dropped_seeds=sorted(dropped[task]))
        stats = write_training_set(
            tmp, "lerobot", tasks=list(tasks), counts=counts, episodes_per_task=episodes_per_task,
            dropped=int(sum(map(len, dropped.values()))), image_size=image_size, camera=camera, max_steps=max_steps,
            seed_offset=seed_offset, eval_seed_start=EVAL_SEED_START, metaworld_version=METAWORLD_VERSION,
            mujoco_version=mujoco.__version__, collect_seconds=round(seconds, 2), workers=workers)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core collect-data", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True, help="Meta-World v3 task names")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--camera", default=DEFAULT_CAMERA)
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    p.add_argument("--seed-offset", type=int, default=0, help=f"first demo seed (demo seeds < {EVAL_SEED_START})")
    p.add_argument("--workers", type=int, default=1, help="processes (episodes are spread over them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    stats = collect(args.tasks, args.episodes_per_task, args.out, args.image_size, args.camera, args.max_steps,
                    args.seed_offset, args.workers, not args.no_progress)
    print(f"wrote {args.out}: {len(args.tasks)} tasks x {args.episodes_per_task} episodes, "
          f"{stats['frames']} steps, dropped {stats['dropped']} failed episodes, "
          f"{stats['collect_seconds']} s ({stats['frames'] / max(stats['collect_seconds'], 1e-9):.0f} frames/s)")
    return 0
