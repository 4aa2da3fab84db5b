"""Embedded Meta-World benchmark: env, instructions, expert data collection, lockstep rollouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import vlm4vla_core.benchmarks.metaworld  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)

pytest.importorskip("metaworld")

import mujoco  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402

from vlm4vla_core.benchmarks.metaworld import collect as collect_mod  # noqa: E402
from vlm4vla_core.benchmarks.metaworld.env import (  # noqa: E402
    EVAL_SEED_START,
    MetaWorldEnv,
    _fast_renderer,
    demo_seeds,
    eval_seeds,
)
from vlm4vla_core.benchmarks.metaworld.instructions import instruction  # noqa: E402
from vlm4vla_core.benchmarks.metaworld.rollout import random_policy, rollout, zero_policy  # noqa: E402

TASK = "button-press-topdown-v3"  # expert succeeds in ~65 steps
SEED = EVAL_SEED_START + 3
SIZE = 64


@pytest.fixture(scope="module")
def expert_actions() -> np.ndarray:
    env = MetaWorldEnv(TASK, SIZE, max_steps=150)
    frames, actions, success = collect_mod.expert_episode(env, SEED)
    assert success and len(frames) == len(actions) > 10
    return actions


def replay_policy(actions: np.ndarray, execute_steps: int, chunk_size: int):
    """Open-loop replay of recorded actions as a policy_fn for a single episode."""
    calls = []

    def policy_fn(images: np.ndarray, instructions: list[str]) -> np.ndarray:
        assert images.shape == (1, SIZE, SIZE, 3) and images.dtype == np.uint8
        assert instructions == [instruction(TASK, SEED)]
        start = len(calls) * execute_steps
        chunk = np.zeros((1, chunk_size, 4), np.float32)
        part = actions[start : start + chunk_size]
        chunk[0, : len(part)] = part
        calls.append(start)
        return chunk

    return policy_fn, calls


@pytest.mark.parametrize("execute_steps", [4, 2, 1])
def test_expert_replayed_through_rollout_succeeds(expert_actions, execute_steps):
    policy_fn, calls = replay_policy(expert_actions, execute_steps, chunk_size=4)
    [rec] = rollout(policy_fn, [TASK], [SEED], execute_steps, image_size=SIZE, max_steps=150, chunk_size=4,
                    progress=False)
    assert rec["success"] is True and rec["steps"] == len(expert_actions)
    assert len(calls) == -(-len(expert_actions) // execute_steps)  # one query per execute_steps steps


def test_baselines_fail_and_batch_is_lockstep():
    [rec] = rollout(zero_policy(4), [TASK], [SEED], 4, image_size=SIZE, max_steps=40, chunk_size=4, progress=False)
    assert rec["success"] is False and rec["steps"] == 40
    sizes = []
    base = random_policy(4, seed=1)

    def counting(images, texts):
        sizes.append(len(images))
        return base(images, texts)

    tasks, seeds = [TASK, "drawer-open-v3"], eval_seeds(2)
    recs = rollout(counting, tasks, seeds, 2, image_size=SIZE, max_steps=20, chunk_size=4, progress=False)
    assert [(r["task"], r["episode_seed"]) for r in recs] == [(t, s) for t in tasks for s in seeds]
    assert sizes == [4] * 10 and not any(r["success"] for r in recs)  # 4 episodes per call, 20/2 calls
    again = rollout(random_policy(4, seed=1), tasks, seeds, 2, image_size=SIZE, max_steps=20, chunk_size=4,
                    progress=False)
    assert again == recs
    with pytest.raises(ValueError, match="execute_steps"):
        rollout(zero_policy(4), [TASK], [SEED], 5, image_size=SIZE, chunk_size=4, progress=False)
    with pytest.raises(ValueError, match="shape"):
        rollout(zero_policy(3), [TASK], [SEED], 2, image_size=SIZE, chunk_size=4, progress=False)


def test_initial_conditions_are_a_function_of_the_seed():
    a, b = MetaWorldEnv("drawer-open-v3", SIZE), MetaWorldEnv("drawer-open-v3", SIZE)
    first = a.reset(EVAL_SEED_START).copy()
    a.step(np.ones(4))
    b.reset(7)
    assert np.array_equal(b.reset(EVAL_SEED_START), first)  # same seed, other env, other history
    assert np.array_equal(a.reset(EVAL_SEED_START), first)
    assert not np.allclose(a.reset(EVAL_SEED_START + 1)[4:7], first[4:7])  # object moves with the seed
    assert set(demo_seeds(50)).isdisjoint(eval_seeds(50)) and max(demo_seeds(50)) < EVAL_SEED_START
    with pytest.raises(ValueError, match="demo seeds"):
        demo_seeds(10, offset=EVAL_SEED_START - 5)


def test_images_are_upright():
    env = MetaWorldEnv("drawer-open-v3", SIZE, camera="corner4")
    env.reset(SEED)
    img = env.render()
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    up = env._env.data.cam("corner4").xmat.reshape(3, 3)[:, 1]
    assert up[2] > 0.5  # image "up" points up in the world
    f = img.astype(int)
    table = (f[..., 0] - f[..., 2] > 35) & (f[..., 0] > f[..., 1]) & (f[..., 1] > f[..., 2])  # brown wood
    assert table[SIZE // 2 :].mean() > 3 * table[: SIZE // 2].mean()  # the table is at the bottom
    raw = ALL_V3_ENVIRONMENTS["drawer-open-v3"]()  # Meta-World's own camera renders upside down
    raw.model.body_pos[:] = env._env.model.body_pos
    raw.data.qpos[:], raw.data.mocap_pos[:] = env._env.data.qpos, env._env.data.mocap_pos
    mujoco.mj_forward(raw.model, raw.data)
    with _fast_renderer(raw.model, SIZE) as renderer:
        renderer.update_scene(raw.data, camera="corner4")
        flipped = renderer.render().astype(int)
    assert np.abs(flipped[::-1, ::-1] - f).mean() < 2 < np.abs(flipped - f).mean()


def test_instructions_and_names_are_checked():
    assert instruction(TASK, 0) != instruction(TASK, 1) and instruction(TASK, 2) == instruction(TASK, 0)
    assert all(instruction(task, 0) for task in ALL_V3_ENVIRONMENTS)  # every v3 task has one
    with pytest.raises(ValueError, match="no-such-task"):
        instruction("no-such-task", 0)
    with pytest.raises(ValueError, match="no-such-task"):
        MetaWorldEnv("no-such-task")
    with pytest.raises(ValueError, match="nocam"):
        MetaWorldEnv(TASK, camera="nocam")


def test_collect_data_roundtrip_and_bad_data(tmp_path, expert_actions):
    out = tmp_path / "data"
    argv = ["--tasks", TASK, "--episodes-per-task", "2", "--image-size", str(SIZE), "--camera", "corner4",
            "--max-steps", "150", "--seed-offset", "5", "--workers", "2", "--out", str(out), "--no-progress"]
    assert collect_mod.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp dir left behind
    table = pq.read_table(out / f"{TASK}.parquet")
    assert table.schema.field("image").type == pa.binary()
    assert table.schema.field("action").type == pa.list_(pa.float32())
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"][TASK]["seeds"] == [5, 6] and stats["image_size"] == SIZE
    assert stats["total_steps"] == table.num_rows and len(stats["action"]["q99"]) == 4
    frames, actions, texts, episode, tasks = collect_mod.load_episodes(out)
    assert frames.shape == (table.num_rows, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert actions.dtype == np.float32 and actions.shape == (table.num_rows, 4)
    assert set(episode) == {0, 1} and tasks == [TASK] * table.num_rows
    assert texts[0] == instruction(TASK, 5) and texts[-1] == instruction(TASK, 6)
    assert np.allclose(actions.min(0), stats["action"]["min"])
    env = MetaWorldEnv(TASK, SIZE, "corner4", 150)
    ep_frames, ep_actions, _ = collect_mod.expert_episode(env, 5)  # a worker process made the same episode
    assert np.array_equal(ep_actions, actions[episode == 0])
    assert np.array_equal(np.stack(ep_frames), frames[episode == 0])

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    pq.write_table(table.drop_columns(["action"]), bad / f"{TASK}.parquet")
    with pytest.raises(ValueError, match=f"{TASK}.parquet.*action"):
        collect_mod.load_episodes(bad)
    (bad / f"{TASK}.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=f"{TASK}.parquet"):
        collect_mod.load_episodes(bad)
    (bad / "stats.json").unlink()
    with pytest.raises(ValueError, match="stats.json"):
        collect_mod.load_episodes(bad)


def test_collect_drops_failed_episodes_and_tops_up(tmp_path):
    out = tmp_path / "data"
    stats = collect_mod.collect([TASK], 2, out, image_size=32, max_steps=64, progress=False)  # expert needs 56-75
    counts = stats["counts"][TASK]
    assert counts["episodes"] == 2 and counts["dropped_seeds"] and stats["dropped"] == len(counts["dropped_seeds"])
    assert sorted(counts["seeds"] + counts["dropped_seeds"]) == list(range(len(counts["seeds"]) + stats["dropped"]))
    assert counts["max_length"] <= 64
    with pytest.raises(RuntimeError, match="drawer-open-v3"):
        collect_mod.collect(["drawer-open-v3"], 1, tmp_path / "never", image_size=32, max_steps=10, progress=False)
    assert not (tmp_path / "never").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
