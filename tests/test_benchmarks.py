"""The benchmark layer: LIBERO-10's protocol against a fake simulator that records every call, the
image and action transforms on hand-made inputs, evaluation shards and their merge, episode-level
resume, the policy server against in-process evaluation, and the LIBERO-10 importers on fixtures
written in the native layouts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.benchmarks.base import Agent, Benchmark, Episode, Obs, run_episodes, shard, zero_infer
from vlm4vla_core.benchmarks.libero10 import INSTRUCTIONS, NOOP, libero_image
from vlm4vla_core.config import ConfigError, Study
from vlm4vla_core.episodes.source import TrainingSet

from vlm4vla_core.testing.libero import write_libero_hdf5

ROOT = Path(__file__).resolve().parents[1]
LIBERO = benchmarks.get("libero10")


class FakeLibero:
    """Records resets and actions; agentview frames encode (task, init state, step); ``done`` comes at the
    policy step that ``success_at`` names for an episode."""

    def __init__(self, log: list, success_at: dict | None = None, size: int = 8):
        self.log, self.success_at, self.size = log, success_at or {}, size

    def _obs(self):
        frame = np.zeros((self.size, self.size, 3), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = self.key[0], self.key[1], min(self.t, 255)
        frame[0, 0] = 255  # the top-left pixel marks the raw orientation
        return {"agentview": frame, "wrist": frame * 0}

    def reset(self, task_id, init_index):
        self.key, self.t = (task_id, init_index), 0
        self.log.append(("reset", task_id, init_index))
        return self._obs()

    def step(self, action):
        self.t += 1
        self.log.append(("step", self.key, np.asarray(action, float).tolist()))
        done = self.success_at.get(self.key) == self.t
        return self._obs(), done


def libero_entry(**kw) -> dict:
    return LIBERO.settings({**dict(kind="libero10", chunk=4, data_path="unused", episodes_per_task=2, max_steps=12), **kw})


def scripted_infer(requests_log: list):
    """A policy whose chunk k of a request holds the request's count and k in its first two dimensions."""

    def infer(requests):
        out = []
        for r in requests:
            requests_log.append(r)
            n = len(requests_log)
            chunk = np.zeros((4, 7), np.float32)
            chunk[:, 0], chunk[:, 1], chunk[:, 6] = n, np.arange(4), 1.0
            out.append(chunk)
        return out

    return infer


