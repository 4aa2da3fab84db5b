"""Stands in for the LIBERO simulator in ``vlm4vla_core.benchmarks.libero10.replay``'s command line.

``python fake_libero_replay.py -m vlm4vla_core.benchmarks.libero10.replay --requests R --out D --worker W
--workers N``: runs the real ``serve`` (and so the real ``replay`` loop) against a fake env whose frame is
filled with the number of steps taken since the demo's start plus 7 x the demo's index, and whose
``done`` is true once the sum of the executed x commands is positive. Prints a line as a simulator does.
``FAKE_LIBERO_STOP_AT=k`` makes it exit (code 5) when it reaches demo ``k``; ``FAKE_LIBERO_LOG`` names a
file to which each replayed demo's index is appended.
"""

import os
import sys
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.libero10.replay import serve


def main(argv):
    args = dict(zip(argv[3::2], argv[4::2]))  # after the script and "-m MODULE"
    req = np.load(args["--requests"])
    size, state = int(req["camera_size"]), {}

    def frame():
        return {"agentview": np.full((size, size, 3), 7 * state["k"] + state["taken"], np.uint8)}

    def start(task, reset, first_state):
        k = next(k for k in range(int(req["count"])) if np.array_equal(req[f"state_{k}"], first_state))
        state.update(k=k, taken=0, x=0.0)
        return frame()

    def step(action):
        state["taken"] += 1
        state["x"] += float(action[0])
        return frame(), state["x"] > 0

    print("a message of the simulator", flush=True)
    stop_at = int(os.environ.get("FAKE_LIBERO_STOP_AT", -1))  # exit with 5 instead of replaying this demo
    log = os.environ.get("FAKE_LIBERO_LOG")  # append each replayed demo's index here

    def start_or_stop(task, reset, first_state):
        obs = start(task, reset, first_state)
        if state["k"] == stop_at:
            raise SystemExit(5)
        if log:
            with open(log, "a") as f:
                f.write(f"{state['k']}\n")
        return obs

    serve(req, Path(args["--out"]), int(args["--worker"]), int(args["--workers"]), start_or_stop, step,
          first=int(args.get("--first", 0)))


if __name__ == "__main__":
    main(sys.argv)
