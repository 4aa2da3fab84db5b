"""Render cost per Meta-World frame: fast settings (no multisampling/shadows/reflections) vs defaults.

Run: ``python tools/bench_render.py [--task drawer-open-v3] [--camera corner] [--sizes 112 224]``.
Both settings are timed in the same process on the same scene, interleaved in rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlm4vla_core.benchmarks.metaworld.env import DEFAULT_CAMERA, MetaWorldEnv


def ms_per_frame(env: MetaWorldEnv, frames: int) -> float:
    env.render()  # warm-up
    t = time.perf_counter()
    for _ in range(frames):
        env.render()
    return (time.perf_counter() - t) / frames * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="drawer-open-v3")
    p.add_argument("--camera", default=DEFAULT_CAMERA)
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"task {args.task}, camera {args.camera}, {args.frames} frames x {args.rounds} rounds (best round)")
    print(f"{'size':>5} {'fast ms':>8} {'default ms':>11} {'ratio':>6}")
    for size in args.sizes:
        envs = {fast: MetaWorldEnv(args.task, size, args.camera, fast_render=fast) for fast in (True, False)}
        for env in envs.values():
            env.reset(0)
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.rounds):
            for fast, env in envs.items():
                best[fast] = min(best[fast], ms_per_frame(env, args.frames))
        print(f"{size:>5} {best[True]:>8.2f} {best[False]:>11.2f} {best[False] / best[True]:>6.1f}")


if __name__ == "__main__":
    main()
