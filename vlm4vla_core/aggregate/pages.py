"""The report's pages: every table, figure and rollout set as one standalone HTML page under
``html/`` with its caption on the page, and the report category it belongs to.

Categories follow the study's questions, in this order: which backbone is best (main results),
does freezing or training from scratch hurt (training regimes), does embodied SFT help, does VQA
ability predict control, then diagnostics (learning curves, baseline, execution modes, rollout
videos) and provenance; the claims and their verdicts come first (the findings). The Snakemake report sorts categories by name, hence the numbers.

Captions live here, one per kind of output; a caption states only what its table shows: the
sentence on the cells' intervals is added exactly when the table has such cells.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from vlm4vla_core.io import write_text

CATEGORIES = ("0. Findings", "1. Main results", "2. Training regimes", "3. Embodied SFT", "4. VQA vs control", "5. Diagnostics",
              "6. Provenance")
FINDINGS, MAIN, REGIMES, SFT, VQA, DIAGNOSTICS, PROVENANCE = CATEGORIES

SPREAD = ("Cells read estimate [95% interval], seeds x evaluation episodes per seed: the estimate is the mean over "
          "seeds; with episode records the interval is the inference layer's (seed variance pooled over the "
          "benchmark's arms, per task over the arms on that task, plus the cell's episode variance; 'episodes only' "
          "with one seed), from run values alone the seeds' variance pooled over the table's cells (or the Wilson "
          "interval of the episodes); '? ep, no interval' marks a value without an episode count, as a transcribed "
          "published number. The CSV keeps the mean, the standard deviation over seeds and the interval as numbers.")
#: a table cell with the spread convention above (``inference.cell_label``)
SPREAD_CELL = r"\d+ seeds? x [\d?-]+ ep"

#: name -> (category, title, caption); names ending in "_" match as a prefix (per benchmark or VQA set)
PAGES: dict[str, tuple[str, str, str]] = {
    "inference_claims": (FINDINGS, "Findings: the declared claims and their verdicts",
                         "Each claim of the claims file with its verdict from the inference layer (supported, "
                         "contradicted, equivalent, inconclusive), the estimate and its 95% interval, the p-value in "
                         "the claimed direction adjusted within the claim's family, the smallest effect of interest "
                         "(SESOI) and the minimum detectable effect (MDE) at this study's precision."),
    "main_table": (MAIN, "Main results: full fine-tuning",
                   "Backbone x benchmark under full fine-tuning (CALVIN: average completed length 0-5; other "
                   "benchmarks: success rate in %), with the zero-action baseline where it was evaluated."),
    "per_task_table": (MAIN, "Per-task results",
                       "Every task of every benchmark, backbone and training regime; 'all' pools every episode. "
                       "A task's interval pools the seed variance over the arms that ran that task (one seed: "
                       "the task's episodes alone)."),
    "heatmap_": (MAIN, "Success per task",
                 "Backbone x task under full fine-tuning (and the zero-action baseline): colour = success rate, "
                 "annotation = successes k of n episodes, pooled over seeds."),
    "calvin_length_table": (MAIN, "CALVIN: success rate at chain lengths 1..5",
                            "Share of the 5-subtask chains with at least L subtasks completed in a row, for "
                            "L = 1..5, and the average completed length (their sum / 100)."),
    "calvin_lengths": (MAIN, "CALVIN: success by chain length",
                       "Share of chains with at least L subtasks completed in a row, L = 1..5, full fine-tuning "
                       "(and the zero-action baseline); point = the estimate, error bar = its 95% interval from "
                       "the inference layer (a success-rate cell of the chains' outcome 'at least L subtasks "
                       "done'); the numbers drawn are in figures/calvin_lengths.csv."),
    "published_vs_reproduced": (MAIN, "Reproduced vs published: y = x",
                                "Each reproduced cell with a published counterpart against the published value, "
                                "the reproduced cell's 95% interval (inference/cells) as an error bar, and the "
                                "line y = x; the numbers drawn are in figures/published_vs_reproduced.csv."),
    "published_table": (MAIN, "Reproduced vs published",
                        "Each reproduced cell beside the value published in the VLM4VLA paper for the same "
                        "backbone (matched by hub id), benchmark kind and training regime, and the difference "
                        "(reproduced - published)."),
    "ablation_table": (REGIMES, "Training regimes",
                       "Every backbone under every training regime per benchmark, with the difference (Δ) to full "
                       "fine-tuning. A Δ cell is the contrast of the two arms with its 95% interval "
                       "(paired on (seed, episode) where both ran the same episodes; from run values alone the "
                       "two cells' variances add; the plain difference where a cell has no variance to tell)."),
    "freezing_table": (REGIMES, "Module freezing",
                       "Laid out as in the paper: all trained, vision encoder frozen, word embeddings frozen, and "
                       "the differences (Δ) to all trained; each cell lists the benchmarks in the order of its "
                       "column header. A Δ cell is the contrast of the two arms with its 95% interval "
                       "(paired on (seed, episode) where both ran the same episodes; from run values alone the "
                       "two cells' variances add; the plain difference where a cell has no variance to tell)."),
    "scratch_table": (REGIMES, "From scratch vs pretrained",
                      "The same architecture fine-tuned from the pretrained VLM weights and from a random "
                      "initialisation, and the difference. A Δ cell is the contrast of the two arms with its "
                      "95% interval "
                      "(paired on (seed, episode) where both ran the same episodes; from run values alone the "
                      "two cells' variances add; the plain difference where a cell has no variance to tell)."),
    "ablation": (REGIMES, "Training regimes per benchmark",
                 "Each backbone under each training regime it ran; bar = the cell's estimate, error bar = its 95% "
                 "interval from the inference layer (inference/cells; no error bar where the input is a results "
                 "table without episodes); the dashed line (labelled with its value) is the zero-action baseline. "
                 "The numbers drawn are in figures/ablation.csv."),
    "contrasts": (REGIMES, "Contrasts with 95% intervals",
                  "Every comparison of the inference layer (regime vs full, SFT variant vs base, backbone pairs, "
                  "policy vs zero-action), one panel per family: the difference a − b with its 95% interval, "
                  "labelled with the probability of improvement and the p-value adjusted within the family; the "
                  "numbers drawn are in figures/contrasts.csv."),
    "embodied_sft_table": (SFT, "Embodied-SFT variants",
                           "Each variant under the base backbone it was fine-tuned from, with its measured VQA "
                           "scores and the difference (Δ) of its control result to the base's. A Δ cell is the "
                           "contrast of the two arms with its 95% interval "
                           "(paired on (seed, episode) where both ran the same episodes; from run values alone the "
                           "two cells' variances add; the plain difference where a cell has no variance to tell)."),
    "sft_loss": (SFT, "Embodied SFT: loss curves",
                 "The SFT loss (cross-entropy of the answer tokens) of each variant against the SFT step, one run "
                 "per variant (no band)."),
    "regression_table": (VQA, "Control vs VQA score (the config's sourced scores)",
                         "Per benchmark, the control metric (full fine-tuning, mean over seeds) on the VQA score "
                         "given in the config: OLS slope with its 95% interval, R², p-value, the Theil-Sen slope, "
                         "Spearman's rho with its permutation p (exact up to 9 backbones), the errors-in-variables "
                         "slope (where the scores carry a question count), the influential points (Cook's distance, "
                         "leverage) with the slope refitted without them, and the minimum detectable slope; "
                         "n = backbones with a score. Every number, with the equivalence test and the slope x "
                         "benchmark interaction, is in inference/slopes.json."),
    "regression_": (VQA, "Control vs measured VQA score",
                    "Per benchmark, the control metric (full fine-tuning, mean over seeds) on the VQA score "
                    "measured on this set by the vqa-eval stage, with the estimators of the sourced scores' "
                    "regression table (OLS, Theil-Sen, permutation p of Spearman, errors-in-variables, influence, "
                    "minimum detectable slope); n = backbones measured; numbers in inference/slopes.json."),
    "vqa_": (VQA, "Control vs VQA score",
             "One point per backbone with a VQA score (full fine-tuning; the cell's estimate, error bar = its 95% "
             "interval from the inference layer, inference/cells; no error bar without episode records), the OLS "
             "fit and its pointwise 95% confidence band for the mean; where the backbones come from two or more "
             "families and the within-family fit (family as a covariate, inference/slopes.json) exists, one dotted "
             "line per family with that common slope; where the paper publishes a backbone's value, a hollow "
             "diamond beside the reproduced point. The numbers drawn are in the figure's CSV (figures/), the "
             "fits in the matching regression table."),
    "learning_curves": (DIAGNOSTICS, "Learning curves",
                        "Training loss (log scale) and gripper accuracy against the optimizer step, full "
                        "fine-tuning, one line per backbone: the mean over seeds, the band spans the seeds' range "
                        "(from each run's metrics.jsonl)."),
    "outcomes_table": (DIAGNOSTICS, "How episodes ended: time to success and failures",
                       "Per benchmark, backbone and training regime (reported execution mode, pooled over seeds and "
                       "tasks): the environment steps to success over the successful episodes, as median [first "
                       "quartile, third quartile] (mean), and each outcome as episodes k of n."),
    "outcomes": (DIAGNOSTICS, "How episodes ended",
                 "Left: the share of each outcome (as in the outcomes table) per backbone and training regime; "
                 "right: the steps to success of the successful episodes (box: quartiles, line: median, whiskers: "
                 "1.5 IQR). The numbers are in figures/outcomes.csv."),
    "baseline_table": (DIAGNOSTICS, "Policies vs the zero-action baseline",
                       "Each policy against the zero-action baseline on the same episodes: successes k/n, odds "
                       "ratio and one-sided Fisher exact p-value, pooled over tasks and seeds (Fisher's test "
                       "takes every episode as an independent trial, ignoring the seeds); with episode records, "
                       "the contrast of the two arms with its 95% interval from the inference layer beside it "
                       "(paired on (seed, episode) where both ran the same episodes)."),
    "modes_table": (DIAGNOSTICS, "Execution modes",
                    "The value of every execution mode (steps executed before re-planning: whole_chunk, half_chunk, "
                    "single_step) and how often each mode was the reported one. The modes not reported keep "
                    "no episode records, so each interval comes from the runs' values (seed variance pooled over "
                    "the cells of a benchmark and mode)."),
    "modes": (DIAGNOSTICS, "Success by execution mode",
              "Full fine-tuning evaluated executing the whole action chunk, half of it, or one step before "
              "re-planning; bar = the mode's cell estimate, error bar = its 95% interval from the inference layer "
              "(that mode's episodes); the numbers drawn are in figures/modes.csv."),
    "rollouts_": (DIAGNOSTICS, "Rollout videos",
                  "A successful and a failed episode (where there was one) per backbone, training regime and task, "
                  "from the reported execution mode of the lowest seed that has one; the instruction and the "
                  "outcome are written above the policy's input frames, one frame per policy call."),
    "inference_main_table": (MAIN, "Main results with 95% intervals",
                             "Backbone x benchmark under full fine-tuning, each cell the estimate with its 95% "
                             "interval from the inference layer (seed variance pooled over the benchmark's cells, "
                             "episode variance within runs), with the seeds and episodes it rests on."),
    "inference_cells": (MAIN, "Every cell with its 95% interval",
                        "Every (benchmark, arm) cell: estimate [95% interval], seeds x episodes per seed, and the "
                        "design (crossed: every arm ran the same episodes; nested: each seed its own)."),
    "inference_regimes_table": (REGIMES, "Training regimes with 95% intervals",
                                "Each training regime's cell with its 95% interval and its contrast (Δ) to full "
                                "fine-tuning of the same backbone, paired on (seed, episode) where both ran the "
                                "same episodes."),
    "inference_contrasts": (REGIMES, "Contrasts",
                            "Every comparison the tables show (regime vs full, SFT variant vs base, backbone pairs, "
                            "policy vs zero-action): difference with its 95% interval, probability of improvement, "
                            "and the p-value adjusted within each family of comparisons."),
    "inference_mixed_model": (DIAGNOSTICS, "Mixed model",
                              "Per benchmark, success against arm with random effects for seed within arm and for "
                              "episode (statsmodels), its marginal rates beside the simple means."),
    "backbones_table": (PROVENANCE, "Backbones",
                        "Published size, measured parameter count (B = 10⁹, M = 10⁶, k = 10³), image tokens per "
                        "frame, prompt length and the VQA score the config gives, with its source."),
    "provenance": (PROVENANCE, "Provenance",
                   "The commit, config hash, package versions and hardware of this aggregation, and the commits "
                   "and config hashes of the runs it read."),
}


#: sentences about a column, added to a table's caption exactly when the table has a column whose name starts so
COLUMN_NOTES: dict[str, dict[str, str]] = {
    "outcomes_table": {"timed out": "Timed out: the step budget ran out.",
                       "ended early": "Ended early: the episode stopped before its budget without success.",
                       "stopped at subtask": "Stopped at subtask k (CALVIN): the chain's k-th subtask ran out of "
                                             "steps.",
                       "succeeded, then undone": "Succeeded, then undone (SimplerEnv, final-step rule): success at "
                                                 "some step but not at the last.",
                       "raised": "Raised: the simulator or the protocol raised (the record keeps the error).",
                       "failed": "Failed: a failure recorded before episode records named their outcome."},
    "per_task_table": {"rollouts": "The rollouts column links the row's rollout videos (files under videos/ of the "
                                   "results folder); the report's rollout pages play them."},
}


def _entry(name: str) -> tuple[str, str, str]:
    if name in PAGES:
        return PAGES[name]
    for key in sorted((k for k in PAGES if k.endswith("_")), key=len, reverse=True):
        if name.startswith(key):
            return PAGES[key]
    raise KeyError(f"no report page is declared for {name!r} (vlm4vla_core/aggregate/pages.py: PAGES)")


def category(name: str) -> str:
    """The report category of a page (``html/<name>.html``)."""
    return _entry(name)[0]


def caption(name: str, shown: pd.DataFrame | None = None) -> str:
    """The caption of ``name``; for a table, the spread convention only where its cells carry an interval."""
    text = _entry(name)[2]
    for column, note in COLUMN_NOTES.get(name, {}).items():
        if shown is not None and any(str(c).startswith(column) for c in shown.columns):
            text += " " + note
    if shown is not None and shown.astype(str).apply(lambda c: c.str.contains(SPREAD_CELL)).to_numpy().any():
        text += " " + SPREAD
    return text


STYLE = ("body{font-family:sans-serif;font-size:13px;max-width:1400px}table{border-collapse:collapse}"
         "th,td{padding:3px 8px;border-bottom:1px solid #ccc;text-align:left}th{border-bottom:2px solid #333}"
         "p.caption{max-width:60em}img{max-width:100%}figure{display:inline-block;margin:4px 10px 10px 0}"
         "figcaption{font-size:12px}")


def page(title: str, text: str, body: str, foot: str) -> str:
    """A standalone HTML page: title, caption, content, provenance footer."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h3>{html.escape(title)}</h3>\n"
            f"<p class=\"caption\">{html.escape(text)}</p>\n{body}\n<p><em>{html.escape(foot)}</em></p>\n</body></html>\n")


