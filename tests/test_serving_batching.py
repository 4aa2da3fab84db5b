"""The policy server's batching rule and the worker count of ``eval_workers: auto``, on fakes.

Batches must fill with every worker's request when the policy is the slower side (workers that step their
simulator between answers, started out of phase), a fast policy must not hold requests back for long, and a
closed connection must not be waited for. The sizing rule is checked against hand-computed cases."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from test_episode_failures import FlakyBench, flaky, ones  # noqa: F401 - flaky: the fixture
from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.benchmarks import worker
from vlm4vla_core.config import Study
from vlm4vla_core.serving import PolicyClient, PolicyServer
from vlm4vla_core.serving import sizing


def echo_after(seconds):
    """A policy that takes ``seconds`` per batch whatever its size and answers each request with its own id."""

    def infer_batch(requests):
        time.sleep(seconds)
        return [np.full((2, 2), r["id"], np.float32) for r in requests]

    return infer_batch


def run_workers(server, n, requests, cycle_s, stagger_s):
    """``n`` client threads, all connected first; worker i starts ``i * stagger_s`` late, then sends ``requests``
    requests, sleeping ``cycle_s`` (its simulator's steps) after each answer. Returns the answers' mismatches."""
    clients = [PolicyClient(server.url, connect_timeout_s=5) for _ in range(n)]

    def work(i):
        time.sleep(i * stagger_s)
        wrong = []
        for k in range(requests):
            rid = 1000 * i + k
            if not np.all(clients[i].infer({"id": rid}) == rid):
                wrong.append(rid)
            time.sleep(cycle_s)
        return wrong

    try:
        with ThreadPoolExecutor(n) as pool:  # a worker's exception is raised here
            return [rid for wrong in pool.map(work, range(n)) for rid in wrong]
    finally:
        for c in clients:
            c.close()


def test_batches_fill_when_the_policy_is_the_slower_side():
    # policy 60 ms per batch, simulator 15 ms per cycle, 3 workers started 25 ms apart: a fixed short window
    # alternates a batch of one with a batch of two (mean 1.5); waiting up to one inference for the connected
    # workers lines them up after the first round
    with PolicyServer(echo_after(0.06), {}) as server:
        assert run_workers(server, 3, 12, cycle_s=0.015, stagger_s=0.025) == []
    stats = server.stats
    assert stats.requests == 36 and stats.clients == 3 and stats.errors == 0
    assert sorted(n for n, _ in stats.per_client) == [12, 12, 12] and all(span > 0.5 for _, span in stats.per_client)
    assert stats.mean_batch_size >= 2.5 and stats.fill >= 0.83, stats
    assert sum(n * count for n, count in stats.sizes.items()) == 36 and stats.sizes[3] >= 10
    assert stats.as_dict()["fill"] == round(stats.fill, 3)


def test_the_former_fixed_window_does_not_fill_them():
    """The same workers under a fixed 5 ms window: the measure the rule above is judged against."""
    with PolicyServer(echo_after(0.06), {}, max_wait_ms=5) as server:
        assert run_workers(server, 3, 12, cycle_s=0.015, stagger_s=0.025) == []
    assert server.stats.mean_batch_size < 2.2, server.stats


def test_a_fast_policy_holds_requests_back_only_about_its_latency():
    # policy 2 ms, simulator 40 ms: the workers rarely coincide and the window (the policy's latency) stays short
    with PolicyServer(echo_after(0.002), {}) as server:
        assert run_workers(server, 2, 8, cycle_s=0.04, stagger_s=0.02) == []
        assert 0.001 < server.window_s() < 0.02
    stats = server.stats
    assert stats.wait_s / stats.batches < 0.015, stats  # waiting for the peer's whole cycle would be ~20 ms


def test_the_batch_waits_for_clients_that_ask_and_at_most_the_window():
    with PolicyServer(echo_after(0.0), {}, max_wait_ms=300) as server:
        with PolicyClient(server.url) as alone, PolicyClient(server.url) as peer:
            start = time.monotonic()
            alone.infer({"id": 0})  # the peer has not asked yet (still starting up): not waited for
            assert time.monotonic() - start < 0.2
            peer.infer({"id": 1})  # now it has, and goes quiet: the next request waits out the window for it
            start = time.monotonic()
            alone.infer({"id": 1})
            assert 0.25 < time.monotonic() - start < 2
        with PolicyClient(server.url) as alone:
            start = time.monotonic()
            alone.infer({"id": 2})  # the peer is gone: nothing to wait for
            assert time.monotonic() - start < 0.2
    with pytest.raises(ValueError, match="max_batch"):
        PolicyServer(echo_after(0.0), {}, max_batch=0)


# -- the worker count --------------------------------------------------------------------------------
def test_latency_between_and_beyond_the_measured_batch_sizes():
    latency = {1: 0.10, 2: 0.12, 4: 0.16}
    assert sizing.latency_at(latency, 3) == pytest.approx(0.14)
    assert sizing.latency_at(latency, 8) == pytest.approx(0.16 + 0.02 * 4)  # the last two sizes' line
    assert sizing.latency_at({1: 0.05}, 16) == pytest.approx(0.05)
    assert sizing.batch_sizes(6) == [1, 2, 4, 6] and sizing.batch_sizes(8) == [1, 2, 4, 8]
    assert sizing.batch_sizes(1) == [1]
    with pytest.raises(ValueError, match="no batch size"):
        sizing.latency_at({}, 1)


def test_a_policy_that_batches_for_free_gets_every_core():
    # 200 ms per batch at any size, 80 ms cycle: N / 0.28 s grows with N, so the cap (8) is the choice
    choice = sizing.choose_workers({1: 0.2, 8: 0.2}, 0.08, cap=8)
    assert choice["workers"] == 8 and choice["rates"][8] == pytest.approx(8 / 0.28, abs=1e-3)
    assert choice["sim_busy"] == pytest.approx(0.08 / 0.28, abs=1e-3)


def test_a_policy_whose_time_grows_with_the_batch_gets_fewer():
    # 10 ms per request, 80 ms cycle, cap 15: rate N / (0.08 + 0.01 N), best 15 / 0.23 = 65.2 calls/s;
    # 90% of it (58.7) is first reached at N = 12 (11 / 0.19 = 57.9, 12 / 0.2 = 60)
    choice = sizing.choose_workers({1: 0.01, 2: 0.02, 4: 0.04}, 0.08, cap=15)
    assert choice["workers"] == 12 and choice["latency_ms"] == {1: 10.0, 2: 20.0, 4: 40.0}
    assert sizing.choose_workers({1: 0.01, 2: 0.02}, 0.08, cap=3)["workers"] == 3  # the cap bounds it
    with pytest.raises(ValueError, match="cap"):
        sizing.choose_workers({1: 0.01}, 0.08, cap=0)


def test_measure_latency_times_each_batch_size():
    calls = []

    def infer(requests):
        calls.append(len(requests))
        time.sleep(0.004 * len(requests))
        return requests

    got = sizing.measure_latency(infer, {"x": 1}, [1, 4], repeats=2)
    assert calls == [1, 1, 1, 4, 4] and got[4] > got[1] >= 0.004


# -- eval_workers: auto ------------------------------------------------------------------------------
def test_the_bare_worker_times_the_simulator(flaky, tmp_path):
    entry = flaky["benchmarks"]["f"]
    bench = benchmarks.get("flaky")
    (tmp_path / "entry.json").write_text(json.dumps(bench.settings(entry)))
    eps = [e.as_dict() for e in bench.episodes(entry, 0) if e.index != 3]
    (tmp_path / "eps.json").write_text(json.dumps(eps))
    rc = worker.main(["--kind", "flaky", "--entry", str(tmp_path / "entry.json"),
                      "--episodes", str(tmp_path / "eps.json"), "--execute", "1", "--out", str(tmp_path / "r.jsonl"), "--bare", str(tmp_path / "s.json"),
                      "--frame", str(tmp_path / "f.npy")])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert rc == 0 and summary["episodes"] == 7 and summary["env_steps"] == 7 * 3 and summary["plans"] == 7 * 3
    assert summary["cycle_s"] is not None and summary["cycle_s"] >= 0 and summary["instruction"] == "go"
    assert np.load(tmp_path / "f.npy").shape == (4, 4, 3)
    with pytest.raises(SystemExit):  # a server and the bare simulator at once
        worker.main(["--kind", "flaky", "--entry", "e", "--episodes", "e", "--execute", "1", "--out", "o",
                     "--url", "ws://x", "--bare", "s"])


def test_auto_sizes_the_pool_from_the_probe_and_the_policy(flaky, tmp_path, monkeypatch):
    entry = dict(flaky["benchmarks"]["f"], raise_at=[], eval_workers="auto")
    bench = benchmarks.get("flaky")
    episodes = bench.episodes(entry, 0)

    class Done:
        returncode = 0

    def probe(cmd):  # the bare-simulator probe, run here instead of in the simulator's environment
        assert "--bare" in cmd and cmd[cmd.index("--kind") + 1] == "flaky"
        worker.main(cmd[3:])
        return Done()

    monkeypatch.setattr(evaluate.subprocess, "run", probe)
    monkeypatch.setattr(evaluate.os, "sched_getaffinity", lambda pid: set(range(4)))
    slow = []

    def policy(requests):
        slow.append(len(requests))
        time.sleep(0.05)  # the same time at any batch size: batching is free, so the cap (4 cores)
        return ones(requests)

    choice = evaluate.choose_workers(bench, bench.settings(entry), episodes, policy, 2, tmp_path)
    assert choice["workers"] == 4 and choice["cap"] == 4 and choice["rule"].startswith("auto")
    assert sorted(choice["latency_ms"]) == [1, 2, 4] and choice["probe"]["episodes"] == 1
    assert set(slow) == {1, 2, 4}
    fixed = evaluate.choose_workers(bench, dict(bench.settings(entry), eval_workers=20), episodes, None, 2, tmp_path)
    assert fixed == dict(workers=8, rule="config eval_workers")  # no more workers than episodes



def test_eval_workers_is_a_count_or_auto():
    from vlm4vla_core.config import ConfigError, load_config
    from vlm4vla_core.study import check

    raw = load_config(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")
    name = next(iter(raw["benchmarks"]))
    for value in ("auto", 3):
        raw["benchmarks"][name]["eval_workers"] = value
        study = check(raw)
        assert study.benchmarks[name].eval_workers == value
        assert benchmarks.of(study, name)[0].workers(dict(study.benchmarks[name].entry)) == value
    raw["benchmarks"][name]["eval_workers"] = "many"
    with pytest.raises(ConfigError, match=f"benchmarks.{name}.eval_workers"):
        check(raw)


def test_the_evaluation_records_the_workers_and_their_batching(flaky, tmp_path, monkeypatch):
    import sys
    import threading

    raw = flaky
    entry = raw["benchmarks"]["f"]
    entry.update(raise_at=[])
    local, _ = evaluate.evaluate(Study.from_dict(raw), "f", 0, ones, 2, ["whole_chunk"], tmp_path / "local.json")

    class ThreadWorker:  # the worker module against the real server, in a thread of this process
        def __init__(self, cmd):
            self.rc = None
            self.thread = threading.Thread(target=lambda: setattr(self, "rc", worker.main(cmd[3:])))
            self.thread.start()

        def wait(self):
            self.thread.join(timeout=60)
            return self.rc

    monkeypatch.setattr(evaluate.subprocess, "Popen", ThreadWorker)
    entry.update(simulator_python=sys.executable, eval_workers=2)
    serving = {}
    served, _ = evaluate.evaluate(Study.from_dict(raw), "f", 0, ones, 2, ["whole_chunk"], tmp_path / "served.json",
                                  serving=serving)
    def records(result):  # the films land under each result's own name
        return [{k: v for k, v in e.items() if k != "video"} for e in result["whole_chunk"]["episodes"]]

    assert records(served) == records(local)  # the same episodes, the same records
    record = serving["whole_chunk"]
    assert record["workers"] == 2 and record["rule"] == "config eval_workers"
    plans = sum(e["plans"] for e in local["whole_chunk"]["episodes"])
    assert record["server"]["requests"] == plans and record["server"]["clients"] == 2
    assert sum(c["requests"] for c in record["server"]["per_client"]) == plans
