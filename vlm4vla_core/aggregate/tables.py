"""Study tables, each written as CSV (numbers), Markdown, LaTeX and HTML (formatted cells).

Every cell reads "mean ± spread (n=episodes)": the mean over seeds of the
run-level metric, the standard deviation over seeds ("n/a" for one seed) and
the number of evaluation episodes summed over seeds ("n=?" when unknown, e.g.
published numbers). Each table carries a footer with the git commit and the
config hash it was produced from, and its caption (``pages.caption``) under the
title. The HTML copies (html/<name>.html) are the pages the Snakemake report shows.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate.io import write_text
from vlm4vla_core.aggregate.results import ABLATIONS, ALL, ZERO, metric_decimals, vqa_scores
from vlm4vla_core.aggregate.stats import CHAIN_LENGTHS, MIN_POINTS, summarize
from vlm4vla_core.config import MODES

MISSING = "-"
#: the labels of a best-of-modes cell and of the unbiased number beside it
BEST_OF, HELD_OUT = "best-of-modes", "held-out"
NOT_RUN = "not run"
#: the paper's names of the training regimes
REGIME_LABELS = {"full": "all trained", "freeze_vision": "vision frozen", "freeze_embeddings": "word embeddings frozen",
                 "from_scratch": "from scratch"}
FREEZING = ("freeze_vision", "freeze_embeddings")


def cell(mean: float, std: float, n: float, metric: str, heldout: float | None = None) -> str:
    """'23.3 ± 4.7 (n=60)'. With an unknown episode count (a transcribed published number) the
    mean keeps up to two more decimals, so 23.95 is not shown as 23.9. A value chosen as the best
    of several execution modes is labelled so and shows its held-out value beside it:
    'best-of-modes 23.3 ± 4.7 (n=60); held-out 20.0' (each episode scored in the mode chosen on the
    other half of the run's episodes)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if heldout is not None and not (isinstance(heldout, float) and math.isnan(heldout)):
        return f"{BEST_OF} {cell(mean, std, n, metric)}; {HELD_OUT} {heldout:.{metric_decimals(metric)}f}"
    d = metric_decimals(metric)
    unknown_n = n is None or math.isnan(n)
    shown = number(mean, metric) if unknown_n else f"{mean:.{d}f}"
    spread = "n/a" if std is None or math.isnan(std) else f"{std:.{d}f}"
    return f"{shown} ± {spread} (n={'?' if unknown_n else int(n)})"


def number(value: float, metric: str) -> str:
    """A transcribed value as given (up to two more decimals than the metric's, at least its own)."""
    if value is None or math.isnan(value):
        return MISSING
    d = metric_decimals(metric)
    shown = f"{value:.{d + 2}f}".rstrip("0")
    return shown + "0" * max(0, d - len(shown.split(".")[1]))


def signed(delta: float, metric: str, exact: bool = False) -> str:
    """'+1.2'; ``exact`` (a difference of transcribed values) keeps up to two more decimals, like ``number``."""
    if delta is None or math.isnan(delta):
        return MISSING
    return ("+" if delta >= 0 else "-") + number(abs(delta), metric) if exact else f"{delta:+.{metric_decimals(metric)}f}"


def _exact(*rows) -> bool:
    """True when every row's episode count is unknown (transcribed numbers, e.g. published values)."""
    return all(r is not None and (r["n_episodes"] is None or math.isnan(r["n_episodes"])) for r in rows)


def ordered(values, preferred) -> list:
    """Distinct ``values``: those in ``preferred`` first (in its order), the rest after in their own order."""
    values = list(dict.fromkeys(values))
    first = [v for v in dict.fromkeys(preferred) if v in values]
    return first + [v for v in values if v not in first]


def backbone_order(present, config: dict) -> list[str]:
    return [b for b in ordered(present, list(config.get("backbones", {}))) if b != ZERO] + ([ZERO] if ZERO in set(present) else [])


def rcell(r) -> str:
    """``cell`` of a ``summarize`` row, with its held-out value when the row has one."""
    return cell(r["mean"], r["std"], r["n_episodes"], r["metric"], r.get("heldout"))


def cells(s: pd.DataFrame) -> list[str]:
    return [rcell(r) for _, r in s.iterrows()]


# -- builders: each returns (numbers for the CSV, formatted table) ------------
def main_table(results: pd.DataFrame, config: dict, benchmarks: list[str]):
    s = summarize(results)
    s = s[(s["task"] == ALL) & (s["ablation"].isin(["full", "none"]))]
    s = s.assign(cell=cells(s))
    wide = s.pivot(index="backbone", columns="benchmark", values="cell")
    wide = wide.reindex(index=backbone_order(s["backbone"], config), columns=ordered(s["benchmark"], benchmarks))
    numbers = s.drop(columns="task")
    return numbers, wide.fillna(MISSING).rename_axis(index="backbone", columns=None).reset_index()


def ablation_table(results: pd.DataFrame, config: dict, benchmarks: list[str]):
    s = summarize(results)
    s = s[(s["task"] == ALL) & (s["backbone"] != ZERO)]
    full = s[s["ablation"] == "full"].set_index(["backbone", "benchmark"])["mean"]
    s = s.assign(delta_vs_full=[m - full.get((b, k), np.nan) for b, k, m in zip(s["backbone"], s["benchmark"], s["mean"])])
    s.loc[s["ablation"] == "full", "delta_vs_full"] = np.nan
    ablations = ordered(s["ablation"], [a for a in config.get("ablations", ABLATIONS)] + list(ABLATIONS))
    rows = []
    for bench in ordered(s["benchmark"], benchmarks):
        for bb in backbone_order(s[s["benchmark"] == bench]["backbone"], config):
            g = s[(s["benchmark"] == bench) & (s["backbone"] == bb)].set_index("ablation")
            row = {"benchmark": bench, "backbone": bb}
            for a in ablations:
                r = g.loc[a] if a in g.index else None
                row[a] = MISSING if r is None else rcell(r)
                if a != "full":
                    row[f"Δ {a}"] = MISSING if r is None else signed(r["delta_vs_full"], r["metric"], _exact(r))
            rows.append(row)
    return s.drop(columns="task"), pd.DataFrame(rows)


def freezing_table(results: pd.DataFrame, config: dict, benchmarks: list[str]):
    """Module freezing as the paper lays it out: one row per backbone with a frozen variant, columns
    all trained / vision frozen / word embeddings frozen (and Δ to all trained), each cell listing the
    benchmarks in the column header's order. ``None`` when no run froze a module."""
    s = summarize(results)
    s = s[(s["task"] == ALL) & (s["backbone"] != ZERO)]
    frozen = s[s["ablation"].isin(FREEZING)]
    if frozen.empty:
        return None
    regimes = ["full", *[a for a in FREEZING if a in set(frozen["ablation"]) or a in config.get("ablations", [])]]
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
                    MISSING if r is None else signed(r["delta_vs_full"], r["metric"], _exact(r)) for r in got)
        rows.append(row)
    return s.drop(columns="task"), pd.DataFrame(rows)


