"""Study tables, each written as CSV (numbers), Markdown, LaTeX and HTML (formatted cells).

Every cell reads "estimate [95% interval], seeds x episodes per seed" (``inference.cell_label``,
the one format of a cell): the mean over seeds of the run-level metric with the inference layer's
interval (``inference.table_cells``; docs/statistics.md), "episodes only" for one seed, "no interval"
for a transcribed number without an episode count. The CSV keeps mean, std over seeds and the
interval as numbers. Each table carries a footer with the git commit and the
config hash it was produced from, and its caption (``pages.caption``) under the
title. The HTML copies (html/<name>.html) are the pages the Snakemake report shows.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate.files import write_text
from vlm4vla_core.aggregate import inference as inf
from vlm4vla_core.aggregate.results import ABLATIONS, ALL, ZERO, Results, metric_decimals, vqa_scores
from vlm4vla_core.aggregate.stats import CHAIN_LENGTHS
from vlm4vla_core.config import MODES, Study

MISSING = "-"
#: the labels of a best-of-modes cell and of the unbiased number beside it
BEST_OF, HELD_OUT = "best-of-modes", "held-out"
NOT_RUN = "not run"
#: the paper's names of the training regimes
REGIME_LABELS = {"full": "all trained", "freeze_vision": "vision frozen", "freeze_embeddings": "word embeddings frozen",
                 "from_scratch": "from scratch"}
FREEZING = ("freeze_vision", "freeze_embeddings")


def summary(results) -> pd.DataFrame:
    """The cells of a table (``inference.table_cells``): from a study's ``Results`` (episode records: the
    inference layer's intervals), a results DataFrame (run values alone), or cells already computed."""
    if isinstance(results, pd.DataFrame) and "cell" in results:
        return results
    if isinstance(results, pd.DataFrame):
        results = Results(results=results)
    return inf.table_cells(results)


def number(value: float, metric: str) -> str:
    """A transcribed value as given (up to two more decimals than the metric's, at least its own)."""
    if value is None or math.isnan(value):
        return MISSING
    return inf.exact_number(value, metric)


def signed(delta: float, metric: str, exact: bool = False) -> str:
    """'+1.2'; ``exact`` (a difference of transcribed values) keeps up to two more decimals, like ``number``."""
    if delta is None or math.isnan(delta):
        return MISSING
    return ("+" if delta >= 0 else "-") + number(abs(delta), metric) if exact else f"{delta:+.{metric_decimals(metric)}f}"


def dcell(deltas, bench: str, a: tuple[str, str], b: tuple[str, str], delta: float, metric: str,
          exact: bool = False) -> str:
    """A Δ cell: the paired contrast with its 95% interval (``inference.Deltas``) where the runs carry episode
    records, else the plain difference (``signed``)."""
    got = deltas.label(bench, a, b) if deltas is not None else None
    return got if got is not None else signed(delta, metric, exact)


def _exact(*rows) -> bool:
    """True when every row's episode count is unknown (transcribed numbers, e.g. published values)."""
    return all(r is not None and (r["n_episodes"] is None or math.isnan(r["n_episodes"])) for r in rows)


def ordered(values, preferred) -> list:
    """Distinct ``values``: those in ``preferred`` first (in its order), the rest after in their own order."""
    values = list(dict.fromkeys(values))
    first = [v for v in dict.fromkeys(preferred) if v in values]
    return first + [v for v in values if v not in first]


def backbone_order(present, config: Study) -> list[str]:
    return [b for b in ordered(present, list(config.backbones)) if b != ZERO] + ([ZERO] if ZERO in set(present) else [])


def rcell(r) -> str:
    """The formatted cell of a ``summary`` row (``inference.cell_label``: estimate [95% interval], seeds x
    episodes, and the held-out value beside a best-of-modes cell)."""
    return r["cell"]


# -- builders: each returns (numbers for the CSV, formatted table) ------------
def main_table(results: pd.DataFrame, config: Study, benchmarks: list[str]):
    s = summary(results)
    s = s[(s["task"] == ALL) & (s["ablation"].isin(["full", "none"]))]
    wide = s.pivot(index="backbone", columns="benchmark", values="cell")
    wide = wide.reindex(index=backbone_order(s["backbone"], config), columns=ordered(s["benchmark"], benchmarks))
    numbers = s.drop(columns="task")
    return numbers.drop(columns=["cell", "per_seed"]), wide.fillna(MISSING).rename_axis(index="backbone", columns=None).reset_index()


