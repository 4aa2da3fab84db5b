"""An episode that raises is a recorded failure; a simulator that always raises stops the job."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.benchmarks.base import Benchmark, Episode, EpisodeFailures, Obs, run_episodes
from vlm4vla_core.config import Study


class FlakyBench(Benchmark):
    """Episodes listed in ``raise_at`` raise at their second step (``first`` at their first); every simulator
    built is counted, so a failed episode's replacement shows."""

    kind, action_dim, in_process, metric = "flaky", 2, True, "success_rate"
    built: list = []

    def episodes(self, entry, seed):
        return [Episode(i, f"t{i % 2}", "go", {}) for i in range(entry["n"])]

    def simulator(self, entry):
        FlakyBench.built.append(1)
        return {"broken": entry.get("broken", False)}

    def run_episode(self, sim, episode, entry):
        if sim["broken"]:
            raise OSError("simulator connection lost")
        for step in range(3):
            action = yield Obs("go", lambda: np.zeros((4, 4, 3), np.uint8), reset=step == 0)
            if episode.index in entry.get("raise_at", ()) and step == 1:
                raise RuntimeError(f"physics exploded in episode {episode.index}")
        return dict(success=bool(action[0] > 0), steps=3)


@pytest.fixture
def flaky(monkeypatch):
    FlakyBench.built = []
    monkeypatch.setitem(benchmarks.registry(), "flaky", FlakyBench())
    return dict(study="t", benchmarks={"f": dict(kind="flaky", chunk=2, n=8, raise_at=[3])},
                evaluation=dict(modes=["whole_chunk"], mode_selection="best", max_failed_share=0.25))


def ones(requests):
    return [np.ones((2, 2), np.float32) for _ in requests]


@pytest.mark.parametrize("slots", [1, 3])
def test_an_episode_that_raises_is_a_failure_with_its_error(flaky, slots):
    entry = flaky["benchmarks"]["f"]
    bench = benchmarks.get("flaky")
    records = run_episodes(bench, entry, bench.episodes(entry, 0), ones, 2, slots=slots, progress=False,
                           max_failed_share=0.25)
    assert [r["index"] for r in records] == list(range(8))  # the run went on past the failure
    bad = records[3]
    assert bad["success"] is False and bad["error"] == "RuntimeError: physics exploded in episode 3"
    assert "physics exploded" in bad["traceback"] and bad["steps"] is None
    assert all(r["success"] and "error" not in r for i, r in enumerate(records) if i != 3)
    assert len(FlakyBench.built) == slots + 1  # the failed episode's simulator was replaced


def test_a_job_records_the_failure_and_a_broken_simulator_stops_it(flaky, tmp_path):
    results, parts = evaluate.evaluate(Study.from_dict(flaky), "f", 0, ones, 2, ["whole_chunk"], tmp_path / "eval.json")
    full = results["whole_chunk"]
    assert full["failed_episodes"] == 1 and full["episodes"][3]["error"].startswith("RuntimeError")
    assert sum(r["success"] for r in full["episodes"]) == 7  # counted as a failure
    parts.remove()

    flaky["benchmarks"]["f"]["broken"] = True
    with pytest.raises(EpisodeFailures) as err:
        evaluate.evaluate(Study.from_dict(flaky), "f", 0, ones, 2, ["whole_chunk"], tmp_path / "broken.json")
    message = str(err.value)
    assert "3 of 8 episodes raised" in message  # stopped once more than 25% raised, not after all 8
    assert message.count("OSError: simulator connection lost") == 3 and "episode 2 (t0)" in message

    # fixed and run again: the episodes that raised are retried, the others are kept
    flaky["benchmarks"]["f"]["broken"] = False
    flaky["benchmarks"]["f"]["raise_at"] = []
    again, _ = evaluate.evaluate(Study.from_dict(flaky), "f", 0, ones, 2, ["whole_chunk"], tmp_path / "broken.json")
    assert again["whole_chunk"]["failed_episodes"] == 0 and all(r["success"] for r in again["whole_chunk"]["episodes"])


def test_worker_processes_stop_and_list_every_error(flaky, tmp_path, monkeypatch):
    """The same rule across simulator processes: each worker stops its block, the job lists the errors."""
    entry = flaky["benchmarks"]["f"]
    entry.update(broken=True)
    bench = benchmarks.get("flaky")
    parts = evaluate.Parts(tmp_path / "w.json", {})
    calls = []

    class FakePopen:  # a worker run in this process on its block, as the real worker module runs it
        def __init__(self, cmd):
            args = dict(zip(cmd[3::2], cmd[4::2]))
            episodes = [Episode(**e) for e in json.loads(open(args["--episodes"]).read())]
            calls.append(len(episodes))
            self.rc = 0
            with open(args["--out"], "a") as out:
                try:
                    run_episodes(bench, entry, episodes, ones, 2, progress=False,
                                 on_record=lambda r: out.write(json.dumps(r) + "\n"),
                                 max_failed_share=float(args["--max-failed-share"]))
                except EpisodeFailures:
                    self.rc = 3

        def wait(self):
            return self.rc

    monkeypatch.setattr(evaluate.subprocess, "Popen", FakePopen)
    entry.update(eval_workers=2, simulator_python=sys.executable)
    with pytest.raises(EpisodeFailures, match="episodes raised"):
        evaluate.run_with_workers(bench, bench.settings(entry), bench.episodes(entry, 0), ones, 2, 2, parts, "whole_chunk",
                                  max_failed_share=0.25)
    assert calls == [4, 4]