def scratch_table(results: pd.DataFrame, config: dict, benchmarks: list[str]):
    """From scratch vs pretrained: per backbone with a from-scratch run, the pretrained (full fine-tuning)
    row, the from-scratch row and their difference; one column per benchmark. ``None`` without such runs."""
    s = summarize(results)
    s = s[(s["task"] == ALL) & (s["ablation"].isin(["full", "from_scratch"]))]
    # an embodied-SFT variant is compared with its base's from-scratch run: the same architecture, randomly
    # initialised, on the same seeds (the variant's own would repeat it)
    borrowed = set()
    for name, entry in (config.get("backbones") or {}).items():
        base = (entry or {}).get("sft")
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
        scratch_label = f"from scratch ({config['backbones'][bb]['sft']}'s run)" if bb in borrowed else "from scratch"
        pre, scr, delta = {"backbone": bb, "initialisation": "pretrained"}, {"backbone": bb, "initialisation": scratch_label}, \
            {"backbone": bb, "initialisation": "Δ (from scratch - pretrained)"}
        for k in benches:
            p = by.loc[(bb, "full", k)] if (bb, "full", k) in by.index else None
            r = by.loc[(bb, "from_scratch", k)] if (bb, "from_scratch", k) in by.index else None
            pre[k] = MISSING if p is None else rcell(p)
            scr[k] = MISSING if r is None else rcell(r)
            d = np.nan if p is None or r is None else r["mean"] - p["mean"]
            delta[k] = signed(d, (r if r is not None else p)["metric"], _exact(p, r))
            for ab, x in (("full", p), ("from_scratch", r)):
                if x is not None:
                    numbers.append(dict(backbone=bb, benchmark=k, ablation=ab, metric=x["metric"], mean=x["mean"],
                                        std=x["std"], n_seeds=x["n_seeds"], n_episodes=x["n_episodes"],
                                        delta_scratch_minus_pretrained=d))
        rows += [pre, scr, delta]
    return pd.DataFrame(numbers), pd.DataFrame(rows)


