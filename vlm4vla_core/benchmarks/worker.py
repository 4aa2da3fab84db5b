"""A simulator worker: runs episodes of one benchmark against a policy server.

``python -m vlm4vla_core.benchmarks.worker --kind K --entry entry.json --episodes eps.json
--execute N --url ws://127.0.0.1:PORT --out records.jsonl``

Runs inside the simulator's own Python environment, which needs numpy, msgpack, websockets
and the benchmark's simulator, not torch: it imports only the benchmark layer and the
policy client. Each finished episode is appended to ``--out`` as one JSON line at once, so an
interrupted evaluation keeps its finished episodes.

``--bare SUMMARY`` runs the episodes on the bare simulator instead: no policy server, every action
zero (the zero-action baseline, computed here), and writes the simulator's own speed to SUMMARY
(JSON): wall and CPU seconds, environment steps, ``cycle_s`` (the median time between two re-plans:
the steps through the executed actions plus one rendered frame), and the ``requests`` a policy would
have had with ``span_s`` from the first to the last (as ``ServerStats.per_client``). ``--frame``
saves the first frame a policy would have been sent (``.npy``), for timing the policy on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import Episode, EpisodeFailures, run_episodes, zero_infer
from vlm4vla_core.io import write_json
from vlm4vla_core.serving.client import PolicyClient


def remote_infer(client: PolicyClient):
    """Requests of one tick go to the server as one message; the server batches across workers."""

    def infer(requests: list[dict]) -> list[np.ndarray]:
        chunks = client.infer({"images": np.stack([r["image"] for r in requests]),
                               "instructions": [r["instruction"] for r in requests]})
        return list(chunks)

    return infer


def env_steps(record: dict) -> int:
    """Environment steps of an episode record: its ``steps`` plus any ``wait_steps`` before the first action."""
    return int(record.get("steps") or 0) + int(record.get("wait_steps") or 0)


class BareTimer:
    """The zero-action policy that notes when it is asked for a plan (``run_episodes`` asks once per tick;
    the gaps between two requests are the simulator's side of a cycle)."""

    def __init__(self, chunk: int, action_dim: int):
        self.zero, self.calls, self.frame = zero_infer(chunk, action_dim), [], None

    def __call__(self, requests: list[dict]):
        self.calls.append(time.perf_counter())
        if self.frame is None:
            self.frame = requests[0]
        return self.zero(requests)

    def cycle_s(self) -> float | None:
        gaps = [b - a for a, b in zip(self.calls, self.calls[1:])]  # the median drops the gaps of resets
        return statistics.median(gaps) if gaps else None


def run_bare(bench, entry: dict, episodes: list[Episode], execute: int, slots: int, out: str, summary: str,
             frame: str | None) -> None:
    """The episodes on the bare simulator with zero actions; the speed summary to ``summary``."""
    timer = BareTimer(int(entry["chunk"]), bench.action_dim)
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with open(out, "a") as f:
        records = run_episodes(bench, entry, episodes, timer, execute, slots=slots, progress=False,
                               on_record=lambda r: (f.write(json.dumps(r) + "\n"), f.flush()))
    wall, cpu1 = time.perf_counter() - wall0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    steps = sum(env_steps(r) for r in records)
    calls = timer.calls
    write_json(summary, dict(episodes=len(records), env_steps=steps, plans=sum(r["plans"] for r in records),
                             wall_s=round(wall, 3), cpu_s=round(cpu, 3), cycle_s=timer.cycle_s(),
                             requests=len(calls), span_s=round(calls[-1] - calls[0], 3) if calls else 0.0,
                             instruction=timer.frame["instruction"] if timer.frame else None))
    if frame and timer.frame is not None:
        with open(frame, "wb") as f:
            np.save(f, timer.frame["image"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.worker", description=__doc__)
    p.add_argument("--kind", required=True)
    p.add_argument("--entry", required=True, help="JSON file: the benchmark's settings")
    p.add_argument("--episodes", required=True, help="JSON file: the episodes to run")
    p.add_argument("--execute", type=int, required=True, help="actions executed per chunk")
    p.add_argument("--url", help="policy server (not with --bare)")
    p.add_argument("--slots", type=int, default=1, help="episodes run in lockstep")
    p.add_argument("--out", required=True, help="JSON lines, one per finished episode")
    p.add_argument("--max-failed-share", type=float, default=1.0,
                   help="stop once more than this share of the episodes raised (each is recorded as a failure)")
    p.add_argument("--videos", help="folder of the rollout videos (needs PyAV in this environment)")
    p.add_argument("--videos-per-task", type=int, default=0, help="successful and failed episodes filmed per task")
    p.add_argument("--bare", metavar="SUMMARY", help="run on the bare simulator with zero actions; speed to SUMMARY")
    p.add_argument("--frame", help="with --bare: the first policy frame, as .npy")
    args = p.parse_args(argv)
    if bool(args.url) == bool(args.bare):
        p.error("give exactly one of --url (a policy server) and --bare (the bare simulator)")
    bench = benchmarks.get(args.kind)
    with open(args.entry) as f:
        entry = json.load(f)
    with open(args.episodes) as f:
        episodes = [Episode(**e) for e in json.load(f)]
    if args.bare:
        run_bare(bench, entry, episodes, args.execute, args.slots, args.out, args.bare, args.frame)
        return 0
    with PolicyClient(args.url) as client, open(args.out, "a") as out:
        def record(r: dict) -> None:
            out.write(json.dumps(r) + "\n")
            out.flush()

        videos = None
        if args.videos and args.videos_per_task > 0:
            from vlm4vla_core.benchmarks.video import RolloutVideos

            videos = RolloutVideos(args.videos, args.videos_per_task)
        try:
            run_episodes(bench, entry, episodes, remote_infer(client), args.execute, slots=args.slots,
                         on_record=record, progress=False, max_failed_share=args.max_failed_share, videos=videos)
        except EpisodeFailures as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
