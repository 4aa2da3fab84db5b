"""CALVIN ABC->D: pyhash's fnv1_32 and the initial-condition-to-scene mapping against known values, the
chain protocol against a fake environment and oracle that record every call (chain stopping, the
per-subtask policy reset, the 360-step limit counted in env steps with chunked execution), the metric
arithmetic on hand-computed chain outcomes, shard merging by counts, and the importer on a task_ABC_D
fixture written in the native layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.benchmarks.base import run_episodes
from vlm4vla_core.benchmarks.calvin import calvin_to_canonical, canonical_to_calvin, protocol
from vlm4vla_core.benchmarks.calvin.protocol import chain_metrics, condition_seed, fnv1_32, initial_state, pyhash_fnv1_32
from vlm4vla_core.config import ConfigError, Study
from vlm4vla_core.episodes.source import TrainingSet

from vlm4vla_core.testing.calvin import FakeCalvin, frame_image, rel_action, write_task_abc_d

CALVIN = benchmarks.get("calvin")


def calvin_entry(**kw) -> dict:
    return CALVIN.settings({**dict(kind="calvin", chunk=10, data_path="unused", chains=3), **kw})


# -- pyhash fnv1_32 ---------------------------------------------------------------------------------
def test_fnv1_32_matches_the_published_test_vectors():
    # FNV-1 32 with the standard offset basis: the reference test vectors (test_fnv.c, fnv1_32_vector)
    vectors = {b"": 0x811C9DC5, b"a": 0x050C5D7E, b"b": 0x050C5D7D, b"f": 0x050C5D79, b"fo": 0x6B772514,
               b"foo": 0x408F5E13, b"foob": 0xB4B1178B, b"fooba": 0xFDC80FB0, b"foobar": 0x31F0B262,
               b"\0": 0x050C5D1F, b"a\0": 0x70772D5A}
    for data, want in vectors.items():
        assert fnv1_32(data, protocol.FNV1_32_INIT) == want, data


def test_pyhash_fnv1_32_matches_pyhash_own_test_values():
    # pyhash 0.9.3 tests/test_fnv1.py: seed 0 (not the offset basis); str hashed as UTF-16-LE
    assert pyhash_fnv1_32(b"test") == 3698262380
    assert pyhash_fnv1_32("test") == 3910690890
    assert pyhash_fnv1_32(b"test", seed=3698262380) == 660137056
    assert pyhash_fnv1_32("test") != fnv1_32(b"test", protocol.FNV1_32_INIT)  # the standard FNV-1 would be wrong


# values of the official get_env_state_for_initial_condition (calvin_agent/evaluation/utils.py), run with its
# pyhash replaced by pyhash_fnv1_32: [red x, red y, red yaw, blue x, blue y, blue yaw, pink x, pink y, pink yaw]
KNOWN = [
    ({"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left", "blue_block": "table",
      "pink_block": "slider_right", "grasped": 0}, 2138410836,
     [-0.240851662, 0.0924044687, 1.8859410064104645, 0.229995412, -0.11999514, 1.488143437705632, 0.070341633,
      0.0924044687, 1.4683986863194542]),
    ({"led": 1, "lightbulb": 1, "slider": "right", "drawer": "open", "red_block": "slider_right", "blue_block": "table",
      "pink_block": "slider_left", "grasped": 0}, 2685153213,
     [0.070341633, 0.0924044687, 1.8268336264859704, 0.229995412, -0.11999514, 1.507641694779252, -0.240851662,
      0.0924044687, 1.6461964143959458]),
    ({"led": 0, "lightbulb": 1, "slider": "right", "drawer": "closed", "red_block": "table", "blue_block": "slider_right",
      "pink_block": "slider_left", "grasped": 0}, 4009425464,
     [0.0500000896, -0.120000177, 1.4912139041697137, 0.070341633, 0.0924044687, 1.610703281474808, -0.240851662,
      0.0924044687, 1.5452273400945669]),
]


def test_initial_condition_to_scene():
    for condition, seed, blocks in KNOWN:
        assert condition_seed(condition) == seed
        assert pyhash_fnv1_32(str(condition.values())) == seed and str(condition.values()).startswith("dict_values([")
        robot, scene = initial_state(condition)
        assert np.array_equal(robot, protocol.NEUTRAL_ROBOT_OBS) and robot[-1] == 1.0  # gripper open
        assert scene[[6, 7, 11, 12, 13, 17, 18, 19, 23]].tolist() == blocks
        assert scene[0] == (0.28 if condition["slider"] == "left" else 0) and scene[1] == (0.22 if condition["drawer"] == "open" else 0)
        assert scene[3] == 0.088 * condition["lightbulb"] and scene[4] == condition["lightbulb"] and scene[5] == condition["led"]
    first = KNOWN[0][0]
    with pytest.raises(ValueError, match="order"):
        condition_seed(dict(reversed(list(first.items()))))
    # the official chains: 192 initial conditions, all in CALVIN's key order; two table blocks never share a slot
    found = protocol.chains()
    assert len(found) == 1000 and found[0][0] == first
    for condition, _ in {json.dumps(c): (c, s) for c, s in found}.values():
        _, scene = initial_state(condition)
        on_table = [scene[i:i + 3].tolist() for i in (6, 12, 18) if scene[i + 1] < 0]
        assert len(on_table) == len({tuple(p) for p in on_table}) in (1, 2)


def test_episodes_are_the_official_chains_with_first_instructions():
    eps = CALVIN.episodes(calvin_entry(chains=1000), seed=5)
    assert len(eps) == 1000 and eps == CALVIN.episodes(calvin_entry(chains=1000), seed=0)
    e = eps[0]
    assert e.params["subtasks"] == ["rotate_blue_block_right", "move_slider_right", "lift_red_block_slider",
                                    "place_in_slider", "turn_off_lightbulb"]
    assert e.params["instructions"][0] == "take the blue block and rotate it to the right" == e.instruction
    assert protocol.instructions()["lift_red_block_drawer"] == "Take the red block from the drawer"
    assert [x.index for x in CALVIN.episodes(calvin_entry(chains=4), 0)] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="egl_device"):
        CALVIN.check("calvin", dict(kind="calvin", chunk=10, data_path="x", egl_device="gpu"))
    assert CALVIN.metric == "avg_len" and CALVIN.sim_env == "calvin.yaml"


# -- the protocol against a fake env ----------------------------------------------------------------------
def chunk_infer(log: list, chunk: int = 10, grip: float = 1.0):
    """Each request's chunk: arm dim 0 = the request's number, dim 1 = the position in the chunk."""

    def infer(requests):
        out = []
        for r in requests:
            log.append(r)
            c = np.zeros((chunk, 7), np.float32)
            c[:, 0], c[:, 1], c[:, 6] = len(log), np.arange(chunk), grip
            out.append(c)
        return out

    return infer


def test_chain_protocol_on_a_fake_env(monkeypatch):
    log, requests = [], []
    # chain 0: subtasks 1 and 2 succeed at their 3rd and 12th env step, subtask 3 never: the chain stops there
    at = {"rotate_blue_block_right": 3, "move_slider_right": 12}
    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: FakeCalvin(log, at))
    entry = calvin_entry(chains=1, max_steps=25)
    [rec] = run_episodes(CALVIN, entry, CALVIN.episodes(entry, 0), chunk_infer(requests), execute=10, progress=False)
    assert [x[0] for x in log].count("reset") == 1 and log[0][0] == "reset"  # the scene is reset once per chain
    robot, scene = initial_state(KNOWN[0][0])
    assert log[0][1] == robot.tolist() and log[0][2] == scene.tolist()
    steps = [x for x in log if x[0] == "step"]
    assert len(steps) == 3 + 12 + 25 and rec["steps"] == 40  # the limit counts env steps, not policy calls
    assert rec["completed"] == 2 and not rec["success"]
    assert rec["subtask_results"] == [{"task": "rotate_blue_block_right", "success": True, "steps": 3},
                                      {"task": "move_slider_right", "success": True, "steps": 12},
                                      {"task": "lift_red_block_slider", "success": False, "steps": 25}]
    # the policy is reset at every subtask: a fresh chunk at its first step, whatever was left in the queue
    first_of = [0, 3, 15]
    plan_of_step = [int(s[2][0]) for s in steps]
    assert [plan_of_step[i] for i in first_of] == [1, 2, 4]
    assert plan_of_step == [1] * 3 + [2] * 10 + [3] * 2 + [4] * 10 + [5] * 10 + [6] * 5
    assert [s[2][1] for s in steps[:3]] == [0, 1, 2]  # the actions of a chunk in order
    assert rec["plans"] == 6 == len(requests)
    assert [r["instruction"] for r in requests] == ["take the blue block and rotate it to the right"] + [
                                                    "push the sliding door to the right side"] * 2 + \
        ["lift the red block from the sliding cabinet"] * 3
    # the oracle runs after every step against the info taken when the subtask started
    oracle = [x for x in log if x[0] == "oracle"]
    assert len(oracle) == 40 and [o[2] for o in oracle] == [0] * 3 + [3] * 12 + [15] * 25
    assert [x[1] for x in log if x[0] == "info"] == [0, 3, 15]
    # canonical gripper +1 (closed) reaches the env as CALVIN's -1 (close); renders only on re-plans
    assert all(s[2][6] == -1.0 for s in steps)
    assert [x[1] for x in log if x[0] == "render"] == [0, 3, 13, 15, 25, 35]


def test_step_limit_and_full_chain(monkeypatch):
    log = []
    tasks = CALVIN.episodes(calvin_entry(chains=1), 0)[0].params["subtasks"]
    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: FakeCalvin(log, {t: 1 for t in tasks}))
    entry = calvin_entry(chains=1, max_steps=360)
    [rec] = run_episodes(CALVIN, entry, CALVIN.episodes(entry, 0), chunk_infer([]), execute=10, progress=False)
    assert rec["completed"] == 5 and rec["success"] and rec["steps"] == 5 and rec["plans"] == 5
    log.clear()
    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: FakeCalvin(log, {tasks[0]: 360}))
    [rec] = run_episodes(CALVIN, entry, CALVIN.episodes(entry, 0), chunk_infer([]), execute=10, progress=False)
    assert rec["completed"] == 1 and rec["subtask_results"][1] == {"task": tasks[1], "success": False, "steps": 360}
    assert rec["steps"] == 720 and rec["plans"] == 36 + 36  # success at the 360th step still counts
    log.clear()
    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: FakeCalvin(log, {tasks[0]: 361}))
    [rec] = run_episodes(CALVIN, entry, CALVIN.episodes(entry, 0), chunk_infer([]), execute=7, progress=False)
    assert rec["completed"] == 0 and rec["steps"] == 360 and rec["plans"] == 52  # ceil(360 / 7)


def test_action_conversion():
    a = canonical_to_calvin(np.array([0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.9]))
    assert a.tolist() == [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, -1.0]  # canonical closed -> CALVIN close (-1)
    assert canonical_to_calvin(np.array([0, 0, 0, 0, 0, 0, -0.3]))[-1] == 1.0
    assert calvin_to_canonical(np.array([[0.5, 0, 0, 0, 0, 0, 1.0]]))[0, -1] == -1.0  # CALVIN open -> canonical open
    assert CALVIN.action_bounds(calvin_entry(), {}) == ([-1.0] * 6, [1.0] * 6)  # no percentile step (official)


# -- metrics -------------------------------------------------------------------------------------------
SEQ = ["a", "b", "c", "d", "e"]


def test_metric_arithmetic_on_hand_computed_chains():
    completed = [5, 3, 0, 1, 5, 2]
    records = [{"completed": c, "subtasks": SEQ} for c in completed]
    m = chain_metrics(records, n_boot=200)
    # SR@L = share of chains with >= L: 5/6, 4/6, 3/6, 2/6, 2/6; avg len = 16/6 = their sum
    assert m["success_at"] == {"1": 5 / 6, "2": 4 / 6, "3": 3 / 6, "4": 2 / 6, "5": 2 / 6}
    assert m["avg_len"] == pytest.approx(16 / 6) == pytest.approx(sum(m["success_at"].values()))
    # per subtask: successes / attempts (a subtask is attempted when the previous ones succeeded)
    assert m["per_task"]["a"] == {"success": 5, "attempts": 6, "rate": 5 / 6}
    assert m["per_task"]["b"] == {"success": 4, "attempts": 5, "rate": 4 / 5}
    assert m["per_task"]["c"] == {"success": 3, "attempts": 4, "rate": 3 / 4}
    assert m["per_task"]["d"]["attempts"] == 3 and m["per_task"]["e"] == {"success": 2, "attempts": 2, "rate": 1.0}
    lo, hi = m["ci"]["avg_len"]
    assert 0 <= lo <= m["avg_len"] <= hi <= 5
    assert chain_metrics(records, n_boot=200)["ci"] == m["ci"]  # seeded
    with pytest.raises(ValueError):
        chain_metrics([{"completed": 6, "subtasks": SEQ}])


def test_shards_merge_by_counts(monkeypatch, tmp_path):
    """7 chains over 3 shards (3, 2, 2 chains) merge to the single job's records and numbers; averaging the
    shards' own SR@k, as VLM4VLA's eval_ckpts.py does, would not."""
    monkeypatch.setattr(type(CALVIN), "in_process", True)
    eps = CALVIN.episodes(calvin_entry(chains=7), 0)
    # chain i completes i % 6 subtasks: its k-th subtask succeeds at step 2 while k < completed
    plan = {e.index: e.index % 6 for e in eps}

    class ByChain(FakeCalvin):
        def reset(self, robot_obs, scene_obs):
            self.chain = next(e.index for e in eps if np.array_equal(initial_state(e.params["initial_condition"])[1], scene_obs))
            self.k = -1
            return super().reset(robot_obs, scene_obs)

        def info(self):
            self.k += 1
            return super().info()

        def success(self, start, info, subtask):
            return self.k < plan[self.chain] and info["t"] - start["t"] == 2

    monkeypatch.setattr(type(CALVIN), "simulator", lambda self, entry: ByChain([]))
    config = Study.from_dict(dict(study="t", benchmarks={"calvin": dict(kind="calvin", chunk=10, data_path="x", chains=7,
                                                                          max_steps=4)}))
    whole, _ = evaluate.evaluate(config, "calvin", 0, chunk_infer([]), 10, ["whole_chunk"], tmp_path / "one.json")
    assert [e["completed"] for e in whole["whole_chunk"]["episodes"]] == [min(i % 6, 5) for i in range(7)]
    shards = []
    for i in range(3):
        res, parts = evaluate.evaluate(config, "calvin", 0, chunk_infer([]), 10, ["whole_chunk"], tmp_path / f"s{i}.json", i, 3)
        parts.remove()
        shards.append(dict(backbone="b", benchmark="calvin", kind="calvin", ablation="full", seed=0, checkpoint="p",
                           episodes_total=7, mode_selection="whole_chunk", shard=[i, 3], modes=res))
    merged = evaluate.merge(shards, ["s0", "s1", "s2"])
    assert merged["modes"] == whole
    m = chain_metrics(merged["modes"]["whole_chunk"]["episodes"], n_boot=0)
    assert m["avg_len"] == pytest.approx((0 + 1 + 2 + 3 + 4 + 5 + 0) / 7)
    per_shard = [chain_metrics(s["modes"]["whole_chunk"]["episodes"], n_boot=0)["avg_len"] for s in shards]
    assert [len(s["modes"]["whole_chunk"]["episodes"]) for s in shards] == [3, 2, 2]
    assert np.mean(per_shard) != pytest.approx(m["avg_len"])  # the unequal-shard pitfall


def test_metrics_cli(tmp_path, capsys):
    from vlm4vla_core.benchmarks.calvin import metrics

    record = {"reported_mode": "whole_chunk", "modes": {"whole_chunk": {"execute_steps": 10, "episodes": [
        {"completed": c, "subtasks": SEQ} for c in (5, 0, 2)]}}}
    (tmp_path / "eval.json").write_text(json.dumps(record))
    assert metrics.main([str(tmp_path / "eval.json"), "--n-boot", "50", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "average length 2.333" in out and "SR@1:  66.7%" in out
    assert json.loads((tmp_path / "m.json").read_text())["chains"] == 3


# -- importer --------------------------------------------------------------------------------------------
def test_importer_reads_task_abc_d(tmp_path):
    src = write_task_abc_d(tmp_path / "task_ABC_D")
    entry = calvin_entry(data_path=str(src), windows_per_block=3)
    CALVIN.build_data(entry, tmp_path / "data", workers=2)
    data = TrainingSet(tmp_path / "data")
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    # one episode per language window, frames start..end inclusive, overlapping windows repeat frames
    assert data.data.episode_lengths.tolist() == [10, 10, 12, 20] and data.num_frames == 52
    assert stats["windows"] == 4 and stats["frame_digits"] == 7
    image, text = data.frame(10)  # window 2 starts at frame 5
    assert text == "push the red block left" and image[0, 0].tolist() == frame_image(5)[0, 0].tolist()
    assert data.frame(20)[1] == "open the drawer" and data.frame(20)[0][0, 0, 0] == 100
    actions = data.episode_actions(3)
    want = np.stack([rel_action(i) for i in range(130, 150)])
    assert np.allclose(actions[:, :6], want[:, :6]) and np.array_equal(actions[:, 6], -want[:, 6])  # gripper negated
    assert data.action_chunk(9, 3).tolist() == [data.episode_actions(0)[9].tolist()] * 3  # chunks stop at the window end
    assert not (tmp_path / "data.staging").exists()
    single = tmp_path / "single"
    CALVIN.build_data(calvin_entry(data_path=str(src), windows_per_block=100), single, workers=1)
    one = TrainingSet(single)
    assert [one.frame(i)[1] for i in range(52)] == [data.frame(i)[1] for i in range(52)]
    assert np.array_equal(one.episode_actions(2), data.episode_actions(2))
    with pytest.raises(ConfigError, match="data_path"):
        CALVIN.build_data(calvin_entry(data_path=str(tmp_path / "nowhere")), tmp_path / "x")


def test_importer_resumes_after_an_interruption(tmp_path, monkeypatch):
    from vlm4vla_core.benchmarks.calvin import importer as calvin_importer

    src = write_task_abc_d(tmp_path / "task_ABC_D")
    entry = calvin_entry(data_path=str(src), windows_per_block=1)
    real, calls = calvin_importer._read_window, []

    def dies_at_third(split, digits, start, end):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(split, digits, start, end)

    monkeypatch.setattr(calvin_importer, "_read_window", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        CALVIN.build_data(entry, tmp_path / "data", workers=1)
    assert not (tmp_path / "data").exists()
    done = sorted(p.name for p in (tmp_path / "data.staging").iterdir() if (p / "meta" / "info.json").is_file())
    assert done == ["block_00000", "block_00001"]
    calls.clear()
    monkeypatch.setattr(calvin_importer, "_read_window", lambda *a: (calls.append(a[2]), real(*a))[1])
    CALVIN.build_data(entry, tmp_path / "data", workers=1)
    assert calls == [100, 130]  # only the unfinished windows
    assert TrainingSet(tmp_path / "data").num_frames == 52


def test_importer_rejects_windows_outside_segments(tmp_path):
    src = write_task_abc_d(tmp_path / "bad", windows=((30, 45, "open the drawer"),))
    with pytest.raises(ValueError, match="segment"):
        CALVIN.build_data(calvin_entry(data_path=str(src)), tmp_path / "data")


def test_importer_reads_a_lerobot_copy(tmp_path):
    from lerobot_fixtures import synthetic_episodes, write_v30

    eps = synthetic_episodes([5, 4], size=16, action_dim=7, tasks=("open the drawer", "turn on the led"))
    eps = [(imgs, np.c_[acts[:, :6], np.where(np.arange(len(acts)) % 2, 1.0, -1.0)].astype(np.float32), task)
           for imgs, acts, task in eps]
    src = write_v30(tmp_path / "calvin_lerobot", eps, image_key="image")
    CALVIN.build_data(calvin_entry(data_path=str(src)), tmp_path / "data")
    data = TrainingSet(tmp_path / "data")
    assert data.num_frames == 9 and data.frame(5)[1] == "turn on the led"
    assert np.array_equal(data.episode_actions(1)[:, 6], -eps[1][1][:, 6])
    CALVIN.build_data(calvin_entry(data_path=str(src), gripper="canonical"), tmp_path / "inplace")
    assert TrainingSet(tmp_path / "inplace").root == src.resolve()
