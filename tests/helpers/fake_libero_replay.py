"""Stands in for the LIBERO simulator in ``vlm4vla_core.benchmarks.libero10.replay``'s command line.

``python fake_libero_replay.py -m vlm4vla_core.benchmarks.libero10.replay --requests R --out D``:
replays every request with the real ``replay`` loop against a fake env whose frame is filled with
the number of steps taken so far (plus 7 x the request's index) and whose ``done`` is true once
the sum of the executed x commands is positive. Writes and announces results as the real one does.
"""

import json
import sys
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.libero10.replay import _write_npz, replay


def main(argv):
    args = dict(zip(argv[3::2], argv[4::2]))  # after the script and "-m MODULE"
    req, out = np.load(args["--requests"]), Path(args["--out"])
    size = int(req["camera_size"])
    for k in range(int(req["count"])):
        taken, x = [0], [0.0]

        def frame():
            return {"agentview": np.full((size, size, 3), 7 * k + taken[0], np.uint8)}

        def step(action):
            taken[0] += 1
            x[0] += float(action[0])
            return frame(), x[0] > 0

        frames, kept, success, noops = replay(frame(), req[f"actions_{k}"], step, int(req["settle_steps"]))
        _write_npz(out / f"{k}.npz", frames=np.stack([f["agentview"] for f in frames]),
                   actions=np.asarray(kept, np.float32).reshape(-1, 7), success=success, noops=noops)
        print("a message of the simulator", flush=True)
        print(json.dumps(dict(k=k, success=success, kept=len(kept), noops=noops)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