def embodied_sft_table(results: pd.DataFrame, config: dict, benchmarks: list[str], missing: str = NOT_RUN,
                       vqa: dict[str, dict[str, dict]] | None = None):
    """Embodied-SFT variants (config ``embodied_sft``: key -> base, dataset) grouped under their base: the
    base row (full fine-tuning) first, then each variant (its results carry backbone = the variant key)
    with the difference to its base; cells without results read ``missing``. ``vqa``: measured VQA
    scores ({set: {backbone: {"score"}}}, the vqa-eval stage), one column ``VQA <set>`` each, so the table
    shows what the SFT did to the VQA score beside what it did to control. ``None`` without variants."""
    variants = config.get("embodied_sft") or {}
    if not variants:
        return None
    s = summarize(results)
    s = s[(s["task"] == ALL) & (s["ablation"] == "full")].set_index(["backbone", "benchmark"])
    benches = ordered([*benchmarks, *s.index.get_level_values("benchmark")], benchmarks)
    numbers, rows = [], []
    bases = ordered([v["base"] for v in variants.values()], list(config.get("backbones", {})))
    for base in bases:
        members = [(base, None)] + [(k, v) for k, v in variants.items() if v["base"] == base]
        for name, entry in members:
            row = {"base": base, "model": name if entry else f"{name} (base)", "SFT dataset": entry["dataset"] if entry else MISSING}
            for set_name, scores in sorted((vqa or {}).items()):
                row[f"VQA {set_name}"] = f"{scores[name]['score']:.1f}" if name in scores else MISSING
            for k in benches:
                r = s.loc[(name, k)] if (name, k) in s.index else None
                b = s.loc[(base, k)] if (base, k) in s.index else None
                d = np.nan if r is None or b is None else r["mean"] - b["mean"]
                row[k] = missing if r is None else rcell(r)
                if entry:
                    row[f"Δ {k} vs base"] = MISSING if r is None else signed(d, r["metric"], _exact(r, b))
                if r is not None:
                    numbers.append(dict(base=base, backbone=name, dataset=entry["dataset"] if entry else None, benchmark=k,
                                        metric=r["metric"], mean=r["mean"], std=r["std"], n_seeds=r["n_seeds"],
                                        n_episodes=r["n_episodes"], delta_vs_base=d,
                                        **{f"vqa_{n}": (v.get(name) or {}).get("score") for n, v in sorted((vqa or {}).items())}))
            rows.append(row)
    cols = (["base", "model", "SFT dataset"] + [f"VQA {n}" for n in sorted(vqa or {})]
            + [c for k in benches for c in (k, f"Δ {k} vs base")])
    numbers = pd.DataFrame(numbers, columns=["base", "backbone", "dataset", "benchmark", "metric", "mean", "std", "n_seeds",
                                             "n_episodes", "delta_vs_base", *[f"vqa_{n}" for n in sorted(vqa or {})]])
    return numbers, pd.DataFrame(rows).reindex(columns=cols).fillna(MISSING)


