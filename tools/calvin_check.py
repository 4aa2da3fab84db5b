"""A real CALVIN evaluation through the policy server, with a tiny policy, on the first K chains.

    envs/setup-calvin-venv.sh .venv-calvin ../calvin_env     # once: calvin_env from a local git clone
    python tools/calvin_check.py [--chains 4] [--max-steps 360] [--workers 2]

Writes a small task_ABC_D in the native layout (synthetic frames and rel_actions, as the tests do),
imports it with the data stage, trains a tiny Qwen2.5-VL policy for a few DeepSpeed steps, then
evaluates it on the first ``--chains`` official chains in the real calvin_env scene D: the policy is
served by the evaluation process and the chains run in ``--workers`` simulator processes of the CALVIN
environment. Without the dataset the scene is composed from calvin_env's own conf (the record says
which). Prints the chains run, the step accounting, the CALVIN metrics and the wall time of each stage.
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
    p.add_argument("--out", type=Path, default=ROOT / "results" / "calvin_check")
    p.add_argument("--simulator-python", default=str(ROOT / ".venv-calvin" / "bin" / "python"))
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=360)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=10)
    args = p.parse_args()
    if not Path(args.simulator_python.split()[0]).exists():
        sys.exit(f"{args.simulator_python}: no CALVIN environment; run envs/setup-calvin-venv.sh .venv-calvin "
                 "CALVIN_ENV_CLONE first")
    from vlm4vla_core.testing.calvin import write_task_abc_d

    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.benchmarks.calvin.metrics import format_table, summarise

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.perf_counter()
    if not (out / "task_ABC_D").exists():
        write_task_abc_d(out / "task_ABC_D")
    get_adapter("qwen2_5_vl").make_tiny(out / "backbone", image_size=56, seed=0)
    times["fixture and tiny backbone"] = time.perf_counter() - t0
    study = check_study(out, "calvin_check", "calvin", dict(
        kind="calvin", chunk=10, image_size=56, data_path=str(out / "task_ABC_D"), chains=args.chains,
        max_steps=args.max_steps, simulator_python=args.simulator_python, eval_workers=args.workers), args.train_steps)
    times.update(run_chain(study, "calvin", out))
    record = json.loads((out / "eval.json").read_text())
    episodes = record["modes"]["whole_chunk"]["episodes"]
    env_steps = sum(e["steps"] for e in episodes)
    metrics = summarise(record, n_boot=1000)
    server = [l for l in (out / "evaluate.log").read_text().splitlines() if l.startswith("policy server:")]
    summary = dict(
        chains=len(episodes), scene=sorted({e["scene"] for e in episodes}), max_steps=args.max_steps,
        env_steps=env_steps, policy_calls=sum(e["plans"] for e in episodes),
        subtasks_attempted=sum(len(e["subtask_results"]) for e in episodes),
        completed=[e["completed"] for e in episodes], avg_len=metrics["avg_len"], workers=args.workers,
        server=server, simulator=record["simulator"], seconds={k: round(v, 1) for k, v in times.items()},
        env_steps_per_s=round(env_steps / times["evaluation"], 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(format_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
