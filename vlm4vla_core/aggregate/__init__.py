"""Aggregate stage: per-run evaluation results -> the study's tables, figures and regressions.

Input is either the evaluation JSONs of a study (``--runs``) or a long-format
results CSV (``--results-csv``: published numbers, another group's results).
Everything lands in one folder (results/<study>/), each file written
atomically, with index.md listing what was written and why anything is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

from vlm4vla_core.aggregate.files import read_json, write_json, write_text
from vlm4vla_core.aggregate.results import (
    ALL,
    ZERO,
    Results,
    ResultsError,
    benchmark_names,
    load_results_csv,
    load_runs,
    results_from_runs,
    measured_vqa,
    vqa_scores,
)
from vlm4vla_core.aggregate.stats import (baseline_comparison, calvin_length_intervals, calvin_length_success,
                                          mode_intervals, summarize)
from vlm4vla_core.config import Study

__all__ = ["aggregate", "main", "results_from_runs", "load_runs", "load_results_csv", "summarize", "ResultsError"]

DESCRIPTIONS = {
    "results": "long-format results: one row per (backbone, benchmark, ablation, seed, task); task 'all' pools the run",
    "episodes": "every evaluation episode of the reported mode of every run",
    "provenance": "provenance of this aggregation and of every input run",
    "backbones_table": "backbones: published size, measured parameters (B/M/k), image tokens, prompt length, VQA score and source",
    "main_table": "backbone x benchmark, full fine-tuning (and the zero-action baseline): estimate [95% interval], seeds x episodes",
    "ablation_table": "backbone x training regime per benchmark, with the difference to full fine-tuning",
    "per_task_table": "every task of every (benchmark, backbone, regime), with links to its rollout videos",
    "videos": "rollout videos (MP4) per (benchmark, backbone, regime): a successful and a failed episode per task",
    "html": "the report's pages: each table, figure and rollout set with its caption (html/<name>.html)",
    "figures/learning_curves": "loss and gripper accuracy against the step per backbone (band: range over seeds)",
    "figures/sft_loss": "the SFT loss of each embodied-SFT variant against the step",
    "modes_table": "every execution mode (whole_chunk / half_chunk / single_step before re-planning) and how often each was reported",
    "outcomes_table": "per (benchmark, backbone, regime): steps to success (median, quartiles, mean) and each outcome "
                      "(success, timed out, raised, CALVIN's subtask the chain stopped at) as k/n",
    "figures/outcomes": "outcome shares (stacked bars) and steps to success (box plots) per backbone and regime",
    "baseline_table": "each policy vs the zero-action baseline on the same episodes: k/n and one-sided Fisher exact p",
    "regression_table": "control (full fine-tuning) on VQA score per benchmark: OLS, Theil-Sen, exact Spearman p, "
                        "errors-in-variables, influence, minimum detectable slope (numbers: inference/slopes.json)",
    "freezing_table": "module freezing as in the paper: all trained / vision frozen / word embeddings frozen, with Δ",
    "scratch_table": "from scratch vs pretrained initialisation (full fine-tuning otherwise), with the difference",
    "embodied_sft_table": "embodied-SFT variants grouped under their base backbone, with their measured VQA scores and the difference to the base",
    "published_table": "each reproduced cell beside its published value (vlm4vla_core/published/published.yaml) and the difference",
    "calvin_length_table": "CALVIN success rate at chain lengths 1..5 (share of chains with >= L subtasks completed)",
    "figures/calvin_lengths": "CALVIN success rate by chain length (error bars: 95% intervals of the inference layer)",
    "figures/ablation": "bar chart of the training regimes per benchmark (error bars: 95% intervals, inference/cells)",
    "figures/contrasts": "every contrast with its 95% interval, P(improvement) and adjusted p (inference/contrasts)",
    "figures/published_vs_reproduced": "reproduced vs published per cell, with y = x and the reproduced 95% interval",
    "figures/heatmap": "backbone x task success under full fine-tuning, each cell annotated with k/n",
    "figures/modes": "bar chart of the execution modes per benchmark (error bars: 95% intervals of each mode's cell)",
    "inference/cells": "every (benchmark, arm) as estimate [95% interval], seeds x episodes (docs/statistics.md)",
    "inference/main_table": "main table with every cell as estimate [95% interval], seeds x episodes",
    "inference/regimes_table": "training regimes with intervals and each regime's paired contrast to full fine-tuning",
    "inference/contrasts": "every comparison the tables show: difference, 95% interval, P(improvement), adjusted p",
    "inference/variance_components": "seed and episode variance components pooled per benchmark (read by `plan`)",
    "inference/mixed_model": "reference analysis: statsmodels MixedLM marginal means beside the simple means",
    "inference/slopes": "VQA-vs-control: OLS, Theil-Sen, influence, exact Spearman p, errors-in-variables, "
                        "equivalence, power, slope x benchmark interaction",
    "findings": "the findings (a line per claim: verdict, estimate, interval, the pages behind it) that the "
                "Snakemake report's landing page includes",
    "inference/claims": "a verdict per claim of the claims file (supported, contradicted, equivalent, inconclusive)",
}


def aggregate(inputs, config: Study, out_dir: str | Path, reports=None, vqa=None, claims=None,
              sft_logs=None) -> list[Path]:
    """Write every artefact of a study into ``out_dir``; returns the paths written.

    ``vqa``: optional measured VQA score JSONs (``vqa-eval`` stage, ``vqa/<backbone>/<set>.json``); each
    set gets its own regression of control on the measured score next to the config's sourced scores.
    ``claims``: a claims file (default: the config's ``claims``); inference/ gets claims.md with a verdict each.

    ``inputs`` is a list of run JSON paths, or one results CSV path (str/Path
    ending in .csv), or an already loaded ``Results``. ``reports``: optional
    backbone report JSONs (``backbone-report`` stage) for the backbones table. ``sft_logs``: the SFT
    runs' metrics.jsonl (``sft/<variant>/metrics.jsonl``) for the SFT loss curves; the training curves
    come from the metrics.jsonl next to each run's evaluation JSON.
    """
    from vlm4vla_core.aggregate import diagnostics, figures, pages, tables
    from vlm4vla_core.aggregate.tables import footer
    from vlm4vla_core.provenance import provenance

    from vlm4vla_core.aggregate.inference_outputs import load_checked_claims, write_inference

    claims = load_checked_claims(claims if claims is not None else config.claims, config)  # before any work
    if isinstance(inputs, Results):
        res = inputs
    elif isinstance(inputs, (str, Path)) and str(inputs).endswith(".csv"):
        res = load_results_csv(inputs, config)
    else:
        res = load_runs([inputs] if isinstance(inputs, (str, Path)) else list(inputs), config)
    out = Path(out_dir)
    prov = provenance(config.raw)
    benches = benchmark_names(config)
    bench_order = [b for b in benches if b in set(res.results["benchmark"])] + sorted(
        set(res.results["benchmark"]) - set(benches))
    written: list[Path] = []
    notes: list[str] = []
    unknown = sorted(set(res.results["backbone"]) - set(config.backbones) - set(config.variants()) - {ZERO})
    if unknown:
        notes.append(f"backbones not in the config (no VQA score, listed after the config's): {', '.join(unknown)}")

    stamp = dict(git_commit=prov.get("git_commit", "unknown"), config_hash=prov.get("config_hash", "unknown"))
    written.append(write_text(out / "results.csv", res.results.assign(**stamp).to_csv(index=False)))
    written += tables.write_table(out, "backbones_table", *tables.backbones_table(config, load_reports(reports or [], config)),
                                  prov)
    if res.episodes is not None:
        written.append(write_text(out / "episodes.csv", res.episodes.assign(**stamp).to_csv(index=False)))

    from vlm4vla_core.aggregate import inference as inf

    cells = inf.table_cells(res)  # every table cell with its 95% interval (docs/statistics.md)
    deltas = inf.Deltas(res, cells)  # every Δ cell with its contrast's interval
    written += tables.write_table(out, "main_table", *tables.main_table(cells, config, bench_order), prov)
    written += tables.write_table(out, "ablation_table", *tables.ablation_table(cells, config, bench_order, deltas), prov)
    measured = measured_vqa(vqa or [])
    optional = [
        ("freezing_table", tables.freezing_table(cells, config, bench_order, deltas), "no run froze a module"),
        ("scratch_table", tables.scratch_table(cells, config, bench_order, deltas), "no from_scratch run"),
        ("embodied_sft_table", tables.embodied_sft_table(cells, config, bench_order,
                                                         tables.NOT_RUN if res.episodes is not None else "no result",
                                                         vqa=measured, deltas=deltas),
         "the config lists no embodied_sft variants"),
    ]
    for name, table, why in optional:
        if table is None:
            notes.append(f"{name} not written: {why}")
        else:
            written += tables.write_table(out, name, *table, prov)
    videos = pd.DataFrame()
    if res.episodes is not None:
        videos, copied = diagnostics.copy_videos(diagnostics.pick_videos(res.episodes, config), out)
        written += copied
    written += tables.write_table(out, "per_task_table", *tables.per_task_table(cells, config, bench_order,
                                                                                diagnostics.video_links(videos)), prov)
    lengths = calvin_length_success(res.episodes) if res.episodes is not None else None
    if lengths is not None and not lengths.empty:
        written += tables.write_table(out, "calvin_length_table", *tables.calvin_length_table(
            lengths, config, bench_order, inf.length_cells(inf.episode_frame(res))), prov)
    elif (res.results["metric"] == "avg_len").any():
        notes.append("CALVIN results without episode records (results CSV): calvin_length_table and "
                     "figures/calvin_lengths are not written")
    published = None  # the published table's numbers, where a reproduced cell has a published counterpart
    if res.episodes is not None:
        from vlm4vla_core.published import published_results

        pub = published_results(config)
        pub_numbers, pub_shown = tables.published_table(cells, config, bench_order, pub)
        if pub_numbers["published"].notna().any():
            published = pub_numbers
            written += tables.write_table(out, "published_table", pub_numbers, pub_shown, prov)
        else:
            notes.append("published_table not written: no reproduced cell has a published counterpart "
                         "(" + "; ".join(sorted(set(pub_numbers["note"].dropna()))) + ")")
        done = set(zip(res.results["backbone"], res.results["benchmark"], res.results["ablation"]))
        ours = pub[pub["backbone"].isin(list(config.backbones)) & pub["benchmark"].isin(benches)]
        left = [k for k in zip(ours["backbone"], ours["benchmark"], ours["ablation"]) if k not in done]
        if left:
            notes.append(f"{len(left)} published cell(s) of this config's backbones and benchmarks have no reproduced "
                         f"result: {', '.join('/'.join(k) for k in left)}")
    else:
        notes.append("published_table not written: the input is a results table, not a study's runs")
    if res.modes is not None:
        written += tables.write_table(out, "modes_table", *tables.modes_table(res.modes, config, bench_order), prov)
    else:
        notes.append("no per-mode results in a results CSV: modes_table and figures/modes are not written")

    if res.episodes is not None:  # how the episodes ended: time to success, failures by kind
        counts = diagnostics.outcome_counts(res.episodes, config, bench_order)
        written += tables.write_table(out, "outcomes_table", *diagnostics.outcomes_table(counts), prov)
    base_rows, base_notes = baseline_comparison(res)
    notes += base_notes
    written += tables.write_table(out, "baseline_table", *tables.baseline_table(base_rows, deltas), prov)
    written.append(write_json(out / "baseline.json", dict(
        test="scipy.stats.fisher_exact, alternative='greater' (policy succeeds more often than zero-action)",
        pooling="success counts pooled over tasks and seeds, on the episodes both were evaluated on",
        comparisons=base_rows, notes=base_notes, provenance=prov)))

    # the inference layer first: its slopes (inference/slopes.json) are the regression tables' and figures' numbers,
    # its cells (inference/cells.csv) the figures' intervals: one home
    inf_written, inf_notes = write_inference(res, config, out / "inference", prov, measured, claims)
    written += inf_written
    notes += inf_notes
    cells_csv, contrasts_csv = out / "inference" / "cells.csv", out / "inference" / "contrasts.csv"
    interval_cells = pd.read_csv(cells_csv) if cells_csv in written else None
    slopes = read_json(out / "inference" / "slopes.json", "slopes")["slopes"]
    families = {b: e.family or b for b, e in config.with_sft_variants().backbones.items()}
    f = out / "figures"
    # the sourced scores of the config, then each measured VQA set (vqa-eval stage): one regression table each
    groups = [("", "config", vqa_scores(config))]
    groups += [(f"_{name}", name, scores) for name, scores in sorted(measured.items())]
    full = cells[(cells["task"] == ALL) & (cells["ablation"] == "full")].set_index(["benchmark", "backbone"])
    for suffix, source, scores in groups:
        if not scores:  # one regression per VQA source that scores a backbone: no empty twin
            if not suffix:
                notes.append("regression_table not written: no backbone has a VQA score in the config"
                             + (" (the measured sets have their own regression tables)" if len(groups) > 1 else ""))
            continue
        fits = {b: (slopes.get(source) or {}).get(b) or dict(status="no backbone run on this benchmark has a VQA score",
                                                            n=0) for b in bench_order}
        written += tables.write_table(out, f"regression{suffix}_table", *tables.regression_table(fits), prov)
        for bench, r in fits.items():
            stem = f"vqa{suffix}_{bench}"
            if r["status"] != "ok":
                notes.append(f"figures/{stem} not drawn: {r['status']}")
                continue
            pts = [dict(backbone=q["backbone"], vqa_score=q["x"], mean=q["y"],
                        std=full["std"].get((bench, q["backbone"]), float("nan"))) for q in r["points"]]
            reg = dict(benchmark=bench, metric=full["metric"].get((bench, pts[0]["backbone"])), n=r["n"],
                       slope=r["slope"], r2=r["r2"], p_value=r["p_value"], spearman_rho=r["spearman"]["rho"], points=pts)
            pub = {} if published is None else published[(published["benchmark"] == bench)
                                                         & (published["ablation"] == "full")].set_index(
                                                             "backbone")["published"].dropna().to_dict()
            written += figures.vqa_scatter(reg, f, stem, note=footer(prov),
                                           xlabel=f"measured VQA score on {suffix[1:]}" if suffix else "VQA score",
                                           sources="inference/slopes.json", cells=interval_cells,
                                           within=r.get("within_family"), families=families, published=pub)

    f.mkdir(parents=True, exist_ok=True)
    written += figures.ablation_bars(res.results, config, bench_order, f, "ablation", note=footer(prov), cells=interval_cells)
    if contrasts_csv in written:
        written += figures.contrasts_plot(pd.read_csv(contrasts_csv), f, "contrasts", note=footer(prov))
    if published is not None:
        written += figures.published_scatter(published, interval_cells, f, "published_vs_reproduced", note=footer(prov))
    if lengths is not None and not lengths.empty:
        written += figures.calvin_lengths(lengths, config, bench_order, f, "calvin_lengths", note=footer(prov),
                                          intervals=calvin_length_intervals(res))
    if res.modes is not None:
        written += figures.mode_bars(res.modes, config, bench_order, f, "modes", note=footer(prov),
                                     intervals=mode_intervals(res))
    if res.episodes is not None:
        for bench in bench_order:
            eb = res.episodes[res.episodes["benchmark"] == bench]
            if (eb["metric"] == "success_rate").all() and len(eb):
                written += diagnostics.task_heatmap(res.episodes, config, bench, f, f"heatmap_{bench}",
                                                   note=footer(prov))
    if res.episodes is not None:
        written += diagnostics.outcomes_plot(counts, res.episodes, bench_order, f, "outcomes", note=footer(prov))
    curves = diagnostics.training_curves(res.modes)
    if len(curves) and (curves["ablation"] == "full").any():
        written += diagnostics.learning_curves(curves, config, bench_order, f, "learning_curves", note=footer(prov))
    elif res.modes is not None:
        notes.append("figures/learning_curves not drawn: no full fine-tuning run has a metrics.jsonl next to its "
                     "evaluation JSON")
    sft = diagnostics.sft_curves(sft_logs)
    if len(sft):
        written += diagnostics.sft_loss_curves(sft, f, "sft_loss", note=footer(prov))

    # the report's pages: every figure and rollout set as html/<name>.html with its caption (tables have theirs)
    for png in sorted(p for p in written if p.parent == f and p.suffix == ".png"):
        written.append(pages.figure_page(out, png.stem, png, footer(prov)))
    for bench in bench_order:
        if len(videos) and (videos["benchmark"] == bench).any():
            written.append(pages.rollouts_page(out, bench, videos[videos["benchmark"] == bench], footer(prov)))
    written.append(pages.provenance_page(out, prov, [{k: p.get(k, "unknown") for k in ("git_commit", "config_hash")}
                                                     for p in res.provenance], footer(prov)))

    found = []
    if out / "inference" / "claims.json" in written:  # the findings: index.md's first section, the report's landing page
        from vlm4vla_core.aggregate import findings
        from vlm4vla_core.aggregate.tables import to_html

        name = findings.CLAIMS_PAGE
        shown = pd.DataFrame(findings.claims_page_rows(out))
        written.append(write_text(out / "html" / f"{name}.html", to_html(shown, pages.title(name), footer(prov),
                                                                          pages.caption(name, shown))))
        found = findings.lines(out, claims, config, {p.stem for p in written if p.parent == out / "html"})
        written.append(write_text(out / "findings.rst", findings.rst(found, config.name or out.name)))
    written.append(write_json(out / "provenance.json", dict(aggregate=prov, inputs=res.source, runs=res.provenance)))
    written.append(write_text(out / "index.md", _index(out, written, res, config, prov, notes, found)))
    return written


def _index(out: Path, written: list[Path], res: Results, config: Study, prov: dict, notes: list[str],
           found: list[dict]) -> str:
    from vlm4vla_core.aggregate import findings

    from vlm4vla_core.aggregate.tables import footer

    r = res.results
    runs = r[r["task"] == ALL]
    lines = [
        f"# Results of study `{config.name or out.name}`",
        "",
        f"Inputs: {res.source}; {len(runs)} runs, {runs['backbone'].nunique()} backbones, "
        f"{runs['benchmark'].nunique()} benchmarks, seeds {sorted(int(s) for s in runs['seed'].unique())}.",
        f"Produced from {footer(prov)} at {prov['timestamp_utc']}.",
        "",
        "Conventions: a run's value is its headline metric over all its evaluation episodes in the reported mode "
        "(success in %, or average completed length); a table cell reads its estimate (mean over seeds) with its 95% "
        "interval and the seeds and episodes per seed it rests on (docs/statistics.md); the CSVs keep the mean, the "
        "standard deviation over seeds and the interval as numbers. Each table comes as CSV (numbers, with the git commit and "
        "config hash), Markdown, LaTeX (booktabs) and HTML (html/, shown in the Snakemake report); each figure as "
        "PNG and PDF, and as an HTML page with its caption.",
    ]
    if res.modes is not None:
        rules = ", ".join(f"'{k}' ({v} runs)" for k, v in res.modes[res.modes["reported"]].groupby("mode_selection").size().items())
        lines.append(f"Reported mode of each run chosen by the rule recorded in the run: {rules}. 'best' = the mode "
                     "with the highest success of that run, ties going to fewer re-plans (whole_chunk > half_chunk > single_step); "
                     "a mode name fixes the mode. See modes_table for every mode. A cell whose runs took the best "
                     "of several modes is labelled 'best-of-modes' and shows its 'held-out' value, free of that "
                     "choice's upward bias: each episode scored in the mode that is best on the other half of its "
                     "run's episodes (even and odd positions); a fixed mode is declared before the run and needs none.")
    commits = sorted({p.get("git_commit") for p in res.provenance if p.get("git_commit")})
    hashes = sorted({p.get("config_hash") for p in res.provenance if p.get("config_hash")})
    if commits or hashes:
        lines.append(f"Runs were produced at commit(s) {', '.join(commits) or 'unknown'} "
                     f"under config hash(es) {', '.join(hashes) or 'unknown'}.")
    lines[2:2] = findings.markdown(found)
    lines += ["", "## Artefacts", ""]
    rel = sorted({p.relative_to(out).as_posix() for p in written} - {"index.md"})
    stems = {}
    figs = {p.rsplit(".", 1)[0] for p in rel if p.startswith("figures/")}
    for p in rel:
        stem = p.rsplit(".", 1)[0].removeprefix("html/").replace("/html/", "/")
        if p.startswith("videos/"):
            stem = "videos"
        elif p.startswith("html/") and f"figures/{stem}" in figs:
            stem = f"figures/{stem}"
        elif p.startswith("html/inference_"):  # an inference table's page, listed with its files under inference/
            stem = "inference/" + stem.removeprefix("inference_")
        elif p.startswith("html/") and (stem.startswith("rollouts_") or stem == "provenance"):
            stem = "html"
        if stem.startswith("regression") and not stem.endswith("_table"):
            stem += "_table"
        stems.setdefault({"baseline": "baseline_table"}.get(stem, stem), []).append(p)
    for stem, files in sorted(stems.items()):
        desc = DESCRIPTIONS.get(stem) or (
            f"control vs VQA score ({stem.split('figures/', 1)[1]}) with OLS fit and 95% band" if "figures/vqa_" in stem else
            "control regressed on a measured VQA score" if stem.startswith("regression_") else
            DESCRIPTIONS["figures/heatmap"] if stem.startswith("figures/heatmap_") else "")
        files = sorted(files, key=lambda p: (p.startswith("html/"), p))
        links = ", ".join(f"[{p.rsplit('/', 1)[-1]}]({p})" for p in files)
        lines.append(f"- `{stem}`: {desc} ({links})" if desc else f"- {links}")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def load_reports(paths, config: Study) -> dict[str, dict]:
    """Backbone report JSONs keyed by backbone: the folder name (backbones/<name>/report.json) or the config
    backbone whose source matches the report's."""
    out = {}
    known = {*config.backbones, *config.variants()}  # a variant's report sits under its own name
    by_source = {e.source: k for k, e in config.backbones.items()}
    for path in map(Path, paths):
        rep = read_json(path, "backbone report")
        name = path.parent.name if path.parent.name in known else by_source.get(rep.get("source"))
        if name is None:
            raise ResultsError(f"{path}: matches no backbone of the config (by folder name or by 'source')")
        out[name] = rep
    return out


def _load_config(path: str) -> dict:
    """The study config: validated by vlm4vla_core.config when available, else plain YAML."""
    try:
        from vlm4vla_core.config import load_config
    except ImportError:
        p = Path(path)
        if not p.is_file():
            raise ResultsError(f"config file not found: {p}") from None
        config = yaml.safe_load(p.read_text())
        if not isinstance(config, dict):
            raise ResultsError(f"{p}: the config must be a mapping") from None
        return config
    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core aggregate", description=__doc__)
    p.add_argument("--config", required=True, help="study config YAML")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", help="evaluation result JSONs")
    src.add_argument("--results-csv", help="long-format results CSV (backbone, benchmark, ablation, seed, metric, value"
                     " [, task, n_episodes, mode])")
    p.add_argument("--reports", nargs="*", default=[], help="backbone report JSONs (backbone-report stage), optional")
    p.add_argument("--vqa", nargs="*", default=[], help="measured VQA scores (vqa-eval stage JSONs), optional")
    p.add_argument("--sft-logs", nargs="*", default=[], help="SFT runs' metrics.jsonl (sft/<variant>/), optional")
    p.add_argument("--out", required=True, help="output folder, e.g. results/<study>")
    p.add_argument("--claims", help="claims file (default: the config's 'claims'), verdicts in inference/claims.md")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = Study.from_dict(_load_config(args.config))
        written = aggregate(args.runs or args.results_csv, config, args.out, reports=args.reports, vqa=args.vqa,
                            claims=args.claims, sft_logs=args.sft_logs)
    except (ValueError, OSError, yaml.YAMLError) as err:  # ResultsError, ConfigError, unreadable files
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out} (see {Path(args.out) / 'index.md'})")
    return 0