def ablation_table(results: pd.DataFrame, config: Study, benchmarks: list[str], deltas=None):
    """Every regime per benchmark and backbone, with Δ to full fine-tuning (``dcell``: with ``deltas``, an
    ``inference.Deltas``, the paired contrast and its interval)."""
    s = summary(results)
    s = s[(s["task"] == ALL) & (s["backbone"] != ZERO)]
    full = s[s["ablation"] == "full"].set_index(["backbone", "benchmark"])["mean"]
    s = s.assign(delta_vs_full=[m - full.get((b, k), np.nan) for b, k, m in zip(s["backbone"], s["benchmark"], s["mean"])])
    s.loc[s["ablation"] == "full", "delta_vs_full"] = np.nan
    ablations = ordered(s["ablation"], [a for a in (config.ablations or ABLATIONS)] + list(ABLATIONS))
    rows = []
    for bench in ordered(s["benchmark"], benchmarks):
        for bb in backbone_order(s[s["benchmark"] == bench]["backbone"], config):
            g = s[(s["benchmark"] == bench) & (s["backbone"] == bb)].set_index("ablation")
            row = {"benchmark": bench, "backbone": bb}
            for a in ablations:
                r = g.loc[a] if a in g.index else None
                row[a] = MISSING if r is None else rcell(r)
                if a != "full":
                    row[f"Δ {a}"] = MISSING if r is None else dcell(deltas, bench, (bb, a), (bb, "full"),
                                                                    r["delta_vs_full"], r["metric"], _exact(r))
            rows.append(row)
    return s.drop(columns=["task", "cell", "per_seed"]), pd.DataFrame(rows)


def freezing_table(results: pd.DataFrame, config: Study, benchmarks: list[str], deltas=None):
    """Module freezing as the paper lays it out: one row per backbone with a frozen variant, columns
    all trained / vision frozen / word embeddings frozen (and Δ to all trained), each cell listing the
    benchmarks in the column header's order. ``None`` when no run froze a module."""
    s = summary(results)
    s = s[(s["task"] == ALL) & (s["backbone"] != ZERO)]
    frozen = s[s["ablation"].isin(FREEZING)]
    if frozen.empty:
        return None
    regimes = ["full", *[a for a in FREEZING if a in set(frozen["ablation"]) or a in (config.ablations or ())]]
    benches = ordered(frozen["benchmark"], benchmarks)
    s = s[s["ablation"].isin(regimes) & s["benchmark"].isin(benches) & s["backbone"].isin(frozen["backbone"])]
    full = s[s["ablation"] == "full"].set_index(["backbone", "benchmark"])["mean"]
    s = s.assign(delta_vs_full=[np.nan if a == "full" else m - full.get((b, k), np.nan)
                                for b, k, a, m in zip(s["backbone"], s["benchmark"], s["ablation"], s["mean"])])
    by = s.set_index(["backbone", "ablation", "benchmark"])
    suffix = f" ({' / '.join(benches)})"
    rows = []
    for bb in backbone_order(frozen["backbone"], config):
        row = {"backbone": bb}
        for a in regimes:
            got = [by.loc[(bb, a, k)] if (bb, a, k) in by.index else None for k in benches]
            row[REGIME_LABELS[a] + suffix] = " / ".join(
                MISSING if r is None else rcell(r) for r in got)
            if a != "full":
                row[f"Δ {REGIME_LABELS[a]}" + suffix] = " / ".join(
                    MISSING if r is None else dcell(deltas, k, (bb, a), (bb, "full"), r["delta_vs_full"], r["metric"],
                                                    _exact(r)) for k, r in zip(benches, got))
        rows.append(row)
    return s.drop(columns=["task", "cell", "per_seed"]), pd.DataFrame(rows)


