"""LIBERO-10 demos replayed in the simulator: the training set the paper used, rebuilt from the HDF5 release.

VLM4VLA trains LIBERO-10 on OpenVLA's regenerated copy (``libero_10_no_noops``), made from the
official HDF5 demos by replaying each demo's actions in the simulator. This module does the same:

- per task, one off-screen env at ``camera_size`` (256) px seeded once with ``env_seed`` (0); the
  demos are replayed in file order (``demo_0, demo_1, ...``), demo ``k`` after the ``k``-th
  ``env.reset()`` of that env (``LiberoSim.reset_to_state`` keeps that fixture placement exact);
- per demo: ``env.reset()``, ``set_init_state(states[0])`` of the demo, ``settle_steps`` (10) steps
  of ``[0, 0, 0, 0, 0, 0, -1]``, then the demo's actions in order; a no-op (``is_noop``) is skipped
  without a step; before every executed action the agentview frame is recorded with it;
- the demo is kept when the last step's ``done`` is true (every goal predicate holds at the end) and
  dropped otherwise; the number of dropped replays is counted.

Runs in the LIBERO simulator environment (numpy and the LIBERO package, no torch, no h5py):

``python -m vlm4vla_core.benchmarks.libero10.replay --requests REQUESTS.npz --out DIR [--worker W --workers N
--first FIRST]``

``REQUESTS.npz`` holds, per demo ``k``, ``task_k``, ``reset_k``, ``state_k`` (the demo's first
simulator state) and ``actions_k`` ([T, 7]), plus ``count``, ``camera_size``, ``env_seed`` and
``settle_steps``. Worker ``W`` of ``N`` replays the demos ``k >= FIRST`` with ``k % N == W`` in order
(each task's env replays the resets it skips, so every demo keeps its fixture placement) and writes
each to ``DIR/k.npz`` (``frames`` [n, H, W, 3] uint8 as the env renders them, upside-down; ``actions``
[n, 7]; ``success``; ``noops``), keeping at most two unread there. ``importer.py`` starts the workers and
takes the results in demo order while the next ones are replayed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlm4vla_core.io import atomic_write

#: OpenVLA's threshold on the norm of the six arm dimensions below which an action is a no-op
NOOP_THRESHOLD = 1e-4
#: the action of the settle steps before a replay (arm still, gripper open)
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
SETTLE_STEPS = 10


def is_noop(action: np.ndarray, last_kept: np.ndarray | None) -> bool:
    """A no-op: the arm part's norm is below ``NOOP_THRESHOLD`` and the gripper command equals the
    last kept action's (before any action is kept, the arm test alone decides)."""
    still = float(np.linalg.norm(np.asarray(action)[:-1])) < NOOP_THRESHOLD
    return still if last_kept is None else still and action[-1] == last_kept[-1]


def noop_mask(actions: np.ndarray) -> np.ndarray:
    """True for each step ``is_noop`` drops, each compared with the last step kept before it."""
    actions = np.asarray(actions)
    mask, last = np.zeros(len(actions), bool), None
    for t, action in enumerate(actions):
        mask[t] = is_noop(action, last)
        if not mask[t]:
            last = action
    return mask


def replay(obs, actions: np.ndarray, step: Callable, settle_steps: int = SETTLE_STEPS):
    """Replay ``actions`` from the observation ``obs`` of a freshly set initial state.

    ``step(action) -> (obs, done)``. Returns ``(frames, kept, success, noops)``: the observation
    before each executed action, the executed actions, the last step's ``done`` and the number of
    skipped no-ops. With no step at all (no settle steps and only no-ops), success is False.
    """
    done = False
    for _ in range(settle_steps):
        obs, done = step(SETTLE_ACTION)
    frames, kept, noops = [], [], 0
    for action in np.asarray(actions):
        if is_noop(action, kept[-1] if kept else None):
            noops += 1
            continue
        frames.append(obs)
        kept.append(action)
        obs, done = step(action)
    return frames, kept, bool(done), noops


def write_npz(path: Path, compress: bool = False, **arrays) -> None:
    """``arrays`` as an NPZ file at ``path`` (zlib-compressed with ``compress``), moved into place when complete."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)

    atomic_write(path, write)


def serve(req, out: Path, worker: int, workers: int, start: Callable, step: Callable, ahead: int = 2,
          first: int = 0) -> None:
    """Replay the requests ``k >= first`` with ``k % workers == worker`` in order, each into ``out/k.npz``.

    ``start(task, reset_index, state) -> obs`` sets a demo's first state, ``step`` is as in ``replay``.
    Waits while ``ahead`` results lie unread in ``out`` (the reader removes them), so the disk holds a
    few demos per worker whatever the reader's pace.
    """
    out.mkdir(parents=True, exist_ok=True)
    size, settle = int(req["camera_size"]), int(req["settle_steps"])
    for k in range(first + (worker - first) % workers, int(req["count"]), workers):
        while len(list(out.glob("[0-9]*.npz"))) >= ahead:
            time.sleep(0.05)
        obs = start(int(req[f"task_{k}"]), int(req[f"reset_{k}"]), req[f"state_{k}"])
        frames, kept, success, noops = replay(obs, req[f"actions_{k}"], step, settle)
        images = np.stack([f["agentview"] for f in frames]) if frames else np.zeros((0, size, size, 3), np.uint8)
        write_npz(out / f"{k}.npz", compress=True, frames=images, actions=np.asarray(kept, np.float32).reshape(-1, 7),
                  success=success, noops=noops)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.libero10.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", required=True, help="NPZ file: the demos to replay")
    p.add_argument("--out", required=True, help="folder for one NPZ file per replayed demo")
    p.add_argument("--worker", type=int, default=0, help="this process replays the demos k with k %% workers == worker")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--first", type=int, default=0, help="the first demo to replay (the earlier ones are done)")
    args = p.parse_args(argv)
    from vlm4vla_core.benchmarks.libero10.sim import LiberoSim

    req = np.load(args.requests)
    with LiberoSim(camera_size=int(req["camera_size"]), env_seed=int(req["env_seed"]), wrist=False) as sim:
        serve(req, Path(args.out), args.worker, args.workers, sim.reset_to_state, sim.step, first=args.first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
