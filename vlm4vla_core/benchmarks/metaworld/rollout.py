"""Closed-loop, lockstep evaluation of an image+instruction policy on Meta-World.

All episodes of a call (or of each ``batch_size`` slice) step together: one batched
policy call per re-plan for every episode still running. The policy returns a chunk
of ``chunk_size`` actions; the first ``execute_steps`` are executed before the next
query (``execute_steps = K``: full chunk, ``K // 2``: half, ``1``: every step).

Success follows Meta-World's evaluation: an episode succeeds if ``info["success"]``
is true at any step; it then stops, and otherwise stops after ``max_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from .env import DEFAULT_CAMERA, DEFAULT_IMAGE_SIZE, DEFAULT_MAX_STEPS, MetaWorldEnv
from .instructions import instruction

# images [B, H, W, 3] uint8, instructions (B) -> actions [B, K, 4] in env units, gripper in {-1, +1}
PolicyFn = Callable[[np.ndarray, list[str]], np.ndarray]


def zero_policy(chunk_size: int) -> PolicyFn:
    """Baseline that never moves: every action is all zeros."""

    def policy_fn(images: np.ndarray, instructions: list[str]) -> np.ndarray:
        return np.zeros((len(images), chunk_size, 4), dtype=np.float32)

    return policy_fn


def random_policy(chunk_size: int, seed: int = 0) -> PolicyFn:
    """Baseline with uniform arm deltas in [-1, 1] and a random open/close gripper (seeded)."""
    rng = np.random.default_rng(seed)

    def policy_fn(images: np.ndarray, instructions: list[str]) -> np.ndarray:
        actions = rng.uniform(-1.0, 1.0, size=(len(images), chunk_size, 4)).astype(np.float32)
        actions[..., 3] = np.where(actions[..., 3] >= 0, 1.0, -1.0)
        return actions

    return policy_fn


def rollout(
    policy_fn: PolicyFn,
    tasks: list[str],
    episode_seeds: list[int],
    execute_steps: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    camera: str = DEFAULT_CAMERA,
    max_steps: int = DEFAULT_MAX_STEPS,
    chunk_size: int = 1,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every task on every seed; one record per episode in (task, seed) order.

    Record keys: task, episode_seed, instruction, success (bool, success at any step),
    steps (env steps taken), execute_steps.
    """
    if not 1 <= execute_steps <= chunk_size:
        raise ValueError(f"execute_steps must be in [1, chunk_size={chunk_size}], got {execute_steps}")
    episodes = [(task, int(seed)) for task in tasks for seed in episode_seeds]
    batch_size = batch_size or max(len(episodes), 1)
    pool: dict[str, list[MetaWorldEnv]] = {}  # envs are reused across batches
    records: list[dict] = []
    bar = tqdm(total=len(episodes), desc=f"rollout exec={execute_steps}", unit="ep", disable=not progress, mininterval=2)
    for start in range(0, len(episodes), batch_size):
        batch = episodes[start : start + batch_size]
        taken: dict[str, int] = {}
        envs = []
        for task, seed in batch:
            free = pool.setdefault(task, [])
            k = taken.get(task, 0)
            if k == len(free):
                free.append(MetaWorldEnv(task, image_size, camera, max_steps))
            taken[task] = k + 1
            env = free[k]
            env.reset(seed)
            envs.append(env)
        texts = [instruction(task, seed) for task, seed in batch]
        active = list(range(len(batch)))
        while active:
            images = np.stack([envs[i].render() for i in active])
            chunk = np.asarray(policy_fn(images, [texts[i] for i in active]), dtype=np.float32)
            if chunk.shape != (len(active), chunk_size, 4) or not np.isfinite(chunk).all():
                raise ValueError(
                    f"policy_fn must return finite actions of shape {(len(active), chunk_size, 4)}, got {chunk.shape}"
                )
            for j, i in enumerate(active):
                env = envs[i]
                for t in range(execute_steps):
                    env.step(chunk[j, t])
                    if env.success or env.steps >= max_steps:
                        break
            finished = [i for i in active if envs[i].success or envs[i].steps >= max_steps]
            active = [i for i in active if i not in finished]
            bar.update(len(finished))
        for (task, seed), env, text in zip(batch, envs, texts, strict=True):
            records.append(
                dict(task=task, episode_seed=seed, instruction=text, success=env.success,
                     steps=env.steps, execute_steps=execute_steps)
            )
        bar.set_postfix(success=f"{sum(r['success'] for r in records)}/{len(records)}")
    bar.close()
    for envs_of_task in pool.values():
        for env in envs_of_task:
            env.close()
    return records