def scratch_table(results: pd.DataFrame, config: Study, benchmarks: list[str], deltas=None):
    """From scratch vs pretrained: per backbone with a from-scratch run, the pretrained (full fine-tuning)
    row, the from-scratch row and their difference; one column per benchmark. ``None`` without such runs."""
    s = summary(results)
    s = s[(s["task"] == ALL) & (s["ablation"].isin(["full", "from_scratch"]))]
    # an embodied-SFT variant is compared with its base's from-scratch run: the same architecture, randomly
    # initialised, on the same seeds (the variant's own would repeat it)
    borrowed = set()
    for name, entry in config.backbones.items():
        base = entry.sft
        if base and name in set(s["backbone"]) and not ((s["backbone"] == name) & (s["ablation"] == "from_scratch")).any():
            rows = s[(s["backbone"] == base) & (s["ablation"] == "from_scratch")]
            if not rows.empty:
                s = pd.concat([s, rows.assign(backbone=name)], ignore_index=True)
                borrowed.add(name)
    scratch = s[s["ablation"] == "from_scratch"]
    if scratch.empty:
        return None
    benches = ordered(scratch["benchmark"], benchmarks)
    s = s[s["backbone"].isin(scratch["backbone"]) & s["benchmark"].isin(benches)]
    by = s.set_index(["backbone", "ablation", "benchmark"])
    numbers, rows = [], []
    for bb in backbone_order(scratch["backbone"], config):
        scratch_label = f"from scratch ({config.backbones[bb].sft}'s run)" if bb in borrowed else "from scratch"
        pre, scr, delta = {"backbone": bb, "initialisation": "pretrained"}, {"backbone": bb, "initialisation": scratch_label}, \
            {"backbone": bb, "initialisation": "Δ (from scratch - pretrained)"}
        for k in benches:
            p = by.loc[(bb, "full", k)] if (bb, "full", k) in by.index else None
            r = by.loc[(bb, "from_scratch", k)] if (bb, "from_scratch", k) in by.index else None
            pre[k] = MISSING if p is None else rcell(p)
            scr[k] = MISSING if r is None else rcell(r)
            d = np.nan if p is None or r is None else r["mean"] - p["mean"]
            src = config.backbones[bb].sft if bb in borrowed else bb
            delta[k] = MISSING if p is None or r is None else dcell(
                deltas, k, (src, "from_scratch"), (bb, "full"), d, r["metric"], _exact(p, r))
            for ab, x in (("full", p), ("from_scratch", r)):
                if x is not None:
                    numbers.append(dict(backbone=bb, benchmark=k, ablation=ab, metric=x["metric"], mean=x["mean"],
                                        std=x["std"], ci_low=x["ci_low"], ci_high=x["ci_high"], n_seeds=x["n_seeds"],
                                        n_episodes=x["n_episodes"], delta_scratch_minus_pretrained=d))
        rows += [pre, scr, delta]
    return pd.DataFrame(numbers), pd.DataFrame(rows)


def embodied_sft_table(results: pd.DataFrame, config: Study, benchmarks: list[str], missing: str = NOT_RUN,
                       vqa: dict[str, dict[str, dict]] | None = None, deltas=None):
    """Embodied-SFT variants (config ``embodied_sft``: key -> base, dataset) grouped under their base: the
    base row (full fine-tuning) first, then each variant (its results carry backbone = the variant key)
    with the difference to its base; cells without results read ``missing``. ``vqa``: measured VQA
    scores ({set: {backbone: {"score"}}}, the vqa-eval stage), one column ``VQA <set>`` each, so the table
    shows what the SFT did to the VQA score beside what it did to control. ``None`` without variants."""
    variants = config.embodied_sft
    if not variants:
        return None
    s = summary(results)
    s = s[(s["task"] == ALL) & (s["ablation"] == "full")].set_index(["backbone", "benchmark"])
    benches = ordered([*benchmarks, *s.index.get_level_values("benchmark")], benchmarks)
    numbers, rows = [], []
    bases = ordered([v.base for v in variants.values()], list(config.backbones))
    for base in bases:
        members = [(base, None)] + [(k, v) for k, v in variants.items() if v.base == base]
        for name, entry in members:
            row = {"base": base, "model": name if entry else f"{name} (base)", "SFT dataset": entry.dataset if entry else MISSING}
            for set_name, scores in sorted((vqa or {}).items()):
                row[f"VQA {set_name}"] = f"{scores[name]['score']:.1f}" if name in scores else MISSING
            for k in benches:
                r = s.loc[(name, k)] if (name, k) in s.index else None
                b = s.loc[(base, k)] if (base, k) in s.index else None
                d = np.nan if r is None or b is None else r["mean"] - b["mean"]
                row[k] = missing if r is None else rcell(r)
                if entry:
                    row[f"Δ {k} vs base"] = MISSING if r is None else dcell(deltas, k, (name, "full"), (base, "full"), d,
                                                                            r["metric"], _exact(r, b))
                if r is not None:
                    numbers.append(dict(base=base, backbone=name, dataset=entry.dataset if entry else None, benchmark=k,
                                        metric=r["metric"], mean=r["mean"], std=r["std"], ci_low=r["ci_low"],
                                        ci_high=r["ci_high"], n_seeds=r["n_seeds"], n_episodes=r["n_episodes"], delta_vs_base=d,
                                        **{f"vqa_{n}": (v.get(name) or {}).get("score") for n, v in sorted((vqa or {}).items())}))
            rows.append(row)
    cols = (["base", "model", "SFT dataset"] + [f"VQA {n}" for n in sorted(vqa or {})]
            + [c for k in benches for c in (k, f"Δ {k} vs base")])
    numbers = pd.DataFrame(numbers, columns=["base", "backbone", "dataset", "benchmark", "metric", "mean", "std", "ci_low",
                                             "ci_high", "n_seeds",
                                             "n_episodes", "delta_vs_base", *[f"vqa_{n}" for n in sorted(vqa or {})]])
    return numbers, pd.DataFrame(rows).reindex(columns=cols).fillna(MISSING)


