"""Embedded Meta-World benchmark: env, instructions, expert data collection, lockstep rollouts on the benchmark layer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import vlm4vla_core.benchmarks.metaworld  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)

pytest.importorskip("metaworld")

import mujoco  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402

from vlm4vla_core import benchmarks  # noqa: E402
from vlm4vla_core.benchmarks.base import Episode, run_episodes, zero_infer  # noqa: E402
from vlm4vla_core.episodes.source import TrainingSet  # noqa: E402

from vlm4vla_core.benchmarks.metaworld import collect as collect_mod  # noqa: E402
from vlm4vla_core.benchmarks.metaworld.env import (  # noqa: E402
    EVAL_SEED_START,
    MetaWorldEnv,
    _fast_renderer,
    demo_seeds,
    eval_seeds,
)
from vlm4vla_core.benchmarks.metaworld.instructions import instruction  # noqa: E402

TASK = "button-press-topdown-v3"  # expert succeeds in ~65 steps
SEED = EVAL_SEED_START + 3
SIZE = 64


@pytest.fixture(scope="module")
def expert_actions() -> np.ndarray:
    env = MetaWorldEnv(TASK, SIZE, max_steps=150)
    frames, actions, success = collect_mod.expert_episode(env, SEED)
    assert success and len(frames) == len(actions) > 10
    return actions


MW = benchmarks.get("metaworld")


def entry(max_steps: int = 150, tasks=(TASK,)) -> dict:
    return MW.settings(dict(kind="metaworld", chunk=4, tasks=list(tasks), image_size=SIZE, camera="corner4",
                            demos_per_task=1, episodes_per_task=1, max_steps=max_steps))


def episodes(tasks, seeds) -> list[Episode]:
    pairs = [(t, s) for t in tasks for s in seeds]
    return [Episode(i, t, instruction(t, s), {"episode_seed": s}) for i, (t, s) in enumerate(pairs)]


def rollout(infer, tasks, seeds, execute, max_steps=150, slots=64):
    return run_episodes(MW, entry(max_steps, tasks), episodes(tasks, seeds), infer, execute, slots=slots,
                        progress=False)


def random_infer(seed: int):
    rng = np.random.default_rng(seed)

    def infer(requests):
        out = rng.uniform(-1.0, 1.0, size=(len(requests), 4, 4)).astype(np.float32)
        out[..., 3] = np.where(out[..., 3] >= 0, 1.0, -1.0)
        return list(out)

    return infer


def replay_policy(actions: np.ndarray, execute_steps: int, chunk_size: int):
    """Open-loop replay of recorded actions as the policy of a single episode."""
    calls = []

    def infer(requests):
        [req] = requests
        assert req["image"].shape == (SIZE, SIZE, 3) and req["image"].dtype == np.uint8
        assert req["instruction"] == instruction(TASK, SEED)
        start = len(calls) * execute_steps
        chunk = np.zeros((chunk_size, 4), np.float32)
        part = actions[start : start + chunk_size]
        chunk[: len(part)] = part
        calls.append(start)
        return [chunk]

    return infer, calls


@pytest.mark.parametrize("execute_steps", [4, 2, 1])
def test_expert_replayed_through_rollout_succeeds(expert_actions, execute_steps):
    infer, calls = replay_policy(expert_actions, execute_steps, chunk_size=4)
    [rec] = rollout(infer, [TASK], [SEED], execute_steps)
    assert rec["success"] is True and rec["steps"] == len(expert_actions)
    assert len(calls) == rec["plans"] == -(-len(expert_actions) // execute_steps)  # one query per execute_steps


def test_baselines_fail_and_batch_is_lockstep():
    [rec] = rollout(zero_infer(4, 4), [TASK], [SEED], 4, max_steps=40)
    assert rec["success"] is False and rec["steps"] == 40
    sizes = []
    base = random_infer(1)

    def counting(requests):
        sizes.append(len(requests))
        return base(requests)

    tasks, seeds = [TASK, "drawer-open-v3"], eval_seeds(2)
    recs = rollout(counting, tasks, seeds, 2, max_steps=20)
    assert [(r["task"], r["episode_seed"]) for r in recs] == [(t, s) for t in tasks for s in seeds]
    assert sizes == [4] * 10 and not any(r["success"] for r in recs)  # 4 episodes per call, 20/2 calls
    again = rollout(random_infer(1), tasks, seeds, 2, max_steps=20)
    assert again == recs
    one_at_a_time = []
    rollout(lambda r: (one_at_a_time.append(len(r)), zero_infer(4, 4)(r))[1], tasks, seeds, 2, max_steps=20, slots=1)
    assert one_at_a_time == [1] * 40
    with pytest.raises(ValueError, match="chunk"):
        rollout(lambda r: [np.zeros((1, 4), np.float32) for _ in r], [TASK], [SEED], 2)


def test_episode_list_is_disjoint_from_demos_and_per_seed():
    e = MW.settings(dict(kind="metaworld", chunk=4, tasks=[TASK, "drawer-open-v3"], image_size=SIZE,
                         camera="corner4", demos_per_task=1, episodes_per_task=3, max_steps=50))
    eps0, eps1 = MW.episodes(e, 0), MW.episodes(e, 1)
    assert [x.index for x in eps0] == list(range(6)) and [x.task for x in eps0] == [TASK] * 3 + ["drawer-open-v3"] * 3
    assert [x.params["episode_seed"] for x in eps0[:3]] == eval_seeds(3)
    assert {x.params["episode_seed"] for x in eps0}.isdisjoint({x.params["episode_seed"] for x in eps1})


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
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "lerobot", "stats.json"]
    info = json.loads((out / "lerobot" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 80 and info["total_episodes"] == 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"][TASK]["seeds"] == [5, 6] and stats["image_size"] == SIZE
    assert stats["frames"] == info["total_frames"] and len(stats["action"]["q99"]) == 4
    data = TrainingSet(out)
    assert data.num_frames == info["total_frames"] and data.action_dim == 4
    first, text = data.frame(0)
    last, text_last = data.frame(data.num_frames - 1)
    assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
    assert text == instruction(TASK, 5) and text_last == instruction(TASK, 6)
    env = MetaWorldEnv(TASK, SIZE, "corner4", 150)
    ep_frames, ep_actions, _ = collect_mod.expert_episode(env, 5)  # a worker process made the same episode
    assert np.array_equal(data.episode_actions(0), ep_actions)
    assert all(np.array_equal(data.frame(t)[0], ep_frames[t]) for t in (0, len(ep_frames) // 2, len(ep_frames) - 1))
    assert np.allclose(np.concatenate([data.episode_actions(k) for k in (0, 1)]).min(0), stats["action"]["min"])
    tail = data.action_chunk(len(ep_actions) - 2, 4)  # the chunk stays inside its episode
    assert np.array_equal(tail, ep_actions[[-2, -1, -1, -1]])

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    parquet = sorted((bad / "lerobot" / "data").rglob("*.parquet"))[0]
    pq.write_table(pq.read_table(parquet).drop_columns(["action"]), parquet)
    with pytest.raises(ValueError, match="action"):
        TrainingSet(bad).action_chunk(0, 4)
    parquet.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=parquet.name):
        TrainingSet(bad).frame(0)
    (bad / "dataset.json").unlink()
    with pytest.raises(ValueError, match="dataset.json"):
        TrainingSet(bad)


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
