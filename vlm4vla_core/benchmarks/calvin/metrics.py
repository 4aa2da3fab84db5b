"""CALVIN numbers of an evaluation result (a run's eval.json, merged from any number of shards).

    python -m vlm4vla_core.benchmarks.calvin.metrics results/<study>/runs/<b>/calvin/<a>/seed<s>/eval.json
        [--mode whole_chunk] [--n-boot 2000] [--json out.json]

Prints SR@1..5, the average length, per-subtask success and percentile-bootstrap 95% intervals over
chains, all computed from the per-chain records (``completed``), so shards of any sizes give the numbers
of one job. (VLM4VLA's ``eval_ckpts.py`` averages each shard's SR@k instead, which equals this only when
the shards have the same number of chains.)
"""

from __future__ import annotations

import argparse
import json
import sys

from vlm4vla_core.benchmarks.calvin.protocol import chain_metrics
from vlm4vla_core.config import RENAMED_MODES, renamed_modes


def summarise(record: dict, mode: str | None = None, n_boot: int = 2000) -> dict:
    record = renamed_modes(record)  # written before the execution modes were renamed: the new names
    mode = RENAMED_MODES.get(mode, mode)
    mode = mode or record.get("reported_mode") or next(iter(record["modes"]))
    out = chain_metrics(record["modes"][mode]["episodes"], n_boot=n_boot)
    return dict(mode=mode, execute_steps=record["modes"][mode].get("execute_steps"), **out)


def format_table(m: dict) -> str:
    lines = [f"mode {m['mode']} (execute_steps {m['execute_steps']}): {m['chains']} chains",
             f"average length {m['avg_len']:.3f}" + (f"  [{m['ci']['avg_len'][0]:.3f}, {m['ci']['avg_len'][1]:.3f}]"
                                                    if "ci" in m else "")]
    for L, sr in m["success_at"].items():
        ci = f"  [{100 * m['ci']['success_at'][L][0]:.1f}, {100 * m['ci']['success_at'][L][1]:.1f}]" if "ci" in m else ""
        lines.append(f"SR@{L}: {100 * sr:5.1f}%{ci}")
    for task, t in m["per_task"].items():
        lines.append(f"  {task}: {t['success']} / {t['attempts']} ({100 * t['rate']:.1f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.calvin.metrics", description=__doc__)
    p.add_argument("eval_json")
    p.add_argument("--mode", default=None, help="execution mode (default: the reported one)")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    with open(args.eval_json) as f:
        m = summarise(json.load(f), args.mode, args.n_boot)
    print(format_table(m))
    if args.json:
        from vlm4vla_core.io import write_json

        write_json(args.json, m, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