def test_libero_protocol_on_a_fake_simulator(monkeypatch):
    log, requests = [], []
    success_at = {(3, 1): 10 + 5}  # task 3, init state 1 succeeds at its 5th policy step (after 10 no-ops)
    monkeypatch.setattr(type(LIBERO), "simulator", lambda self, entry: FakeLibero(log, success_at))
    entry = libero_entry()
    eps = LIBERO.episodes(entry, seed=7)
    assert LIBERO.episodes(entry, seed=0) == eps  # fixed init states: the training seed changes nothing
    assert [(e.params["task_id"], e.params["init_state"]) for e in eps] == [(t, i) for t in range(10) for i in range(2)]
    assert [e.instruction for e in eps[::2]] == list(INSTRUCTIONS)
    records = run_episodes(LIBERO, entry, eps, scripted_infer(requests), execute=2, progress=False)

    resets = [x[1:] for x in log if x[0] == "reset"]
    assert resets == [(t, i) for t in range(10) for i in range(2)]  # init-state order, one reset per episode
    per_episode = {}
    for x in log:
        if x[0] == "step":
            per_episode.setdefault(x[1], []).append(x[2])
    for key, actions in per_episode.items():
        assert actions[:10] == [NOOP.tolist()] * 10  # 10 wait steps, gripper open, before any policy action
        policy_steps = actions[10:]
        assert len(policy_steps) == (5 if key == (3, 1) else 12)  # success stops it; else the step limit
        assert [a[1] for a in policy_steps] == [0, 1] * (len(policy_steps) // 2) + [0] * (len(policy_steps) % 2)
        assert all(a[6] == 1.0 for a in policy_steps)  # canonical gripper goes to LIBERO unchanged (+1 close)
    by_key = {(r["task_id"], r["init_state"]): r for r in records}
    assert by_key[(3, 1)]["success"] and by_key[(3, 1)]["steps"] == 5 and by_key[(3, 1)]["plans"] == 3
    assert not by_key[(0, 0)]["success"] and by_key[(0, 0)]["steps"] == 12 and by_key[(0, 0)]["plans"] == 6
    assert [r["index"] for r in records] == list(range(20)) and all(r["wait_steps"] == 10 for r in records)
    first = requests[0]["image"]
    assert first[-1, -1].tolist() == [255, 255, 255] and first[0, 0, 2] == 10  # rotated 180 degrees
    assert requests[0]["instruction"] == INSTRUCTIONS[0]


def test_libero_step_limit_counts_policy_steps_with_chunks(monkeypatch):
    log = []
    monkeypatch.setattr(type(LIBERO), "simulator", lambda self, entry: FakeLibero(log))
    entry = libero_entry(tasks=[5], episodes_per_task=1, max_steps=7, wait_steps=0)
    [rec] = run_episodes(LIBERO, entry, LIBERO.episodes(entry, 0), scripted_infer([]), execute=4, progress=False)
    assert rec["steps"] == 7 and rec["plans"] == 2 and sum(x[0] == "step" for x in log) == 7
    assert log[0] == ("reset", 5, 0)


def test_image_transform_on_hand_made_frames():
    frame = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    assert np.array_equal(libero_image(frame), frame[::-1, ::-1])
    crop = libero_image(frame, 0.25)  # a quarter of the area: the central 4x4 of the rotated frame
    assert np.array_equal(crop, frame[::-1, ::-1][2:6, 2:6])
    assert libero_image(frame, 0.9).shape == (8, 8, 3)  # sqrt(0.9) * 8 = 7.6 rounds to 8
    assert libero_image(np.zeros((256, 256, 3), np.uint8), 0.9).shape == (243, 243, 3)
    with pytest.raises(ConfigError, match="center_crop"):
        LIBERO.check("libero10", dict(kind="libero10", chunk=4, data_path="x", center_crop=1.5))


def test_agent_applies_the_execution_mode_and_resets():
    agent = Agent(2, image_fn=lambda raw: raw["rgb"], action_fn=lambda a: a * 10)
    obs = Obs("go", lambda: {"rgb": np.ones((2, 2, 3), np.uint8)})
    assert agent.needs_plan(obs) and agent.request(obs)["image"].shape == (2, 2, 3)
    agent.set_chunk(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert agent.next_action().tolist() == [0, 10] and not agent.needs_plan(obs)
    assert agent.next_action().tolist() == [20, 30] and agent.needs_plan(obs)  # 2 of the 4 steps, then re-plan
    agent.set_chunk(np.zeros((4, 2), np.float32))
    assert agent.needs_plan(Obs("next subtask", obs.render, reset=True))  # a reset drops the queue
    with pytest.raises(ValueError, match="chunk"):
        agent.set_chunk(np.full((4, 2), np.nan, np.float32))


class CountingBench(Benchmark):
    """An in-process benchmark with no simulator behind it: an episode succeeds when the first arm value
    of its first action is positive, and runs ``index % 5 + 1`` steps."""

    kind, action_dim, in_process = "counting", 2, True

    def episodes(self, entry, seed):
        return [Episode(i, f"t{i % 3}", f"do {i % 3}", {"seed": seed}) for i in range(entry["n"])]

    def simulator(self, entry):
        return None

    def run_episode(self, sim, episode, entry):
        first = None
        for step in range(episode.index % 5 + 1):
            action = yield Obs(episode.instruction, lambda: np.full((4, 4, 3), episode.index, np.uint8))
            first = action if first is None else first
        return dict(success=bool(first[0] > 0), steps=episode.index % 5 + 1)


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(benchmarks.registry(), "counting", CountingBench())
    return dict(study="t", benchmarks={"c": dict(kind="counting", chunk=2, n=11)})


def sign_infer(calls: list):
    """Succeeds on odd episode indices (read back from the image)."""

    def infer(requests):
        calls.extend(int(r["image"][0, 0, 0]) for r in requests)
        return [np.full((2, 2), 1.0 if r["image"][0, 0, 0] % 2 else -1.0, np.float32) for r in requests]

    return infer


def test_shards_merge_into_the_single_job_result(counting, tmp_path):
    study = Study.from_dict(counting)
    whole, _ = evaluate.evaluate(study, "c", 0, sign_infer([]), 2, ["whole_chunk", "single_step"], tmp_path / "one.json")
    assert [e["success"] for e in whole["whole_chunk"]["episodes"]] == [i % 2 == 1 for i in range(11)]
    shards = []
    for i in range(3):
        res, parts = evaluate.evaluate(study, "c", 0, sign_infer([]), 2, ["whole_chunk", "single_step"],
                                       tmp_path / f"s{i}.json", i, 3)
        parts.remove()
        assert [e["index"] for e in res["whole_chunk"]["episodes"]] == list(range(11))[i::3]
        shards.append(dict(backbone="b", benchmark="c", kind="counting", ablation="full", seed=0, checkpoint="p", episodes_total=11,
                           mode_selection="best", shard=[i, 3], modes=res))
    merged = evaluate.merge(shards[::-1], ["s2", "s1", "s0"])
    assert merged["modes"] == whole and merged["shards"] == 3 and merged["reported_mode"] == "whole_chunk"
    with pytest.raises(ValueError, match="shards"):
        evaluate.merge(shards[:2], ["s0", "s1"])
    with pytest.raises(ValueError, match="0..10"):
        bad = json.loads(json.dumps(shards))
        bad[1]["modes"]["whole_chunk"]["episodes"] = bad[1]["modes"]["whole_chunk"]["episodes"][:-1]
        evaluate.merge(bad, ["s0", "s1", "s2"])
    assert "serving" not in merged
    for i in (0, 2):  # the jobs that ran simulator workers keep their worker choice and batching, by shard
        shards[i]["serving"] = {"whole_chunk": dict(workers=i + 1, rule="config eval_workers")}
    assert evaluate.merge(shards, ["s0", "s1", "s2"])["serving"] == {
        "shard0": {"whole_chunk": dict(workers=1, rule="config eval_workers")},
        "shard2": {"whole_chunk": dict(workers=3, rule="config eval_workers")}}
    assert shard(list(range(5)), 1, 2) == [1, 3]


def test_a_stopped_evaluation_runs_only_its_unfinished_episodes(counting, tmp_path):
    out = tmp_path / "eval.json"
    calls = []
    base = sign_infer(calls)

    def dies_after_six(requests):
        if len(calls) >= 6:
            raise RuntimeError("killed")
        return base(requests)

    counting["benchmarks"]["c"]["eval_batch"] = 1
    with pytest.raises(RuntimeError, match="killed"):
        evaluate.evaluate(Study.from_dict(counting), "c", 0, dies_after_six, 2, ["whole_chunk"], out)
    finished = sorted({c for c in calls})
    again = []
    res, parts = evaluate.evaluate(Study.from_dict(counting), "c", 0, sign_infer(again), 2, ["whole_chunk"], out)
    assert finished and set(again).isdisjoint(finished[:-1])  # finished episodes are not run again
    whole, _ = evaluate.evaluate(Study.from_dict(counting), "c", 0, sign_infer([]), 2, ["whole_chunk"], tmp_path / "fresh.json")
    assert res == whole
    parts.remove()
    assert not parts.dir.exists()


def _tiny_policy(tmp_path, size=56):
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy

    get_adapter("qwen2_5_vl").make_tiny(tmp_path / "bb", image_size=size, seed=0)
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(tmp_path / "bb"), chunk=4, action_dim=4, image_size=size,
                       head_hidden=16, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
    return VLAPolicy(cfg).eval()


@pytest.mark.slow
def test_policy_server_gives_the_in_process_results(tmp_path):
    pytest.importorskip("metaworld")
    policy = _tiny_policy(tmp_path)
    entry = dict(kind="metaworld", chunk=4, tasks=["button-press-topdown-v3", "drawer-open-v3"], image_size=56,
                 camera="corner4", demos_per_task=1, episodes_per_task=2, max_steps=12)
    infer = evaluate.policy_infer(policy)
    local, _ = evaluate.evaluate(Study.from_dict(dict(study="t", benchmarks={"mw": entry})), "mw", 0, infer, 4,
                                 ["whole_chunk", "single_step"], tmp_path / "local.json")
    served_entry = dict(entry, simulator_python=sys.executable, eval_workers=2)
    served, parts = evaluate.evaluate(Study.from_dict(dict(study="t", benchmarks={"mw": served_entry})), "mw", 0, infer, 4,
                                      ["whole_chunk", "single_step"], tmp_path / "served.json")
    assert served == local
    assert any(p.name.startswith("whole_chunk.w1") for p in parts.dir.iterdir())  # the second worker ran episodes


# -- LIBERO-10 data ------------------------------------------------------------------------------
def test_libero_importer_reads_the_official_hdf5_demos(tmp_path):
    src = write_libero_hdf5(tmp_path / "libero_10")
    entry = libero_entry(data_path=str(src))
    LIBERO.build_data(entry, tmp_path / "data")
    data = TrainingSet(tmp_path / "data")
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    # both leading no-ops go: before any action is kept, a still arm alone makes a no-op (OpenVLA's rule)
    assert data.num_frames == 10 * 2 * 4 and stats["noops_dropped"] == 10 * 2 * 2
    assert len(stats["skipped_files"]) == 1 and stats["source_format"] == "libero_hdf5"
    image, text = data.frame(0)
    # rotated 180 degrees: the marked corner is now the bottom-right pixel (a flip would move it elsewhere)
    assert text == INSTRUCTIONS[0] and image[-1, -1, 0] == 200 and int(image[..., 0].sum()) == 200
    assert image[0, 0, 1] == 20 and data.frame(1)[0][0, 0, 1] == 30  # the first frame kept is step 2's
    assert data.action_chunk(0, 7).shape == (7, 7)
    entry_missing = libero_entry(data_path=str(write_libero_hdf5(tmp_path / "nine", tasks=range(9))))
    with pytest.raises(ValueError, match=r"task\(s\) \[9\]"):
        LIBERO.build_data(entry_missing, tmp_path / "data9")
    assert not (tmp_path / "data9").exists()
    with pytest.raises(ConfigError, match="data_path"):
        LIBERO.build_data(libero_entry(data_path=str(tmp_path / "nowhere")), tmp_path / "x")


def test_libero_importer_reads_a_lerobot_copy_in_place(tmp_path):
    from lerobot_fixtures import synthetic_episodes, write_v30

    eps = synthetic_episodes([5, 4, 6, 3], size=16, action_dim=7,
                             tasks=(INSTRUCTIONS[2], "open the top drawer and put the bowl inside", INSTRUCTIONS[9]))
    src = write_v30(tmp_path / "libero_lerobot", eps, image_key="image")
    entry = libero_entry(data_path=str(src))
    LIBERO.build_data(entry, tmp_path / "data")
    data = TrainingSet(tmp_path / "data")
    kept = [e for e, (_, _, task) in enumerate(eps) if task in INSTRUCTIONS]
    assert data.episodes.tolist() == kept and data.num_frames == sum(len(eps[e][1]) for e in kept)
    assert np.array_equal(data.episode_actions(1), eps[kept[1]][1])
    assert data.frame(5)[1] == eps[kept[1]][2] and data.root == src.resolve()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dataset.json", "stats.json"]  # read in place


@pytest.mark.slow
def test_libero_study_trains_on_a_lerobot_fixture_and_evaluates(tmp_path, monkeypatch):
    """A small LIBERO-10 study: the data stage on a LeRobot copy, DeepSpeed training, then evaluation of the
    exported policy through the benchmark's protocol on the fake simulator."""
    import subprocess

    import yaml
    from lerobot_fixtures import synthetic_episodes, write_v30

    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import load_policy

    eps = synthetic_episodes([6, 5, 7], size=32, action_dim=7, tasks=(INSTRUCTIONS[0], INSTRUCTIONS[4]))
    src = write_v30(tmp_path / "copy", eps, image_key="image")
    get_adapter("qwen2_5_vl").make_tiny(tmp_path / "bb", image_size=56, seed=0)
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    for key in ("pretraining", "embodied_sft", "vqa_sets"):  # the demo's variants name its backbones and benchmark
        raw.pop(key, None)
    raw["backbones"] = {"tiny": {"family": "qwen2_5_vl", "source": str(tmp_path / "bb")}}
    raw["benchmarks"] = {"libero10": dict(kind="libero10", chunk=4, image_size=56, data_path=str(src),
                                          episodes_per_task=1, max_steps=8, wait_steps=2, tasks=[0, 4])}
    raw["training"].update(max_steps=4, checkpoint_every=2, log_every=2, micro_batch=2, warmup_steps=1)
    raw["policy"]["head_hidden"] = 16
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    run = lambda *a: subprocess.run([sys.executable, "-m", "vlm4vla_core", *a], capture_output=True, text=True,
                                    cwd=ROOT, timeout=600)
    res = run("data", "--config", str(tmp_path / "study.yaml"), "--benchmark", "libero10", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr[-2000:]
    res = run("train", "--config", str(tmp_path / "study.yaml"), "--backbone", "tiny", "--benchmark", "libero10",
              "--ablation", "full", "--seed", "0", "--data", str(tmp_path / "d"), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-2000:]
    policy = load_policy(tmp_path / "run" / "policy")
    assert policy.cfg.action_dim == 7 and policy.cfg.chunk == 4
    log = []
    monkeypatch.setattr(type(LIBERO), "simulator", lambda self, entry: FakeLibero(log, size=32))
    entry = LIBERO.settings(raw["benchmarks"]["libero10"])
    records = run_episodes(LIBERO, entry, LIBERO.episodes(entry, 0), evaluate.policy_infer(policy), 2, progress=False)
    assert [(r["task_id"], r["steps"], r["plans"]) for r in records] == [(0, 8, 4), (4, 8, 4)]
    assert sum(x[0] == "step" for x in log) == 2 * (2 + 8)
    zero = run_episodes(LIBERO, entry, LIBERO.episodes(entry, 0), zero_infer(4, 7), 4, progress=False)
    assert [r["plans"] for r in zero] == [2, 2]


@pytest.mark.parametrize("bench", ["libero10", "calvin"])
def test_the_simulator_checks_are_small_studies_of_the_same_rules(tmp_path, bench):
    """config/checks/<bench>.yaml: a valid study of one run whose DAG chains fixture -> data -> train ->
    evaluate -> merge_eval -> aggregate, and the fixture rule's command writes a folder the data stage imports."""
    import re

    import yaml
    from test_config import _clone, _snakemake

    from vlm4vla_core import study
    from vlm4vla_core.__main__ import run

    path = ROOT / "config" / "checks" / f"{bench}.yaml"
    checked = study.load(path, benchmark=bench)
    assert list(checked.backbones) == ["tiny-qwen2.5-vl"] and list(checked.benchmarks) == [bench]
    assert not checked.pretraining and not checked.embodied_sft and not checked.vqa_sets
    assert (checked.seeds, checked.ablations, checked.evaluation.modes) == ((0,), ("full",), ("whole_chunk",))
    assert checked.benchmarks[bench].entry["fixture"] == "synthetic" and not checked.evaluation.baseline

    wf = _clone(tmp_path)
    res = _snakemake("--dag", "--configfile", f"config/checks/{bench}.yaml", cwd=wf)
    assert res.returncode == 0, res.stderr[-2000:]
    label = dict(re.findall(r'(\d+)\[label = "(\w+)', res.stdout))
    edges = {(label[a], label[b]) for a, b in re.findall(r"(\d+) -> (\d+)", res.stdout)}
    chain = ["fixture", "data", "train", "evaluate", "merge_eval", "aggregate", "all"]
    assert set(zip(chain, chain[1:])) <= edges, edges
    assert sorted(label.values()) == sorted(chain + ["make_tiny_backbone", "backbone_report"])

    # every job records its wall time under results/<study>/benchmarks/, at its log's path
    res = _snakemake("-n", "--configfile", f"config/checks/{bench}.yaml", cwd=wf)
    assert res.returncode == 0, res.stderr[-2000:]
    times = re.findall(r"^    benchmark: (\S+)$", res.stdout, re.M)
    assert len(times) == len(label) - 1  # all of them but the target rule all
    out, run_dir = f"results/{checked.name}/benchmarks", f"runs/tiny-qwen2.5-vl/{bench}/full/seed0"
    assert {f"{out}/fixture/{bench}.tsv", f"{out}/{run_dir}/train.tsv", f"{out}/{run_dir}/eval/shard0.tsv"} <= set(times)

    # a data_path other than the fixture rule's output stops the plan, naming the key
    res = _snakemake("-n", "--configfile", f"config/checks/{bench}.yaml", "--config",
                     f'benchmarks={{"{bench}": {{"data_path": "elsewhere"}}}}', cwd=wf)
    assert res.returncode != 0 and f"key 'benchmarks.{bench}.data_path' is 'elsewhere'" in res.stdout + res.stderr

    # the fixture rule's command, with small frames, then the data stage on its folder
    raw = yaml.safe_load(path.read_text())
    raw["benchmarks"][bench]["data_path"] = str(tmp_path / "fixture")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    args = ["--config", str(tmp_path / "study.yaml"), "--benchmark", bench]
    assert run("fixture", [*args, "--frame-size", "16", "--out", str(tmp_path / "fixture")]) == 0
    assert run("data", [*args, "--out", str(tmp_path / "data")]) == 0
    data = TrainingSet(tmp_path / "data")
    # LIBERO: 10 tasks x 2 demos of 20 steps, the two no-ops of each dropped (the other suite's file is not
    # imported); CALVIN: the four language windows, of 10, 10, 12 and 20 frames
    assert (len(data.episodes), data.num_frames) == {"libero10": (20, 360), "calvin": (4, 52)}[bench]


def test_a_benchmark_without_a_fixture_says_so(tmp_path):
    with pytest.raises(ConfigError, match="kind 'metaworld' has no synthetic fixture"):
        benchmarks.get("metaworld").write_fixture({}, tmp_path)