def published_table(results: pd.DataFrame, config: Study, benchmarks: list[str], published: pd.DataFrame):
    """Each reproduced cell (task 'all') beside its published value and the difference (reproduced -
    published). ``published``: ``vlm4vla_core.published.published_results(config)`` (names already mapped to
    the config's keys); a cell without a published counterpart says why."""
    s = summary(results)
    s = s[s["task"] == ALL]
    pub = published.set_index(["backbone", "benchmark", "ablation"])
    sft = set(config.embodied_sft)
    kinds = {k: e.kind or k for k, e in config.benchmarks.items()}
    numbers, rows = [], []
    for bench in ordered(s["benchmark"], benchmarks):
        sb = s[s["benchmark"] == bench]
        for bb in backbone_order(sb["backbone"], config):
            for abl in ordered(sb[sb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                r = sb[(sb["backbone"] == bb) & (sb["ablation"] == abl)].iloc[0]
                p = pub.loc[(bb, bench, abl)] if (bb, bench, abl) in pub.index else None
                why = None
                if p is None:
                    if bb == ZERO:
                        why = "the paper reports no zero-action baseline"
                    elif bb in sft:
                        why = "the paper gives no numbers for the embodied-SFT variants"
                    elif bb not in set(published["backbone"]):
                        src = config.backbones[bb].source if bb in config.backbones else None
                        why = f"backbone not in the paper (source {src!r} matches no published model)"
                    elif bench not in set(published["benchmark"]):
                        why = f"benchmark kind {kinds.get(bench, bench)!r} is not in the paper"
                    else:
                        why = f"the paper gives no {abl} result for this backbone on this benchmark"
                elif p["metric"] != r["metric"]:
                    why, p = f"published metric {p['metric']!r} differs from the run's {r['metric']!r}", None
                diff = np.nan if p is None else r["mean"] - p["value"]
                numbers.append(dict(benchmark=bench, backbone=bb, ablation=abl, metric=r["metric"], mean=r["mean"],
                                    std=r["std"], ci_low=r["ci_low"], ci_high=r["ci_high"], n_seeds=r["n_seeds"], n_episodes=r["n_episodes"],
                                    published=np.nan if p is None else p["value"], difference=diff,
                                    published_table=None if p is None else p.get("table"),
                                    published_source=None if p is None else p["source"], note=why))
                rows.append({"benchmark": bench, "backbone": bb, "ablation": abl,
                             "reproduced": rcell(r),
                             "published": f"none: {why}" if p is None else number(p["value"], r["metric"]),
                             "difference": signed(diff, r["metric"]),
                             "published in": MISSING if p is None else str(p.get("table", MISSING)).replace("_", " ")})
    return pd.DataFrame(numbers), pd.DataFrame(rows)


def calvin_length_table(lengths: pd.DataFrame, config: Study, benchmarks: list[str], intervals: pd.DataFrame):
    """CALVIN success (%) at chain lengths 1..5 and the average length: the numbers from
    ``stats.calvin_length_success``, the cells with their intervals from ``inference.length_cells``."""
    keys = ["backbone", "benchmark", "ablation", "length"]
    lengths = lengths.merge(intervals, on=keys, how="left", validate="one_to_one")
    rows = []
    for bench in ordered(lengths["benchmark"], benchmarks):
        lb = lengths[lengths["benchmark"] == bench]
        for bb in backbone_order(lb["backbone"], config):
            for abl in ordered(lb[lb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                g = lb[(lb["backbone"] == bb) & (lb["ablation"] == abl)].set_index("length")["cell"]
                row = {"benchmark": bench, "backbone": bb, "ablation": abl}
                for L in CHAIN_LENGTHS:
                    row[f"success ≥{L} (%)"] = g.get(L, MISSING)
                row["avg. length"] = g.get(0, MISSING)
                rows.append(row)
    numbers = lengths.drop(columns=["cell", "per_seed"]).assign(
        quantity=np.where(lengths["length"] == 0, "avg_len", "success_rate_at_length"))
    return numbers, pd.DataFrame(rows)


def _config_tasks(config: Study, benchmark: str) -> list[str]:
    entry = config.benchmarks.get(benchmark)
    return list(entry.entry.get("tasks", [])) if entry is not None else []  # a plug-in's own key


def per_task_table(results: pd.DataFrame, config: Study, benchmarks: list[str], videos: dict | None = None):
    """Every task of every (benchmark, backbone, regime); ``videos``: (backbone, benchmark, ablation) ->
    Markdown links to its rollout videos (a ``rollouts`` column when given)."""
    s = summary(results)
    tasks = ordered(sorted(t for t in s["task"].unique() if t != ALL),
                    [t for b in benchmarks for t in _config_tasks(config, b)]) + [ALL]
    rows = []
    for bench in ordered(s["benchmark"], benchmarks):
        sb = s[s["benchmark"] == bench]
        for bb in backbone_order(sb["backbone"], config):
            for abl in ordered(sb[sb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                g = sb[(sb["backbone"] == bb) & (sb["ablation"] == abl)].set_index("task")["cell"]
                rows.append({"benchmark": bench, "backbone": bb, "ablation": abl, **{t: g.get(t, MISSING) for t in tasks}})
                if videos:
                    rows[-1]["rollouts"] = videos.get((bb, bench, abl), MISSING)
    return s.drop(columns=["cell", "per_seed"]), pd.DataFrame(rows)


def modes_table(modes: pd.DataFrame, config: Study, benchmarks: list[str]):
    """Value of every execution mode (reported mode or not), mean over seeds with a 95% interval from the
    runs' values (``inference.seed_value_cells``: the modes not reported keep no episode records), the
    seed variance pooled over the cells of a benchmark and mode."""
    keys = ["backbone", "benchmark", "ablation", "mode"]
    g = modes.groupby([*keys, "metric"], sort=False)
    s = g["value"].agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="size")
    s = s.assign(n_episodes=g["n_episodes"].sum(), times_reported=g["reported"].sum()).reset_index()
    iv = inf.seed_value_cells(modes, keys, ["benchmark", "mode"])
    s = s.merge(iv[[*keys, "ci_low", "ci_high", "interval", "per_seed"]], on=keys, how="left", validate="one_to_one")
    s = s.assign(cell=[inf.cell_label(r["mean"], r["ci_low"], r["ci_high"], int(r["n_seeds"]), r["per_seed"],
                                      r["metric"], r["interval"]) for _, r in s.iterrows()])
    rows = []
    for bench in ordered(s["benchmark"], benchmarks):
        sb = s[s["benchmark"] == bench]
        for bb in backbone_order(sb["backbone"], config):
            for abl in ordered(sb[sb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                r = sb[(sb["backbone"] == bb) & (sb["ablation"] == abl)].set_index("mode")
                row = {"benchmark": bench, "backbone": bb, "ablation": abl}
                for m in ordered(r.index, MODES):
                    row[m] = r.loc[m, "cell"]
                row["reported"] = ", ".join(f"{m}×{int(r.loc[m, 'times_reported'])}" for m in ordered(r.index, MODES)
                                            if r.loc[m, "times_reported"] > 0)
                rows.append(row)
    return s.drop(columns=["cell", "per_seed"]), pd.DataFrame(rows).fillna(MISSING)


def baseline_table(rows: list[dict], deltas=None):
    """Each policy vs the zero-action baseline: pooled k/n, odds ratio and Fisher's p (episodes as independent
    trials) and, with ``deltas`` (``inference.Deltas``, episode records), the contrast of the two arms with its
    95% interval, which keeps seeds and shared episodes apart."""
    numbers = pd.DataFrame(rows)
    if numbers.empty:
        return numbers, pd.DataFrame({"note": ["no comparison with a zero-action baseline was possible"]})
    shown = pd.DataFrame({
        "benchmark": numbers["benchmark"], "backbone": numbers["backbone"], "ablation": numbers["ablation"],
        "policy k/n": [f"{k}/{n} ({100 * k / n:.1f}%)" for k, n in zip(numbers["successes"], numbers["episodes"])],
        "zero-action k/n": [f"{k}/{n} ({100 * k / n:.1f}%)" for k, n in
                            zip(numbers["baseline_successes"], numbers["baseline_episodes"])],
        "odds ratio": [f"{o:.2f}" if math.isfinite(o) else "inf" for o in numbers["odds_ratio"]],
        "p (Fisher, one-sided)": [f"{p:.3g}" for p in numbers["p_value"]],
    })
    got = [deltas.label(b, (bb, a), (ZERO, "none")) if deltas is not None else None
           for b, bb, a in zip(numbers["benchmark"], numbers["backbone"], numbers["ablation"])]
    if any(g is not None for g in got):
        shown["policy − zero-action [95% CI]"] = [MISSING if g is None else g for g in got]
    return numbers.drop(columns="seeds"), shown


def _ci(v: list | None) -> str:
    return MISSING if not v or v[0] is None else f"[{v[0]:.3g}, {v[1]:.3g}]"


def regression_table(fits: dict[str, dict]):
    """One row per benchmark from ``slopes.fit_points`` (inference/slopes.json): OLS with its t interval,
    Theil-Sen, the exact permutation p of Spearman, the errors-in-variables slope, the points flagged by
    influence with the slope refitted without them, and the minimum detectable slope."""
    rows, shown = [], []
    for bench, r in fits.items():
        if r["status"] != "ok":
            rows.append({"benchmark": bench, "n": r.get("n"), "status": r["status"]})
            shown.append({"benchmark": bench, "n": r.get("n"), "result": r["status"]})
            continue
        ts, sp, eiv = r["theil_sen"], r["spearman"], r.get("errors_in_variables") or {}
        wo = r.get("without_flagged")
        infl = {i["backbone"]: i for i in r["influence"]}
        mds = (r.get("power") or {}).get("minimum_detectable_slope")
        rows.append(dict(
            benchmark=bench, n=r["n"], status="ok", slope=r["slope"], intercept=r["intercept"], r2=r["r2"],
            p_value=r["p_value"], slope_ci95_low=r["slope_ci95"][0], slope_ci95_high=r["slope_ci95"][1],
            theil_sen_slope=ts["slope"], theil_sen_ci95_low=ts["ci95"][0], theil_sen_ci95_high=ts["ci95"][1],
            spearman_rho=sp["rho"], spearman_p_permutation=sp["p_permutation"], eiv_slope=eiv.get("slope"),
            eiv_reliability=eiv.get("reliability"), flagged=";".join(r["flagged"]),
            slope_without_flagged=wo["slope"] if wo else np.nan, minimum_detectable_slope=mds))
        flagged = "; ".join(f"{b} (Cook's D {infl[b]['cooks_distance']:.3g}, leverage {infl[b]['leverage']:.2f})"
                            for b in r["flagged"]) or "none"
        if wo:
            flagged += f"; without: {wo['slope']:.3g} {_ci(wo['slope_ci95'])}, p {wo['p_value']:.3g}"
        shown.append({
            "benchmark": bench, "n": r["n"],
            "OLS slope [95% CI]": f"{r['slope']:.3g} {_ci(r['slope_ci95'])}",
            "R²": f"{r['r2']:.3f}", "p": f"{r['p_value']:.3g}",
            "Theil-Sen slope [95% CI]": f"{ts['slope']:.3g} {_ci(ts['ci95'])}",
            "Spearman ρ (permutation p)": f"{sp['rho']:.3f} ({sp['p_permutation']:.3g}, {sp['permutation']})",
            "errors-in-variables slope": (f"{eiv['slope']:.3g} (reliability of x {eiv['reliability']:.2f})"
                                          if eiv.get("slope") is not None else eiv.get("note", MISSING)),
            "influential points": flagged,
            "min. detectable slope": MISSING if mds is None else f"{mds:.3g}",
        })
    return pd.DataFrame(rows), pd.DataFrame(shown).fillna(MISSING)


def backbones_table(config: Study, reports: dict[str, dict]):
    """Published size and VQA score (config) next to the measured counts (backbone reports, when given)."""
    rows, scores = [], vqa_scores(config)
    for name, e in config.backbones.items():
        rep = reports.get(name, {})
        vqa = scores.get(name) or {}
        rows.append(dict(
            backbone=name, family=e.family, source=e.source, params_b_published=e.params_b,
            total_params=rep.get("total_params"), backbone_params=rep.get("backbone_params"),
            vision_params=rep.get("vision_params"), image_tokens_per_frame=rep.get("image_tokens_per_frame"),
            prompt_length=rep.get("prompt_length"), hidden_size=rep.get("hidden_size"),
            policy_added_share=rep.get("policy_added_share"), vqa_score=vqa.get("score"), vqa_source=vqa.get("source")))
    numbers = pd.DataFrame(rows)

    def fmt(v, f="{}"):
        return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)

    shown = pd.DataFrame({
        "backbone": numbers["backbone"], "family": numbers["family"], "source": numbers["source"],
        "published size (B)": [fmt(v, "{:.1f}") for v in numbers["params_b_published"]],
        "measured params": [count(v) for v in numbers["total_params"]],
        "image tokens": [fmt(v, "{:.0f}") for v in numbers["image_tokens_per_frame"]],
        "prompt length": [fmt(v, "{:.0f}") for v in numbers["prompt_length"]],
        "VQA score": [fmt(v) for v in numbers["vqa_score"]],
        "VQA source": [fmt(v) for v in numbers["vqa_source"]],
    })
    return numbers, shown


def count(v) -> str:
    """A parameter count in the unit that shows it: 7.616 B, 3.412 M, 52.35 k (tiny models stay readable)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    v = float(v)
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.4g} {unit}"
    return f"{v:.0f}"


# -- writing -------------------------------------------------------------------
def footer(prov: dict) -> str:
    dirty = " (uncommitted changes)" if prov.get("git_dirty") else ""
    return f"git commit {prov.get('git_commit', 'unknown')}{dirty}, config hash {prov.get('config_hash', 'unknown')}"


def to_latex(shown: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX of a table of formatted strings; caption is escaped."""
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(hrules=True, caption=_escape(caption), position_float="centering")
    return tex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("×", r"$\times$") \
        .replace("²", r"$^2$").replace("ρ", r"$\rho$").replace("τ", r"$\tau$").replace("≥", r"$\geq$")


def _escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def to_html(shown: pd.DataFrame, title: str, foot: str, text: str = "") -> str:
    """A standalone HTML page of a table of formatted strings under its caption ``text`` (the Snakemake
    report shows these); Markdown links to files of the results folder become links from html/."""
    from vlm4vla_core.aggregate.pages import page

    table = shown.to_html(index=False, border=0, escape=True, na_rep=MISSING)
    table = LINK.sub(lambda m: f'<a href="../{m.group(2)}">{m.group(1)}</a>', table)
    return page(title, text, table, foot)


def write_table(out: Path, name: str, numbers: pd.DataFrame, shown: pd.DataFrame, prov: dict,
                page: str | None = None, html_dir: Path | None = None) -> list[Path]:
    """<name>.csv (numbers + provenance columns), <name>.md, <name>.tex and html/<name>.html (formatted) under
    ``out``. ``page``: the report page's name (its title, caption and category, all from
    ``pages.PAGES``; default ``name``), written to ``html_dir`` (default ``out/html``) as ``<page>.html``."""
    from vlm4vla_core.aggregate.pages import caption, title as page_title

    page = page or name
    foot, text, title = footer(prov), caption(page, shown), page_title(page)
    csv = numbers.assign(git_commit=prov.get("git_commit", "unknown"), config_hash=prov.get("config_hash", "unknown"))
    md = f"### {title}\n\n{text}\n\n{shown.to_markdown(index=False, disable_numparse=True)}\n\n_{foot}_\n"
    tex = to_latex(shown, f"{title}. {foot}.")
    return [
        write_text(out / f"{name}.csv", csv.to_csv(index=False)),
        write_text(out / f"{name}.md", md),
        write_text(out / f"{name}.tex", tex),
        write_text((html_dir or out / "html") / f"{page}.html", to_html(shown, title, foot, text)),
    ]
