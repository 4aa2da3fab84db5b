"""Command line: ``vlm4vla <stage> [options]`` (the console script), or ``python -m vlm4vla_core <stage> [options]``.

Every stage of the Snakemake DAG is one command here, so each runs outside
Snakemake too. A stage is a function ``(argv) -> int`` of a module. A stage that
stops at bad input raises the project's ``InputError`` (a ``ConfigError`` naming the
key, a ``ResultsError`` naming the file or row); ``run`` prints it as one line
``error: ...`` on stderr and exits ``ERROR_EXIT``, for every stage alike.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

STAGES = {
    "validate-config": ("vlm4vla_core.study", "main", "Validate a study config and print its jobs"),
    "make-tiny-backbone": ("vlm4vla_core.backbones.tiny", "main", "Write a tiny random-weight checkpoint of a family"),
    "architectures": ("vlm4vla_core.backbones.sweep", "main", "Every image-text-to-text architecture through family generic"),
    "lock-check": ("vlm4vla_core.lock", "main", "The installed packages against the core environment's lock file"),
    "plan-memory": ("vlm4vla_core.plan_memory", "main", "GPU memory per rank of a training job under ZeRO-2 and ZeRO-3"),
    "plan-cost": ("vlm4vla_core.plan_cost", "main", "GPU-hours and simulator core-hours of a study, per rule and backbone"),
    "backbone-report": ("vlm4vla_core.backbones.card", "main", "Parameter and token report of a backbone"),
    "data": ("vlm4vla_core.data_stage", "main", "Build a benchmark's training set from the study config"),
    "fixture": ("vlm4vla_core.fixture_stage", "main", "Write a benchmark's synthetic dataset in its native layout (fixture: synthetic)"),
    "collect-data": ("vlm4vla_core.benchmarks.metaworld.collect", "main", "Roll out Meta-World experts into a training set"),
    "make-vqa-data": ("vlm4vla_core.vqa.generate", "main", "Generate a VQA set (general shapes or a benchmark's scenes; train and held-out)"),
    "sft": ("vlm4vla_core.sft", "main", "Fine-tune a backbone on image conversations (answer-token loss)"),
    "vqa-eval": ("vlm4vla_core.vqa.eval_stage", "main", "Answer a held-out VQA set by generation and score it"),
    "vqa-lmms": ("vlm4vla_core.vqa.lmms", "main", "Score a backbone on an lmms-eval task (in the lmms-eval environment)"),
    "train": ("vlm4vla_core.train", "main", "Train a VLA policy with DeepSpeed"),
    "evaluate": ("vlm4vla_core.evaluate", "main", "Closed-loop rollouts of a trained policy (one shard)"),
    "merge-eval": ("vlm4vla_core.evaluate", "merge_main", "Join evaluation shards into a run's eval.json"),
    "published-results": ("vlm4vla_core.published", "main", "The published VLM4VLA numbers as a results CSV"),
    "aggregate": ("vlm4vla_core.aggregate", "main", "Tables, figures and regressions of a study"),
    "plan": ("vlm4vla_core.aggregate.inference_outputs", "plan_main", "Seeds or episodes needed to detect an effect"),
    "platform-check": ("vlm4vla_core.aggregate.inference_outputs", "platform_main",
                       "Does a rerun on another machine agree with a reference run?"),
    "calvin-metrics": ("vlm4vla_core.benchmarks.calvin.metrics", "main",
                       "CALVIN's SR@1..5, average length and per-subtask success of a run's eval.json"),
    "bridge-report": ("vlm4vla_core.benchmarks.simpler_bridge.metrics", "main",
                      "SimplerEnv-Bridge's per-task success with intervals of an eval.json"),
    # run by the workflow or inside a simulator's environment (also as python -m <module>)
    "launch": ("vlm4vla_core.launch", "main", "Run a stage as one DeepSpeed process per GPU (srun, torchrun or python)"),
    "sim-worker": ("vlm4vla_core.benchmarks.worker", "main",
                   "Play a benchmark's episodes against a policy server (in the simulator's environment)"),
    "libero-replay": ("vlm4vla_core.benchmarks.libero10.replay", "main",
                      "Replay LIBERO demos in the simulator (in the LIBERO environment)"),
    "libero-rlds": ("vlm4vla_core.benchmarks.libero10.rlds", "main",
                    "Convert OpenVLA's LIBERO-10 RLDS set to a LeRobot copy (in a TensorFlow environment)"),
    "bridge-rlds": ("vlm4vla_core.benchmarks.simpler_bridge.rlds", "main",
                    "Convert the Bridge V2 RLDS original to a LeRobot copy (in a TensorFlow environment)"),
    "simpler-check": ("vlm4vla_core.benchmarks.simpler_bridge.sim", "main",
                      "With --check-vulkan: exit non-zero unless SimplerEnv finds a usable Vulkan device"),
}


#: exit status of a stage stopped by bad input (an InputError)
ERROR_EXIT = 1


def program() -> str:
    """How the command line was called: ``vlm4vla`` (the console script) or ``python -m vlm4vla_core``."""
    return "vlm4vla" if Path(sys.argv[0]).name == "vlm4vla" else "python -m vlm4vla_core"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        width = max(map(len, STAGES))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in STAGES.items()]
        msg = f"usage: {program()} <stage> [options]\n\nstages:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown stage {argv[0]!r}\n\n{msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0
    return run(argv[0], argv[1:])


def run(stage: str, argv: list[str]) -> int:
    """Run ``stage`` with its arguments; bad input it raises (InputError) becomes ``error: ...`` and
    ``ERROR_EXIT``."""
    from vlm4vla_core.config import InputError

    module, func, _ = STAGES[stage]
    try:
        return int(getattr(importlib.import_module(module), func)(argv) or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
