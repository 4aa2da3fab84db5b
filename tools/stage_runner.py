"""Run a stage of the pipeline as the DAG would, its output in a log file, and time it (for the checks)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, log: Path) -> float:
    """``python -m vlm4vla_core ARGS`` from the repository root; exits with the log's name on failure.
    Returns the wall time in seconds."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        res = subprocess.run([sys.executable, "-m", "vlm4vla_core", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode:
        sys.exit(f"{args[0]} failed (exit {res.returncode}); see {log}")
    return time.perf_counter() - t0


def check_study(out: Path, study: str, benchmark: str, entry: dict, train_steps: int) -> Path:
    """``out/study.yaml``: the demo's settings cut to one tiny backbone (``out/backbone``), one seed, full
    fine-tuning, one execution mode and no pretraining or embodied-SFT axis, with ``benchmark: entry`` as its only
    benchmark. Returns its path."""
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    for key in ("pretraining", "embodied_sft", "vqa_sets", "claims"):  # the claims name the demo's arms
        raw.pop(key, None)
    raw.update(study=study, seeds=[0], ablations=["full"])
    raw["backbones"] = {"tiny-qwen2.5-vl": {"family": "qwen2_5_vl", "source": str(out / "backbone")}}
    raw["benchmarks"] = {benchmark: {**entry, "modes": ["whole_chunk"]}}
    raw["training"].update(max_steps=train_steps, checkpoint_every=train_steps, log_every=5, micro_batch=8)
    raw["evaluation"].update(modes=["whole_chunk"], mode_selection="whole_chunk", baseline=False)
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_chain(study: Path, benchmark: str, out: Path) -> dict[str, float]:
    """The data, training and evaluation stages of the check study's one run, as the DAG chains them:
    ``out/data``, ``out/run``, ``out/eval.json``, each with its log; the wall time of each stage."""
    backbone = ["--backbone", "tiny-qwen2.5-vl", "--ablation", "full", "--seed", "0"]
    return {
        "data stage": run("data", "--config", str(study), "--benchmark", benchmark, "--out", str(out / "data"),
                          log=out / "data.log"),
        "training": run("train", "--config", str(study), "--benchmark", benchmark, *backbone, "--data",
                        str(out / "data"), "--run-dir", str(out / "run"), log=out / "train.log"),
        "evaluation": run("evaluate", "--config", str(study), "--benchmark", benchmark, *backbone, "--policy",
                          str(out / "run" / "policy"), "--out", str(out / "eval.json"), log=out / "evaluate.log"),
    }