def title(name: str) -> str:
    t = _entry(name)[1]
    for prefix in ("heatmap_", "rollouts_"):
        if name.startswith(prefix):
            return f"{t}: {name[len(prefix):]}"
    if name.startswith("vqa_") or name.startswith("regression_"):
        return f"{t} ({name.split('_', 1)[1].removesuffix('_table')})"
    return t


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def figure_page(out: Path, name: str, png: Path, foot: str) -> Path:
    """html/<name>.html: the figure (embedded PNG) under its caption."""
    body = f"<img alt=\"{html.escape(name)}\" src=\"{_data_uri(png, 'image/png')}\">"
    return write_text(out / "html" / f"{name}.html", page(title(name), caption(name), body, foot))


def rollouts_page(out: Path, benchmark: str, videos: pd.DataFrame, foot: str) -> Path:
    """html/rollouts_<benchmark>.html: the benchmark's rollout videos (embedded MP4s), one row per (backbone,
    regime, task). ``videos``: rows of ``diagnostics.copy_videos`` (file relative to ``out``)."""
    name = f"rollouts_{benchmark}"
    parts = []
    for (bb, abl, task), g in videos.groupby(["backbone", "ablation", "task"], sort=False):
        parts.append(f"<h4>{html.escape(bb)} / {html.escape(abl)} / {html.escape(task)}</h4>")
        for _, r in g.iterrows():
            parts.append(f"<figure><video controls muted loop preload=\"metadata\" width=\"320\" "
                         f"src=\"{_data_uri(out / r['file'], 'video/mp4')}\"></video>"
                         f"<figcaption>{html.escape(r['outcome'])}, seed {int(r['seed'])} "
                         f"({html.escape(r['file'])})</figcaption></figure>")
    return write_text(out / "html" / f"{name}.html", page(title(name), caption(name), "\n".join(parts), foot))


def provenance_page(out: Path, prov: dict, runs: list[dict], foot: str) -> Path:
    """html/provenance.html: this aggregation's provenance and each run's commit and config hash."""
    rows = pd.DataFrame([{k: (prov.get(k) if not isinstance(prov.get(k), dict) else
                              ", ".join(f"{a} {b}" for a, b in prov[k].items()))
                          for k in ("git_commit", "config_hash", "timestamp_utc", "versions", "hardware")}])
    counts = pd.DataFrame(runs).value_counts().rename("runs").reset_index() if runs else pd.DataFrame()
    body = rows.T.to_html(header=False, border=0, escape=True)
    if len(counts):
        body += "\n<h4>Runs read</h4>\n" + counts.to_html(index=False, border=0, escape=True)
    return write_text(out / "html" / "provenance.html", page(title("provenance"), caption("provenance"), body, foot))
