"""Quick check of the LIBERO-10 simulator: every task runs, speed, image shapes, determinism.

Run with the simulator environment's Python (``envs/setup-libero-venv.sh VENV_DIR`` first):
``VENV_DIR/bin/python tools/bench_libero_sim.py [--size 256] [--steps 20] [--no-wrist]``.

For tasks 0..9 and init states 0 and 1: reset, then ``--steps`` no-op steps ``[0,0,0,0,0,0,-1]``
(gripper open); prints the time of each reset (the first one of a task builds its env) and the
steps/s. Then resets init state 0 of every task again (the env is rebuilt: one is kept open at a
time) and checks that the first image has the same bytes as the first time. ``sim.py`` is
loaded by its path (it imports only numpy and LIBERO), so the rest of the package is not needed. Run alone: the
speed depends on what else the cores are doing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import resource
import sys
import time
from pathlib import Path

import numpy as np

SIM = Path(__file__).resolve().parents[1] / "vlm4vla_core" / "benchmarks" / "libero10" / "sim.py"
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


def load_sim():
    spec = importlib.util.spec_from_file_location("libero10_sim", SIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mib() -> float:
    """Resident memory of this process now (Linux), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="camera side in pixels")
    p.add_argument("--steps", type=int, default=20, help="no-op steps per episode")
    p.add_argument("--inits", type=int, nargs="+", default=[0, 1], help="init states per task")
    p.add_argument("--no-wrist", action="store_true", help="render the agentview camera only")
    args = p.parse_args()

    t0 = time.perf_counter()
    sim_module = load_sim()
    tasks = sim_module.suite_tasks()
    print(f"{sim_module.SUITE}: {len(tasks)} tasks, init states {[t['num_init_states'] for t in tasks]} "
          f"(import + suite {time.perf_counter() - t0:.1f} s)")
    first: dict[int, str] = {}
    total_steps, total_step_s = 0, 0.0
    with sim_module.LiberoSim(camera_size=args.size, wrist=not args.no_wrist) as sim:
        print(f"package {sim._lib.package}, camera {args.size}px, observation keys {sim.keys}")
        print(f"{'task':>4} {'init':>4} {'reset s':>8} {'steps/s':>8} {'done':>5}  shapes; instruction")
        for task_id, task in enumerate(tasks):
            for init in args.inits:
                t = time.perf_counter()
                obs = sim.reset(task_id, init)
                reset_s = time.perf_counter() - t
                if init == 0:
                    first[task_id] = digest(obs["agentview"])
                done = False
                t = time.perf_counter()
                for _ in range(args.steps):
                    obs, done = sim.step(NOOP)
                step_s = time.perf_counter() - t
                total_steps, total_step_s = total_steps + args.steps, total_step_s + step_s
                shapes = " ".join(f"{k}={v.shape}/{v.dtype}" for k, v in obs.items())
                print(f"{task_id:>4} {init:>4} {reset_s:>8.2f} {args.steps / step_s:>8.1f} {done!s:>5}  "
                      f"{shapes}; {task['instruction']}", flush=True)
        mismatched = []
        t = time.perf_counter()
        for task_id in first:
            if digest(sim.reset(task_id, 0)["agentview"]) != first[task_id]:
                mismatched.append(task_id)
        again_s = time.perf_counter() - t
        rss_open = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"overall: {total_steps / total_step_s:.1f} steps/s over {total_steps} steps; "
          f"RSS {rss_open:.0f} MiB with the sim open, peak {peak:.0f} MiB; "
          f"total {time.perf_counter() - t0:.0f} s")
    if mismatched:
        print(f"NOT deterministic: the first agentview image of init state 0 changed for tasks {mismatched}")
        return 1
    if not first:
        print("determinism not checked: init state 0 was not run (--inits)")
        return 0
    print(f"deterministic: init state 0 gives the same first agentview image (bytes) on a second reset "
          f"for all {len(first)} tasks ({again_s / len(first):.2f} s per reset, envs rebuilt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
