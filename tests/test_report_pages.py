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
from vlm4vla_core.config import Study
from vlm4vla_core.testing.small_study import CLAIMS, SNAKEFILE, study_config, write_study

from test_aggregate import check_pages


def test_diagnostics_and_rollouts_in_the_report_pages(tmp_path):
    paths = write_study(tmp_path)
    sft = tmp_path / "sft" / "qwen-mw" / "metrics.jsonl"
    sft.parent.mkdir(parents=True)
    sft.write_text("".join(json.dumps(dict(step=s, loss=2.0 / s)) + "\n" for s in (1, 2, 3)))
    out = tmp_path / "results"
    aggregate(paths, Study.from_dict(study_config()), out, sft_logs=[sft])
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



def test_report_landing_page_opens_on_the_findings(tmp_path):
    """A real `snakemake --report` with the project's landing page (workflow/report/workflow.rst) and the report
    pages declared as aggregate.smk declares them: the landing page starts with one line per claim, its verdict,
    estimate and interval, and links that open the pages behind it; every page a finding cites was written."""
    import re
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    out = tmp_path / "results" / "pages"
    aggregate(write_study(tmp_path), Study.from_dict(study_config()), out, claims=tmp_path / "claims.yaml")
    claims = json.loads((out / "inference" / "claims.json").read_text())["claims"]

    index = (out / "index.md").read_text()
    section = index.split("## Findings", 1)[1].split("\n## ", 1)[0]
    for link in re.findall(r"\]\((html/[^)]+)\)", section):
        assert (out / link).is_file(), link
    rst = (out / "findings.rst").read_text()
    cited = re.findall(r"`([\w.-]+\.html)`_", rst)
    assert "inference_contrasts.html" in cited and "inference_regimes_table.html" in cited
    for name in cited:
        assert (out / "html" / name).is_file(), name

    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(rst=str(root / "workflow" / "report" / "workflow.rst")))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(study_config()))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml",
                          "--report", "report.html"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    page = (tmp_path / "report.html").read_text()
    desc = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", page).group(1))
    assert desc.index("Findings of study pages") < desc.index("About this study")
    for c in claims:
        line = desc.split(f"<strong>{c['verdict']}</strong>: {c['text'].replace('>', '&gt;').replace('<', '&lt;')}", 1)
        assert len(line) == 2, c["text"]
        line = line[1].split("</li>", 1)[0]
        assert f"estimate {c['estimate']:.3g} [{c['ci95'][0]:.3g}, {c['ci95'][1]:.3g}]" in line, line
        assert "app.showResultInfo('results/pages/html/inference_contrasts.html')" in line


def test_figures_draw_the_inference_layers_intervals(tmp_path, monkeypatch):
    """The training-regime bars and the contrasts plot draw exactly the 95% intervals of inference/cells.csv and
    inference/contrasts.csv (read back from the matplotlib artists), and write those numbers beside the figure."""
    from matplotlib.container import ErrorbarContainer

    from vlm4vla_core.aggregate import figures

    drawn = {}
    save = figures._save

    def capture(fig, out, name, note=None, plotted=None):
        drawn[name] = [seg for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)
                       for seg in c.lines[2][0].get_segments()]
        return save(fig, out, name, note, plotted)

    monkeypatch.setattr(figures, "_save", capture)
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    out = tmp_path / "results"
    aggregate(write_study(tmp_path), Study.from_dict(study_config()), out, claims=tmp_path / "claims.yaml")

    cells = pd.read_csv(out / "inference" / "cells.csv")
    policy = cells[cells["backbone"] != "zero-action"]
    bars = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in drawn["ablation"])  # vertical: (x, lo), (x, hi)
    assert bars == sorted((round(lo, 6), round(hi, 6)) for lo, hi in zip(policy["ci_low"], policy["ci_high"]))
    beside = pd.read_csv(out / "figures" / "ablation.csv")
    assert np.allclose(beside.sort_values(["backbone", "ablation"])[["estimate", "ci_low", "ci_high"]],
                       cells.sort_values(["backbone", "ablation"])[["estimate", "ci_low", "ci_high"]])

    contrasts = pd.read_csv(out / "inference" / "contrasts.csv")
    lines = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in drawn["contrasts"])  # horizontal: (lo, y), (hi, y)
    assert lines == sorted((round(lo, 6), round(hi, 6)) for lo, hi in zip(contrasts["ci_low"], contrasts["ci_high"]))
    assert (pd.read_csv(out / "figures" / "contrasts.csv")["prob_improvement"] == contrasts["prob_improvement"]).all()
    assert "contrasts" in check_pages(out)

    # the execution modes: each mode's cell; here every run has one mode, the reported one, so its cells are
    # the inference layer's (read from every mode's episodes rather than the reported mode's)
    full = policy[policy["ablation"] == "full"]
    modes = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in drawn["modes"])
    assert modes == sorted((round(lo, 6), round(hi, 6)) for lo, hi in zip(full["ci_low"], full["ci_high"]))
    beside = pd.read_csv(out / "figures" / "modes.csv").set_index("backbone")
    assert np.allclose(beside.loc[full["backbone"], "mean"], full["estimate"])


