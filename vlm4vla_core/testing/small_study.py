"""A small study laid out as the pipeline writes it, for the aggregate stage's report pages: two backbones
and the zero-action baseline on two Meta-World tasks, each run with its eval.json, metrics.jsonl (a resumed
run re-logs a step), episodes that name their outcome and step of success, filmed rollouts, and
two claims with a Snakefile that reports the aggregated pages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.video import write_mp4
from vlm4vla_core.config import BASELINE

TASKS = ("reach-v3", "push-v3")
#: (backbone, ablation, seed) -> successes per task of 4 episodes each
RUNS = {("qwen", "full", 0): {"reach-v3": [1, 1, 0, 1], "push-v3": [0, 0, 0, 1]},
        ("qwen", "full", 1): {"reach-v3": [1, 0, 0, 0], "push-v3": [0, 0, 0, 0]},
        ("pali", "full", 0): {"reach-v3": [0, 0, 0, 0], "push-v3": [1, 1, 1, 1]},
        ("pali", "freeze_vision", 0): {"reach-v3": [0, 1, 0, 0], "push-v3": [0, 0, 0, 0]},
        (BASELINE, "none", 0): {"reach-v3": [0, 0, 0, 0], "push-v3": [0, 0, 0, 0]}}

#: the small study's claims (one-line contrasts)
CLAIMS = "claims:\n  - 'qwen > pali on metaworld by 5'\n  - 'pali/freeze_vision < pali on metaworld'\n"
#: a Snakefile whose report holds the aggregated pages as aggregate.smk declares them, with the landing page {rst}
SNAKEFILE = """from vlm4vla_core.aggregate import pages
report: {rst!r}
rule aggregate:
    output:
        report(directory("results/pages/html"), patterns=["{{name}}.html"],
               category=lambda wc: pages.category(wc.name), labels={{"result": "{{name}}"}}),
    shell: "exit 1"
"""


def study_config() -> dict:
    return {"study": "pages", "seeds": [0, 1], "ablations": ["full", "freeze_vision"],
            "benchmarks": {"metaworld": {"kind": "metaworld", "chunk": 4, "tasks": list(TASKS)}},
            "backbones": {"qwen": {"family": "f", "source": "tiny"}, "pali": {"family": "f", "source": "tiny"}}}


def write_study(root: Path) -> list[Path]:
    """runs/<backbone>/metaworld/<ablation>/seed<s>/{eval.json, metrics.jsonl, eval/videos/...}."""
    frame = np.zeros((16, 16, 3), np.uint8)
    paths = []
    for (bb, abl, seed), succ in RUNS.items():
        run = root / "runs" / bb / "metaworld" / abl / f"seed{seed}"
        eps = []
        for t, ss in succ.items():
            for i, s in enumerate(ss):
                ep = dict(task=t, episode_seed=1000 * seed + i, success=bool(s), steps=10 + 5 * i if s else 30,
                          outcome="success" if s else "timed out", success_step=10 + 5 * i if s else None)
                if i < 2:  # the first two episodes of each task were filmed
                    ep["video"] = f"eval/videos/shard0/full/{t}_{i}.mp4"
                    write_mp4(run / ep["video"], [frame, frame + 100])
                eps.append(ep)
        rec = dict(study="pages", backbone=bb, family="f", benchmark="metaworld", ablation=abl, seed=seed,
                   metric="success_rate", modes={"whole_chunk": {"execute_steps": 4, "episodes": eps}}, mode_selection="best",
                   reported_mode="whole_chunk", provenance={"git_commit": "c0ffee", "config_hash": "abc"})
        run.mkdir(parents=True, exist_ok=True)
        (run / "eval.json").write_text(json.dumps(rec))
        if bb != BASELINE:
            rows = [dict(step=s, loss=1.0 / s + seed, gripper_acc=0.5 + s / 100) for s in (10, 20, 30)]
            rows.append(dict(step=20, loss=0.05 + seed, gripper_acc=0.7))  # a resumed run re-logs step 20
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(run / "eval.json")
    return paths
