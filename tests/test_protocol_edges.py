"""The protocols' edges: what each episode generator yields and returns, the metrics at their limits
(no records, no episodes, a full or empty task), and the gripper rule at its threshold. Each test
pins a behaviour that a one-line change in the protocol code would alter (docs/mutation.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import Benchmark, Episode, zero_infer
from vlm4vla_core.benchmarks.libero10 import libero_image
from vlm4vla_core.benchmarks.simpler_bridge import summary, wilson
from vlm4vla_core.benchmarks.simpler_bridge.convert import GripperRule
from vlm4vla_core.config import ConfigError

CALVIN, SIMPLER, LIBERO = benchmarks.get("calvin"), benchmarks.get("simpler_bridge"), benchmarks.get("libero10")
Z95 = sps.norm.ppf(0.975)


# -- the episode generators, driven by hand --------------------------------------------------------
class _Libero:
    def __init__(self, done_at=None):
        self.t, self.done_at = 0, done_at

    def reset(self, task_id, init_index):
        return {"agentview": np.zeros((4, 4, 3), np.uint8)}

    def step(self, action):
        self.t += 1
        return {"agentview": np.zeros((4, 4, 3), np.uint8)}, self.t == self.done_at


def _drive(gen, action, limit=1000):
    """Send ``action`` until the generator returns; (yielded Obs list, returned record)."""
    seen = [next(gen)]
    try:
        for _ in range(limit):
            seen.append(gen.send(action))
    except StopIteration as stop:
        return seen, stop.value
    raise AssertionError("the episode did not end")


def test_libero_episode_asks_for_a_fresh_chunk_only_at_its_start():
    entry = LIBERO.settings(dict(kind="libero10", chunk=4, data_path="x", tasks=[3], episodes_per_task=1,
                                 max_steps=3, wait_steps=2))
    [ep] = LIBERO.episodes(entry, 0)
    assert ep.task == "task3" and ep.params == {"task_id": 3, "init_state": 0}
    seen, rec = _drive(LIBERO.run_episode(_Libero(), ep, entry), np.zeros(7))
    assert [o.reset for o in seen] == [True, False, False] and all(o.instruction == ep.instruction for o in seen)
    assert rec == {"success": False, "steps": 3, "wait_steps": 2} and rec["success"] is False
    # success at the second policy step (env step 2 + 2 wait steps): stops there
    _, rec = _drive(LIBERO.run_episode(_Libero(done_at=4), ep, entry), np.zeros(7))
    assert rec == {"success": True, "steps": 2, "wait_steps": 2}


def test_libero_crop_settings():
    for ok in (0.9, 1.0, 1, False):
        LIBERO.check("libero10", dict(kind="libero10", chunk=4, data_path="x", center_crop=ok))
    for bad in (0, 0.0, -0.5, 1.5, True):
        with pytest.raises(ConfigError, match="center_crop"):
            LIBERO.check("libero10", dict(kind="libero10", chunk=4, data_path="x", center_crop=bad))
    frame = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    crop = LIBERO.image_transform({"center_crop": 0.25})({"agentview": frame})
    assert np.array_equal(crop, frame[::-1, ::-1][2:6, 2:6])  # the entry's crop reaches the image
    assert np.array_equal(LIBERO.image_transform({"center_crop": False})({"agentview": frame}), frame[::-1, ::-1])
    assert np.array_equal(libero_image(frame), frame[::-1, ::-1])


class _Simpler:
    """Never truncates by itself (the protocol's own step limit must stop it); the instruction changes
    after step ``switch``; success holds at the steps in ``success``."""

    def __init__(self, switch=None, success=(), truncate_at=None):
        self.t, self.switch, self.success, self.truncate_at, self.sent = 0, switch, set(success), truncate_at, []

    def reset(self, env_id, episode_id, setup, max_steps):
        return np.zeros((4, 4, 3), np.uint8), "put carrot on plate"

    def step(self, action):
        self.t += 1
        self.sent.append(np.asarray(action).copy())
        text = "another instruction" if self.switch is not None and self.t > self.switch else "put carrot on plate"
        return np.zeros((4, 4, 3), np.uint8), dict(success=self.t in self.success, truncated=self.t == self.truncate_at,
                                                   instruction=text, episode_stats={"t": self.t})


def _bridge_episode(limit):
    return Episode(0, "put_carrot_on_plate", "put carrot on plate",
                   {"env_id": "PutCarrotOnPlateInScene-v0", "episode_id": 0, "max_steps": limit})


def test_bridge_episode_resets_the_policy_at_its_start_and_on_a_new_instruction():
    entry = SIMPLER.settings(dict(kind="simpler_bridge", chunk=4, data_path="x"))
    sim = _Simpler(switch=2, success={3})
    seen, rec = _drive(SIMPLER.run_episode(sim, _bridge_episode(5), entry), np.zeros(7))
    assert [o.reset for o in seen] == [True, False, False, True, False]  # the text changes at step 3
    assert [o.instruction for o in seen] == ["put carrot on plate"] * 3 + ["another instruction"] * 2
    # the env never truncated: the protocol's own limit ends the episode
    assert rec["steps"] == 5 and len(sim.sent) == 5 and rec["truncated"] is False
    assert rec["success"] is False and rec["success_any_step"] is True and rec["first_success_step"] == 3
    assert rec["episode_stats"] == {"t": 5} and rec["success_rule"] == "final_step"
    # an env that truncates ends the episode at once
    _, rec = _drive(SIMPLER.run_episode(_Simpler(truncate_at=2, success={2}), _bridge_episode(5), entry), np.zeros(7))
    assert rec["steps"] == 2 and rec["truncated"] is True and rec["success"] is True


def test_bridge_episode_without_steps_is_a_plain_failure():
    entry = SIMPLER.settings(dict(kind="simpler_bridge", chunk=4, data_path="x"))
    gen = SIMPLER.run_episode(_Simpler(), _bridge_episode(0), entry)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    rec = stop.value.value
    assert rec["steps"] == 0 and rec["success"] is False and rec["success_final_step"] is False
    assert rec["truncated"] is False and rec["episode_stats"] == {} and rec["first_success_step"] is None


# -- metrics at their limits -----------------------------------------------------------------------
def test_scores_of_each_metric_and_of_no_records():
    class AvgLen(Benchmark):
        metric = "avg_len"

    class Rate(Benchmark):
        metric = "success_rate"

    records = [dict(completed=3, success=False), dict(completed=5, success=True)]
    assert AvgLen().score(records) == 4.0 and Rate().score(records) == 0.5
    assert AvgLen().score([]) == 0.0 and Rate().score([]) == 0.0 and CALVIN.score([]) == 0.0


def _wilson(k, n):
    """Wilson's interval, written from its definition: the p where |k/n - p| = z sqrt(p (1 - p) / n)."""
    a = 1 + Z95**2 / n
    b = -(2 * k / n + Z95**2 / n)
    c = (k / n) ** 2
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k,n", [(1, 1), (0, 1), (1, 2), (7, 24), (23, 24), (24, 24), (0, 24)])
def test_wilson_interval_from_its_quadratic(k, n):
    lo, hi = wilson(k, n)
    want_lo, want_hi = _wilson(k, n)
    assert lo == pytest.approx(0.0 if k == 0 else want_lo, abs=1e-12)
    assert hi == pytest.approx(1.0 if k == n else want_hi, abs=1e-12)
    assert (k == 0) == (lo == 0.0) and (k == n) == (hi == 1.0)


def test_wilson_without_episodes_and_summary_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    empty = summary([])
    assert empty["key"] == "success" and empty["tasks"] == {}
    assert empty["mean"]["success_rate"] == 0.0 and empty["mean"]["episodes"] == 0
    records = [dict(task="a", success=i < 3) for i in range(4)] + [dict(task="b", success=True) for _ in range(2)]
    s = summary(records)
    assert s["key"] == "success" and s["tasks"]["a"]["wilson95"] == pytest.approx([100 * x for x in wilson(3, 4)])
    assert s["tasks"]["b"]["wilson95"] == [100 * wilson(2, 2)[0], 100.0]
    assert s["mean"]["pooled_equals_mean"] is False  # 4 and 2 episodes: the pooled rate is not the mean
    assert s["mean"]["success_rate"] == (75.0 + 100.0) / 2 and s["mean"]["successes"] == 5
    three = records + [dict(task="c", success=False)]
    assert summary(three)["mean"]["pooled_equals_mean"] is False
    assert summary(records, key="success")["key"] == "success"


def test_gripper_rule_threshold_and_errors():
    # the env's convention: +1 open; a 0 is not an open prediction
    assert GripperRule("none")(0.0) == -1.0 and GripperRule("none")(1e-6) == 1.0
    rule = GripperRule("consecutive_open_2")
    assert [rule(p) for p in (0.0, 0.0, 1.0, 1.0)] == [-1.0, -1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match=r"gripper rule 'sticky' is not one of \('consecutive_open_2', 'none'\)"):
        GripperRule("sticky")


def test_zero_action_baseline_returns_zero_chunks_of_the_benchmark_shape():
    infer = zero_infer(3, 5)
    chunks = infer([{"image": None}, {"image": None}])
    assert len(chunks) == 2 and all(c.shape == (3, 5) and c.dtype == np.float32 and not c.any() for c in chunks)
    assert infer([]) == []


# -- CALVIN: chain files, settings, metric edges --------------------------------------------------------
def _chain_file(tmp_path, chains, name="seq.json"):
    import json

    path = tmp_path / name
    path.write_text(json.dumps(chains))
    return path


def test_calvin_chain_files(tmp_path, monkeypatch):
    from vlm4vla_core.benchmarks.calvin import protocol

    official = protocol.chains()
    condition, subtasks = official[7]
    own = _chain_file(tmp_path, [[condition, subtasks], [official[3][0], official[3][1]]])
    assert protocol.chains(own) == [(condition, subtasks), official[3]]  # another file: no md5 check
    entry = CALVIN.settings(dict(kind="calvin", chunk=10, data_path="x", sequences=str(own), chains=2))
    eps = CALVIN.episodes(entry, 0)
    assert [e.params["subtasks"] for e in eps] == [subtasks, official[3][1]] and {e.task for e in eps} == {"chain"}
    with pytest.raises(ConfigError, match=r"benchmarks.calvin.chains: 3 asked, the chain file has 2"):
        CALVIN.episodes({**entry, "chains": 3}, 0)
    bad_keys = _chain_file(tmp_path, [[{**{k: condition[k] for k in reversed(list(condition))}}, subtasks]], "k.json")
    with pytest.raises(ValueError, match=r"k.json: chain 0 is not \(condition with keys"):
        protocol.chains(bad_keys)
    short = _chain_file(tmp_path, [[condition, subtasks[:4]]], "s.json")
    with pytest.raises(ValueError, match=r"s.json: chain 0 is not .* 5 subtasks\)"):
        protocol.chains(short)
    unknown = _chain_file(tmp_path, [[condition, [*subtasks[:4], "juggle_the_blocks"]]], "u.json")
    with pytest.raises(ValueError, match=r"chain 0: no validation instruction for \['juggle_the_blocks'\]"):
        CALVIN.episodes({**entry, "sequences": str(unknown), "chains": 1}, 0)
    # the default file must be the official one, byte for byte
    tampered = tmp_path / "eval_sequences.json"
    tampered.write_text("[]")
    monkeypatch.setattr(protocol, "SEQUENCES", tampered)
    with pytest.raises(ValueError, match=r"eval_sequences.json: md5 [0-9a-f]{32} is not that of the official"):
        protocol.chains()


def test_calvin_chain_count_setting():
    base = dict(kind="calvin", chunk=10, data_path="x")
    CALVIN.check("calvin", {**base, "chains": 1000})
    with pytest.raises(ConfigError, match=r"key 'benchmarks.calvin.chains': 1001 is greater than the maximum"):
        CALVIN.check("calvin", {**base, "chains": 1001})
    # the plug-in's own check behind the schema's: more than 1000 chains need a chain file of their own
    with pytest.raises(ConfigError, match=r"key 'benchmarks.calvin.chains': the official file has 1000 chains"):
        CALVIN.check_values("calvin", CALVIN.settings({**base, "chains": 1001}))
    CALVIN.check_values("calvin", CALVIN.settings({**base, "chains": 1000}))
    CALVIN.check_values("calvin", CALVIN.settings({**base, "chains": 1001, "sequences": "more.json"}))


def test_calvin_record_names_the_scene_and_the_initial_state_shape():
    from vlm4vla_core.benchmarks.calvin import protocol

    class Env:
        scene_source = "validation/.hydra/merged_config.yaml"

        def reset(self, robot_obs, scene_obs):
            assert robot_obs.shape == (15,) and scene_obs.shape == (24,)
            return {}

        def info(self):
            return {}

        def step(self, action):
            return {}, {}

        def success(self, start, info, subtask):
            return True

    entry = CALVIN.settings(dict(kind="calvin", chunk=10, data_path="x", chains=1))
    [ep] = CALVIN.episodes(entry, 0)
    _, rec = _drive(CALVIN.run_episode(Env(), ep, entry), np.zeros(7))
    assert rec["scene"] == "validation/.hydra/merged_config.yaml" and rec["completed"] == 5 and rec["success"] is True
    assert protocol.initial_state(ep.params["initial_condition"])[1].shape == (24,)


def test_calvin_metric_edges():
    from vlm4vla_core.benchmarks.calvin import protocol

    one = protocol.chain_metrics([{"completed": 2, "subtasks": list("abcde")}])
    assert one["chains"] == 1 and one["avg_len"] == 2.0 and one["ci"]["avg_len"] == [2.0, 2.0]
    assert one["ci"]["n_boot"] == 2000 and one["ci"]["seed"] == 0 and one["ci"]["level"] == 0.95
    assert one["ci"]["method"] == "percentile bootstrap over chains"
    assert list(one["success_at"]) == list(one["ci"]["success_at"]) == ["1", "2", "3", "4", "5"]
    with pytest.raises(ValueError, match="no chain records"):
        protocol.chain_metrics([])
    with pytest.raises(ValueError, match=r"completed must be in 0..5"):
        protocol.chain_metrics([{"completed": -1, "subtasks": list("abcde")}])
    assert protocol.count_success([]) == [0.0] * 5 and protocol.count_success([5, 0]) == [0.5] * 5
    with pytest.raises(ValueError, match=r"the order is part of the hashed string"):
        protocol.condition_seed(dict(reversed(list(protocol.chains()[0][0].items()))))
    # FNV-1 from hval 0 (pyhash's default seed): pyhash's own test value for b"test"
    assert protocol.fnv1_32(b"test") == 3698262380


# -- Bridge training labels: the thresholds and the input checks --------------------------------------
def test_bridge_gripper_binarisation_edges():
    from vlm4vla_core.benchmarks.simpler_bridge.convert import binarize_gripper

    assert binarize_gripper(np.array([])).tolist() == []
    # exactly 0.95 and exactly 0.05 are in between: they take the next settled value
    assert binarize_gripper([0.95, 0.0]).tolist() == [0.0, 0.0]
    assert binarize_gripper([0.05, 1.0]).tolist() == [1.0, 1.0]
    # a trailing in-between run keeps the last raw value, not any earlier one
    assert binarize_gripper([1.0, 0.0, 0.5]).tolist() == [1.0, 0.0, 0.5]
    out = binarize_gripper(np.array([1, 0, 1]))
    assert out.dtype == np.float64 and out.tolist() == [1.0, 0.0, 1.0]


def test_bridge_standardisation_checks_its_input():
    from vlm4vla_core.benchmarks.simpler_bridge.convert import standardize_trajectory

    state, action = np.zeros((4, 6)), np.zeros((4, 7))
    assert standardize_trajectory(state, action).dtype == np.float32  # exactly 6 state columns suffice
    bad = [(np.zeros((3, 6)), action), (np.zeros(4), action), (np.zeros((4, 5)), action), (state, np.zeros(4)),
           (state, np.zeros((4, 6)))]
    for s, a in bad:
        with pytest.raises(ValueError, match=r"expected \[T, >=6\] and \[T, 7\]"):
            standardize_trajectory(s, a)
    with pytest.raises(ValueError, match="a trajectory of 2 steps has no frame left"):
        standardize_trajectory(np.zeros((2, 6)), np.zeros((2, 7)))
    # half-precision states are differenced in float64: 1000 - 0.1 is not rounded to float16's 1000
    half = np.zeros((4, 6), np.float16)
    half[2, 0], half[3, 0] = 0.1, 1000.0
    arm = standardize_trajectory(half, np.zeros((4, 7)))[:, 0]
    assert arm[1] == np.float32(1000.0 - float(np.float16(0.1)))


def test_shards_and_agent_reset():
    from vlm4vla_core.benchmarks.base import Agent, shard

    eps = list(range(7))
    assert shard(eps, 2, 3) == [2, 5]
    with pytest.raises(ValueError, match=r"shard 3 is not in \[0, 3\)"):
        shard(eps, 3, 3)
    agent = Agent(2, image_fn=lambda x: x, action_fn=lambda a: a)
    agent.set_chunk(np.zeros((4, 2), np.float32))
    agent.reset()
    assert agent.queue == []