def published_table(results: pd.DataFrame, config: dict, benchmarks: list[str], published: pd.DataFrame):
    """Each reproduced cell (task 'all') beside its published value and the difference (reproduced -
    published). ``published``: ``vlm4vla_core.data.published_results(config)`` (names already mapped to
    the config's keys); a cell without a published counterpart says why."""
    s = summarize(results)
    s = s[s["task"] == ALL]
    pub = published.set_index(["backbone", "benchmark", "ablation"])
    sft = set(config.get("embodied_sft") or {})
    kinds = {k: (e or {}).get("kind", k) for k, e in config.get("benchmarks", {}).items()} \
        if isinstance(config.get("benchmarks"), dict) else {}
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
                        src = config.get("backbones", {}).get(bb, {}).get("source")
                        why = f"backbone not in the paper (source {src!r} matches no published model)"
                    elif bench not in set(published["benchmark"]):
                        why = f"benchmark kind {kinds.get(bench, bench)!r} is not in the paper"
                    else:
                        why = f"the paper gives no {abl} result for this backbone on this benchmark"
                elif p["metric"] != r["metric"]:
                    why, p = f"published metric {p['metric']!r} differs from the run's {r['metric']!r}", None
                diff = np.nan if p is None else r["mean"] - p["value"]
                numbers.append(dict(benchmark=bench, backbone=bb, ablation=abl, metric=r["metric"], mean=r["mean"],
                                    std=r["std"], n_seeds=r["n_seeds"], n_episodes=r["n_episodes"],
                                    published=np.nan if p is None else p["value"], difference=diff,
                                    published_table=None if p is None else p.get("table"),
                                    published_source=None if p is None else p["source"], note=why))
                rows.append({"benchmark": bench, "backbone": bb, "ablation": abl,
                             "reproduced": rcell(r),
                             "published": f"none: {why}" if p is None else number(p["value"], r["metric"]),
                             "difference": signed(diff, r["metric"]),
                             "published in": MISSING if p is None else str(p.get("table", MISSING)).replace("_", " ")})
    return pd.DataFrame(numbers), pd.DataFrame(rows)


