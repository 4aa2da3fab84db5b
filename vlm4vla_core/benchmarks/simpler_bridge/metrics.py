"""Per-task and 4-task mean success of a SimplerEnv-Bridge evaluation, with Wilson 95% intervals,
at the final step (the official rule) and at any step (labelled; other papers' rule).

``python -m vlm4vla_core.benchmarks.simpler_bridge.metrics eval.json [--mode MODE] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import sys

from vlm4vla_core.benchmarks.simpler_bridge import summary
from vlm4vla_core.config import RENAMED_MODES, renamed_modes

KEYS = {"success_final_step": "success at the final step (official)", "success_any_step": "success at any step"}


def report(run: dict, mode: str | None = None) -> dict:
    run = renamed_modes(run)  # written before the execution modes were renamed: the new names
    mode = RENAMED_MODES.get(mode, mode)
    mode = mode or run.get("reported_mode") or next(iter(run["modes"]))
    episodes = run["modes"][mode]["episodes"]
    return dict(mode=mode, **{key: summary(episodes, key) for key in KEYS})


def format_report(rep: dict) -> str:
    lines = [f"mode: {rep['mode']}"]
    for key, label in KEYS.items():
        s = rep[key]
        lines.append(f"{label}:")
        for task, row in [*s["tasks"].items(), ("mean of tasks", s["mean"])]:
            lo, hi = row["wilson95"]
            lines.append(f"  {task:<34} {row['success_rate']:5.1f}%  ({row['successes']}/{row['episodes']}, "
                         f"Wilson 95% {lo:.1f}-{hi:.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.simpler_bridge.metrics", description=__doc__)
    p.add_argument("eval", help="a run's eval.json (or an evaluation shard)")
    p.add_argument("--mode", help="execution mode (default: the reported one)")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    with open(args.eval) as f:
        rep = report(json.load(f), args.mode)
    print(format_report(rep))
    if args.json:
        from vlm4vla_core.io import write_json

        write_json(args.json, rep, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
