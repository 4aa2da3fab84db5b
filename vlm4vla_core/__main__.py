"""Command line: ``python -m vlm4vla_core <stage> [options]``.

Every stage of the Snakemake DAG is one command here, so each runs outside
Snakemake too. A stage module exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "validate-config": ("vlm4vla_core.config", "Validate a study config and print its jobs"),
    "make-tiny-backbone": ("vlm4vla_core.backbones.tiny", "Write a tiny random-weight checkpoint of a family"),
    "architectures": ("vlm4vla_core.backbones.sweep", "Every image-text-to-text architecture through family generic"),
    "plan-memory": ("vlm4vla_core.backbones.memory", "GPU memory per rank of a training job under ZeRO-2 and ZeRO-3"),
    "backbone-report": ("vlm4vla_core.backbones.report", "Parameter and token report of a backbone"),
    "data": ("vlm4vla_core.dataset", "Build a benchmark's training set from the study config"),
    "collect-data": ("vlm4vla_core.benchmarks.metaworld.collect", "Roll out Meta-World experts into Parquet"),
    "train": ("vlm4vla_core.train", "Train a VLA policy with DeepSpeed"),
    "evaluate": ("vlm4vla_core.evaluate", "Closed-loop rollouts of a trained policy"),
    "published-results": ("vlm4vla_core.data", "The published VLM4VLA numbers as a results CSV"),
    "aggregate": ("vlm4vla_core.aggregate", "Tables, figures and regressions of a study"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        width = max(map(len, STAGES))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in STAGES.items()]
        msg = "usage: python -m vlm4vla_core <stage> [options]\n\nstages:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown stage {argv[0]!r}\n\n{msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0
    module = importlib.import_module(STAGES[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