def calvin_length_table(lengths: pd.DataFrame, config: dict, benchmarks: list[str]):
    """CALVIN success (%) at chain lengths 1..5 and the average length, from ``stats.calvin_length_success``."""
    rows = []
    for bench in ordered(lengths["benchmark"], benchmarks):
        lb = lengths[lengths["benchmark"] == bench]
        for bb in backbone_order(lb["backbone"], config):
            for abl in ordered(lb[lb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                g = lb[(lb["backbone"] == bb) & (lb["ablation"] == abl)].set_index("length")
                row = {"benchmark": bench, "backbone": bb, "ablation": abl}
                for L in CHAIN_LENGTHS:
                    x = g.loc[L]
                    row[f"success ≥{L} (%)"] = cell(x["mean"], x["std"], x["n_episodes"], "success_rate")
                x = g.loc[0]
                row["avg. length"] = cell(x["mean"], x["std"], x["n_episodes"], "avg_len")
                rows.append(row)
    numbers = lengths.assign(quantity=np.where(lengths["length"] == 0, "avg_len", "success_rate_at_length"))
    return numbers, pd.DataFrame(rows)


def _config_tasks(config: dict, benchmark: str) -> list[str]:
    b = config.get("benchmarks", {})
    return list((b.get(benchmark) or {}).get("tasks", [])) if isinstance(b, dict) else []


def per_task_table(results: pd.DataFrame, config: dict, benchmarks: list[str], videos: dict | None = None):
    """Every task of every (benchmark, backbone, regime); ``videos``: (backbone, benchmark, ablation) ->
    Markdown links to its rollout videos (a ``rollouts`` column when given)."""
    s = summarize(results)
    s = s.assign(cell=cells(s))
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
    return s, pd.DataFrame(rows)


def modes_table(modes: pd.DataFrame, config: dict, benchmarks: list[str]):
    """Value of every execution mode (reported mode or not), mean over seeds."""
    g = modes.groupby(["backbone", "benchmark", "ablation", "mode", "metric"], sort=False)
    s = g["value"].agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="size")
    s = s.assign(n_episodes=g["n_episodes"].sum(), times_reported=g["reported"].sum()).reset_index()
    rows = []
    for bench in ordered(s["benchmark"], benchmarks):
        sb = s[s["benchmark"] == bench]
        for bb in backbone_order(sb["backbone"], config):
            for abl in ordered(sb[sb["backbone"] == bb]["ablation"], ["none", *ABLATIONS]):
                r = sb[(sb["backbone"] == bb) & (sb["ablation"] == abl)].set_index("mode")
                row = {"benchmark": bench, "backbone": bb, "ablation": abl}
                for m in ordered(r.index, MODES):
                    x = r.loc[m]
                    row[m] = cell(x["mean"], x["std"], x["n_episodes"], x["metric"])
                row["reported"] = ", ".join(f"{m}×{int(r.loc[m, 'times_reported'])}" for m in ordered(r.index, MODES)
                                            if r.loc[m, "times_reported"] > 0)
                rows.append(row)
    return s, pd.DataFrame(rows).fillna(MISSING)


def baseline_table(rows: list[dict]):
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
    return numbers.drop(columns="seeds"), shown


def _loo_cell(loo: list[dict], slope: float) -> str:
    """Range of the slope over the leave-one-out fits, and the fit that moves it most."""
    if not loo:
        return f"too few backbones (needs {MIN_POINTS + 1})"
    slopes = [f["slope"] for f in loo]
    top = max(loo, key=lambda f: abs(f["slope"] - slope))
    return (f"slope {min(slopes):.3g} to {max(slopes):.3g}; without {top['left_out']}: {top['slope']:.3g} "
            f"[{top['slope_ci95'][0]:.3g}, {top['slope_ci95'][1]:.3g}], p {top['p_value']:.3g}")


def regression_table(regs: dict[str, dict]):
    rows, shown = [], []
    for bench, r in regs.items():
        base = {"benchmark": bench, "metric": r["metric"], "n": r["n"]}
        if r["status"] != "ok":
            rows.append({**base, "status": r["status"]})
            shown.append({"benchmark": bench, "n": r["n"], "result": r["status"]})
            continue
        boot = r["bootstrap"].get("slope_ci95")
        rows.append({**base, "status": "ok", **{k: r[k] for k in (
            "slope", "intercept", "r2", "p_value", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p")},
            "slope_ci95_low": r["slope_ci95"][0], "slope_ci95_high": r["slope_ci95"][1],
            "boot_slope_ci95_low": boot[0] if boot else np.nan, "boot_slope_ci95_high": boot[1] if boot else np.nan,
            "bootstrap": r["bootstrap"]["method"]})
        shown.append({
            "benchmark": bench, "n": r["n"],
            "slope [95% CI]": f"{r['slope']:.3g} [{r['slope_ci95'][0]:.3g}, {r['slope_ci95'][1]:.3g}]",
            "intercept": f"{r['intercept']:.3g}", "R²": f"{r['r2']:.3f}", "p": f"{r['p_value']:.3g}",
            "Spearman ρ (p)": f"{r['spearman_rho']:.3f} ({r['spearman_p']:.3g})",
            "Kendall τ (p)": f"{r['kendall_tau']:.3f} ({r['kendall_p']:.3g})",
            "bootstrap slope 95%": f"[{boot[0]:.3g}, {boot[1]:.3g}] ({r['bootstrap']['method']})" if boot
            else r["bootstrap"]["note"],
            "leaving one backbone out": _loo_cell(r.get("leave_one_out") or [], r["slope"]),
        })
    return pd.DataFrame(rows), pd.DataFrame(shown).fillna(MISSING)


def backbones_table(config: dict, reports: dict[str, dict]):
    """Published size and VQA score (config) next to the measured counts (backbone reports, when given)."""
    rows, scores = [], vqa_scores(config)
    for name, e in config.get("backbones", {}).items():
        rep = reports.get(name, {})
        vqa = scores.get(name) or {}
        rows.append(dict(
            backbone=name, family=e.get("family"), source=e.get("source"), params_b_published=e.get("params_b"),
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


def write_table(out: Path, name: str, numbers: pd.DataFrame, shown: pd.DataFrame, title: str, prov: dict,
                page: str | None = None, html_dir: Path | None = None) -> list[Path]:
    """<name>.csv (numbers + provenance columns), <name>.md, <name>.tex and html/<name>.html (formatted) under
    ``out``. ``page``: the report page's name (its caption and category; default ``name``), written to
    ``html_dir`` (default ``out/html``) as ``<page>.html``."""
    from vlm4vla_core.aggregate.pages import caption

    page = page or name
    foot, text = footer(prov), caption(page, shown)
    csv = numbers.assign(git_commit=prov.get("git_commit", "unknown"), config_hash=prov.get("config_hash", "unknown"))
    md = f"### {title}\n\n{text}\n\n{shown.to_markdown(index=False, disable_numparse=True)}\n\n_{foot}_\n"
    tex = to_latex(shown, f"{title}. {foot}.")
    return [
        write_text(out / f"{name}.csv", csv.to_csv(index=False)),
        write_text(out / f"{name}.md", md),
        write_text(out / f"{name}.tex", tex),
        write_text((html_dir or out / "html") / f"{page}.html", to_html(shown, title, foot, text)),
    ]
