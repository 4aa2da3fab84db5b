"""The aggregate stage's diagnostics and report pages on a small study laid out as the pipeline writes it:
learning curves from each run's metrics.jsonl, the SFT loss, the backbone x task heatmap's k/n, rollout
videos copied, linked from the per-task table and embedded in their report page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate import aggregate
from vlm4vla_core.aggregate.diagnostics import read_metrics, task_counts
from vlm4vla_core.benchmarks.video import write_mp4

from test_aggregate import check_pages

TASKS = ("reach-v3", "push-v3")
#: (backbone, ablation, seed) -> successes per task of 4 episodes each
RUNS = {("qwen", "full", 0): {"reach-v3": [1, 1, 0, 1], "push-v3": [0, 0, 0, 1]},
        ("qwen", "full", 1): {"reach-v3": [1, 0, 0, 0], "push-v3": [0, 0, 0, 0]},
        ("pali", "full", 0): {"reach-v3": [0, 0, 0, 0], "push-v3": [1, 1, 1, 1]},
        ("pali", "freeze_vision", 0): {"reach-v3": [0, 1, 0, 0], "push-v3": [0, 0, 0, 0]},
        ("zero-action", "none", 0): {"reach-v3": [0, 0, 0, 0], "push-v3": [0, 0, 0, 0]}}


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
                ep = dict(task=t, episode_seed=1000 * seed + i, success=bool(s), steps=10)
                if i < 2:  # the first two episodes of each task were filmed
                    ep["video"] = f"eval/videos/shard0/full/{t}_{i}.mp4"
                    write_mp4(run / ep["video"], [frame, frame + 100])
                eps.append(ep)
        rec = dict(study="pages", backbone=bb, family="f", benchmark="metaworld", ablation=abl, seed=seed,
                   metric="success_rate", modes={"whole_chunk": {"execute_steps": 4, "episodes": eps}}, mode_selection="best",
                   reported_mode="whole_chunk", provenance={"git_commit": "c0ffee", "config_hash": "abc"})
        run.mkdir(parents=True, exist_ok=True)
        (run / "eval.json").write_text(json.dumps(rec))
        if bb != "zero-action":
            rows = [dict(step=s, loss=1.0 / s + seed, gripper_acc=0.5 + s / 100) for s in (10, 20, 30)]
            rows.append(dict(step=20, loss=0.05 + seed, gripper_acc=0.7))  # a resumed run re-logs step 20
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(run / "eval.json")
    return paths


def test_diagnostics_and_rollouts_in_the_report_pages(tmp_path):
    paths = write_study(tmp_path)
    sft = tmp_path / "sft" / "qwen-mw" / "metrics.jsonl"
    sft.parent.mkdir(parents=True)
    sft.write_text("".join(json.dumps(dict(step=s, loss=2.0 / s)) + "\n" for s in (1, 2, 3)))
    out = tmp_path / "results"
    aggregate(paths, study_config(), out, n_boot=20, sft_logs=[sft])
    names = check_pages(out)  # every caption its own and true for its table (the rollouts column's note too)
    assert {"rollouts_metaworld", "learning_curves", "sft_loss", "heatmap_metaworld"} <= names

    for name in ("learning_curves", "sft_loss", "heatmap_metaworld", "ablation", "modes"):
        assert (out / "figures" / f"{name}.png").is_file(), name
        page = (out / "html" / f"{name}.html").read_text()
        assert "data:image/png;base64," in page and '<p class="caption">' in page, name

    m = read_metrics(tmp_path / "runs" / "qwen" / "metaworld" / "full" / "seed0" / "metrics.jsonl")
    assert list(m["step"]) == [10, 20, 30] and m.set_index("step")["loss"][20] == 0.05  # latest row of a step

    episodes = pd.read_csv(out / "episodes.csv")
    counts = task_counts(episodes, "metaworld").set_index(["backbone", "task"])
    assert tuple(counts.loc[("qwen", "reach-v3")]) == (4, 8)  # 3/4 + 1/4 pooled over two seeds
    assert tuple(counts.loc[("pali", "push-v3")]) == (4, 4)
    assert tuple(counts.loc[("zero-action", "push-v3")]) == (0, 4)
    assert ("pali", "reach-v3") in counts.index and len(counts) == 6  # freeze_vision is not in the heatmap

    # videos: one success and one failure per (backbone, regime, task) where filmed, from the lowest seed
    vids = sorted(p.relative_to(out).as_posix() for p in (out / "videos").rglob("*.mp4"))
    assert "videos/metaworld/qwen/full/reach-v3_success_seed0.mp4" in vids
    assert "videos/metaworld/qwen/full/push-v3_failure_seed0.mp4" in vids
    assert "videos/metaworld/qwen/full/push-v3_success_seed0.mp4" not in vids  # its filmed episodes failed
    assert not [v for v in vids if "seed1" in v and "reach-v3_success" in v]
    table = (out / "per_task_table.md").read_text()
    row = next(line for line in table.splitlines() if [c.strip() for c in line.split("|")[1:4]] == ["metaworld", "qwen", "full"])
    assert "[success](videos/metaworld/qwen/full/reach-v3_success_seed0.mp4)" in row
    html_table = (out / "html" / "per_task_table.html").read_text()
    assert '<a href="../videos/metaworld/qwen/full/reach-v3_success_seed0.mp4">success</a>' in html_table
    rollouts = (out / "html" / "rollouts_metaworld.html").read_text()
    assert rollouts.count("data:video/mp4;base64,") == len(vids)
    index = (out / "index.md").read_text()
    assert "(videos/metaworld/qwen/full/reach-v3_success_seed0.mp4" in index and "(html/rollouts_metaworld.html" in index
