"""A real LIBERO-10 evaluation through the policy server, with a tiny policy.

    envs/setup-libero-venv.sh .venv-libero      # once: LIBERO's own environment
    python tools/libero_check.py [--episodes-per-task 2] [--max-steps 60] [--workers 2]

Writes a small LIBERO demo set in the official HDF5 layout (synthetic frames and actions, as the
tests do), imports it with the data stage, trains a tiny Qwen2.5-VL policy for a few DeepSpeed
steps, then evaluates it on all 10 LIBERO-10 tasks in the real simulator: the policy is served by
the evaluation process and the episodes run in ``--workers`` simulator processes of the LIBERO
environment. The step limit is cut (``--max-steps``; the protocol's 520 stays the default). Prints
the episode count, the step accounting per episode and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stage_runner import check_study, run_chain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "libero_check")
    p.add_argument("--simulator-python", default=str(ROOT / ".venv-libero" / "bin" / "python"))
    p.add_argument("--episodes-per-task", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=10)
    args = p.parse_args()
    if not Path(args.simulator_python.split()[0]).exists():
        sys.exit(f"{args.simulator_python}: no LIBERO environment; run envs/setup-libero-venv.sh .venv-libero first")
    from vlm4vla_core.testing.libero import write_libero_hdf5

    from vlm4vla_core.backbones import get_adapter

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.perf_counter()
    write_libero_hdf5(out / "libero_10", demos=2, length=20, size=64)
    get_adapter("qwen2_5_vl").make_tiny(out / "backbone", image_size=56, seed=0)
    times["fixture and tiny backbone"] = time.perf_counter() - t0
    study = check_study(out, "libero_check", "libero10", dict(
        kind="libero10", chunk=4, image_size=56, data_path=str(out / "libero_10"),
        episodes_per_task=args.episodes_per_task, max_steps=args.max_steps, wait_steps=10,
        simulator_python=args.simulator_python, eval_workers=args.workers), args.train_steps)
    times.update(run_chain(study, "libero10", out))
    record = json.loads((out / "eval.json").read_text())
    episodes = record["modes"]["whole_chunk"]["episodes"]
    policy_steps = sum(e["steps"] for e in episodes)
    env_steps = policy_steps + sum(e["wait_steps"] for e in episodes)
    server = [l for l in (out / "evaluate.log").read_text().splitlines() if l.startswith("policy server:")]
    summary = dict(
        episodes=len(episodes), tasks=sorted({e["task_id"] for e in episodes}),
        init_states=sorted({e["init_state"] for e in episodes}), successes=sum(e["success"] for e in episodes),
        max_steps=args.max_steps, wait_steps=10, policy_steps=policy_steps, env_steps=env_steps,
        policy_calls=sum(e["plans"] for e in episodes), workers=args.workers, server=server,
        simulator=record["simulator"], seconds={k: round(v, 1) for k, v in times.items()},
        env_steps_per_s=round(env_steps / times["evaluation"], 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
