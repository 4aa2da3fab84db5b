"""A simulator worker: runs episodes of one benchmark against a policy server.

``python -m vlm4vla_core.benchmarks.worker --kind K --entry entry.json --episodes eps.json
--execute N --url ws://127.0.0.1:PORT --out records.jsonl``

Runs inside the simulator's own Python environment, which needs numpy, msgpack, websockets
and the benchmark's simulator, not torch: it imports only the benchmark layer and the
policy client. Each finished episode is appended to ``--out`` as one JSON line at once, so an
interrupted evaluation keeps its finished episodes.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import Episode, EpisodeFailures, run_episodes
from vlm4vla_core.serving.client import PolicyClient


def remote_infer(client: PolicyClient):
    """Requests of one tick go to the server as one message; the server batches across workers."""

    def infer(requests: list[dict]) -> list[np.ndarray]:
        chunks = client.infer({"images": np.stack([r["image"] for r in requests]),
                               "instructions": [r["instruction"] for r in requests]})
        return list(chunks)

    return infer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.worker", description=__doc__)
    p.add_argument("--kind", required=True)
    p.add_argument("--entry", required=True, help="JSON file: the benchmark's settings")
    p.add_argument("--episodes", required=True, help="JSON file: the episodes to run")
    p.add_argument("--execute", type=int, required=True, help="actions executed per chunk")
    p.add_argument("--url", required=True, help="policy server")
    p.add_argument("--slots", type=int, default=1, help="episodes run in lockstep")
    p.add_argument("--out", required=True, help="JSON lines, one per finished episode")
    p.add_argument("--max-failed-share", type=float, default=1.0,
                   help="stop once more than this share of the episodes raised (each is recorded as a failure)")
    p.add_argument("--videos", help="folder of the rollout videos (needs PyAV in this environment)")
    p.add_argument("--videos-per-task", type=int, default=0, help="successful and failed episodes filmed per task")
    args = p.parse_args(argv)
    bench = benchmarks.get(args.kind)
    with open(args.entry) as f:
        entry = json.load(f)
    with open(args.episodes) as f:
        episodes = [Episode(**e) for e in json.load(f)]
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