def test_outcomes_of_hand_made_episode_records():
    """Each plug-in names how an episode ended and when it succeeded, from what its record holds."""
    from vlm4vla_core.benchmarks import get

    mw, calvin, bridge = get("metaworld"), get("calvin"), get("simpler_bridge")
    entry = {"max_steps": 120}
    assert mw.outcome(dict(success=True, steps=37), entry) == "success" and mw.success_step(dict(success=True, steps=37)) == 37
    assert mw.outcome(dict(success=False, steps=120), entry) == "timed out"
    assert mw.outcome(dict(success=False, steps=50), entry) == "ended early"
    assert mw.outcome(mw.failure_record("RuntimeError: boom"), entry) == "raised"
    assert mw.success_step(dict(success=False, steps=120)) is None
    chain = dict(success=False, completed=2, steps=500, subtask_results=[{"task": "a", "success": True, "steps": 40}] * 2
                 + [{"task": "c", "success": False, "steps": 360}])
    assert calvin.outcome(chain, {"max_steps": 360}) == "stopped at subtask 3"
    assert calvin.outcome(dict(success=True, completed=5, steps=700), {"max_steps": 360}) == "success"
    undone = dict(success=False, success_any_step=True, first_success_step=30, steps=60, truncated=True)
    assert bridge.outcome(undone, {}) == "succeeded, then undone"
    assert bridge.outcome(dict(undone, success_any_step=False), {}) == "timed out"
    assert bridge.success_step(dict(undone, success=True)) == 30  # the episode ran on to its limit


def test_outcomes_table_and_figure(tmp_path):
    """Time to success and the failure breakdown from hand-made records, one written before outcomes existed."""
    eps = [dict(task="t", episode_seed=i, success=s, steps=st, outcome=o, success_step=st if s else None)
           for i, (s, st, o) in enumerate([(True, 10, "success"), (True, 30, "success"), (True, 20, "success"),
                                           (False, 120, "timed out"), (False, None, "raised")])]
    old = [dict(task="t", episode_seed=i, success=s, steps=st) for i, (s, st) in enumerate([(True, 40), (False, 120)])]
    paths = []
    for bb, episodes in (("qwen", eps), ("pali", old)):
        run = tmp_path / bb
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(dict(
            study="pages", backbone=bb, family="f", benchmark="metaworld", ablation="full", seed=0, metric="success_rate",
            modes={"whole_chunk": {"execute_steps": 4, "episodes": episodes}}, reported_mode="whole_chunk", mode_selection="whole_chunk")))
        paths.append(run / "eval.json")
    out = tmp_path / "out"
    aggregate(paths, Study.from_dict(study_config()), out)
    table = pd.read_csv(out / "outcomes_table.csv").set_index("backbone")
    q = table.loc["qwen"]
    assert (q["episodes"], q["successes"], q["n_success"], q["n_timed out"], q["n_raised"], q["n_failed"]) == (5, 3, 3, 1, 1, 0)
    assert (q["steps_median"], q["steps_q1"], q["steps_q3"], q["steps_mean"]) == (20, 15, 25, 20)
    p = table.loc["pali"]
    assert (p["n_success"], p["n_failed"], p["steps_median"]) == (1, 1, 40)
    md = (out / "outcomes_table.md").read_text()
    assert "| 20 [15, 25] (20.0) " in md and "| 1/5 " in md
    assert (out / "figures" / "outcomes.png").is_file() and (out / "html" / "outcomes.html").is_file()
    assert "outcomes_table" in check_pages(out)  # the notes of the outcomes present, and only those


def test_vqa_scatter_draws_a_line_per_family_with_the_within_family_slope(tmp_path, monkeypatch):
    """With family as a covariate (y ~ x + C(family)), each family's fitted line has the common slope and
    passes through the family's mean point: drawn so, and equal to statsmodels' fitted values."""
    import statsmodels.formula.api as smf

    from vlm4vla_core.aggregate import figures
    from vlm4vla_core.aggregate.slopes import within_family

    x = np.array([10.0, 20.0, 30.0, 15.0, 25.0, 35.0])
    y = np.array([12.0, 19.0, 33.0, 40.0, 47.0, 58.0])
    fam = ["a", "a", "a", "b", "b", "b"]
    names = [f"m{i}" for i in range(6)]
    reg = dict(benchmark="mw", metric="success_rate", n=6, slope=1.0, r2=0.5, p_value=0.1, spearman_rho=0.5,
               points=[dict(backbone=b, vqa_score=xi, mean=yi, std=None) for b, xi, yi in zip(names, x, y)])
    within = within_family(x, y, fam)
    lines = {}
    save = figures._save

    def capture(fig, out, name, note=None, plotted=None):
        lines.update({ln.get_label(): ln.get_xydata() for ln in fig.axes[0].get_lines()
                      if ln.get_label().startswith("family")})
        return save(fig, out, name, note, plotted)

    monkeypatch.setattr(figures, "_save", capture)
    figures.vqa_scatter(reg, tmp_path, "vqa_mw", within=within, families=dict(zip(names, fam)))
    fit = smf.ols("y ~ x + C(family)", pd.DataFrame(dict(x=x, y=y, family=fam))).fit()
    assert len(lines) == 2
    for label, xy in lines.items():
        f = "a" if label.startswith("family a") else "b"
        expected = fit.predict(pd.DataFrame(dict(x=xy[:, 0], family=[f] * len(xy))))
        assert np.allclose(xy[:, 1], expected), label
