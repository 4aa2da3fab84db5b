"""Study figures (PNG and PDF, matplotlib Agg): VQA vs control, ablations, execution modes, CALVIN chains."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vlm4vla_core.aggregate.files import save_figure, write_text  # noqa: E402
from vlm4vla_core.aggregate.results import ABLATIONS, ALL, ZERO, metric_label  # noqa: E402
from vlm4vla_core.aggregate.stats import CHAIN_LENGTHS, confidence_band, summarize  # noqa: E402
from vlm4vla_core.aggregate.tables import ordered, backbone_order  # noqa: E402
from vlm4vla_core.config import MODES, Study  # noqa: E402

COLORS = plt.get_cmap("tab10").colors


def _save(fig, out: Path, name: str, note: str | None = None, plotted: pd.DataFrame | None = None) -> list[Path]:
    """PNG and PDF of ``fig``; ``note`` (provenance: commit, config hash) goes into their metadata.
    ``plotted``: the numbers drawn (points, bars, interval ends), written beside the figure as <name>.csv."""
    paths = [save_figure(fig, out / f"{name}.{ext}", note) for ext in ("png", "pdf")]
    if plotted is not None:
        paths.append(write_text(out / f"{name}.csv", plotted.to_csv(index=False)))
    plt.close(fig)
    return paths


def interval_cells(results: pd.DataFrame, cells: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (benchmark, backbone, ablation) run over all tasks: the value drawn (``estimate``) and its 95%
    interval (``ci_low``, ``ci_high``) from the inference layer's cells (inference/cells.csv); without cells (a
    results table has no episodes) the mean over seeds and no interval."""
    if cells is not None and len(cells):
        c = cells[["benchmark", "backbone", "ablation", "metric", "estimate", "ci_low", "ci_high"]]
        return c.assign(interval="95% interval, inference/cells")
    s = summarize(results)
    s = s[s["task"] == ALL]
    return pd.DataFrame({"benchmark": s["benchmark"], "backbone": s["backbone"], "ablation": s["ablation"],
                         "metric": s["metric"], "estimate": s["mean"], "ci_low": np.nan, "ci_high": np.nan,
                         "interval": "none (no episode records)"})


def vqa_scatter(reg: dict, out: Path, name: str, note: str | None = None, xlabel: str = "VQA score",
                sources: str = "inference/slopes.json", cells: pd.DataFrame | None = None, within: dict | None = None,
                families: dict[str, str] | None = None, published: dict[str, float] | None = None) -> list[Path]:
    """Control vs VQA score of one benchmark with the OLS fit and its 95% confidence band; ``xlabel`` names
    the score, ``sources`` the file that gives each backbone's. ``cells`` (inference/cells.csv): each point is its
    cell's estimate with the 95% interval as error bar (else the mean over seeds and no bar). ``within``: the
    within-family fit (slopes.json, ``y ~ x + C(family)``), drawn as one line per family of ``families`` (backbone
    -> family) with the common slope through the family's mean point, which is where least squares puts it.
    ``published``: backbone -> the published control value, drawn beside the reproduced point."""
    pts = pd.DataFrame(reg["points"]).rename(columns={"mean": "estimate"})
    pts = pts.assign(ci_low=np.nan, ci_high=np.nan)
    if cells is not None and len(cells):
        c = cells[(cells["benchmark"] == reg["benchmark"]) & (cells["ablation"] == "full")].set_index("backbone")
        have = pts["backbone"].isin(c.index)
        for col in ("estimate", "ci_low", "ci_high"):
            pts.loc[have, col] = c.loc[pts.loc[have, "backbone"], col].to_numpy()
    pts["family"] = [(families or {}).get(b, b) for b in pts["backbone"]]
    pts["published"] = [(published or {}).get(b, np.nan) for b in pts["backbone"]]
    x, y = pts["vqa_score"].to_numpy(float), pts["estimate"].to_numpy(float)
    grid = np.linspace(x.min() - 0.05 * np.ptp(x), x.max() + 0.05 * np.ptp(x), 100)
    mean, lo, hi = confidence_band(x, y, grid)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.fill_between(grid, lo, hi, color=COLORS[0], alpha=0.18, label="95% confidence band (OLS mean)")
    ax.plot(grid, mean, color=COLORS[0], lw=2, label=f"OLS: slope {reg['slope']:.3g}, R² {reg['r2']:.2f}, p {reg['p_value']:.2g}")
    if within and within.get("status") == "ok":
        for i, (fam, g) in enumerate(pts.groupby("family", sort=False)):
            gx = np.array([g["vqa_score"].min(), g["vqa_score"].max()])
            ax.plot(gx, g["estimate"].mean() + within["slope"] * (gx - g["vqa_score"].mean()), ls=":", lw=1.5,
                    color=COLORS[(i + 2) % len(COLORS)],
                    label=f"family {fam}" + (f" (within-family slope {within['slope']:.3g}, "
                                             f"95% CI [{within['slope_ci95'][0]:.3g}, {within['slope_ci95'][1]:.3g}])"
                                             if i == 0 else ""))
    err = [np.nan_to_num(pts["estimate"] - pts["ci_low"]), np.nan_to_num(pts["ci_high"] - pts["estimate"])]
    ax.errorbar(x, y, yerr=err, fmt="o", color="black", ecolor="gray", capsize=3,
                label="backbone (estimate, 95% interval)" if pts["ci_low"].notna().any() else "backbone (mean over seeds)")
    if pts["published"].notna().any():
        p = pts[pts["published"].notna()]
        ax.scatter(p["vqa_score"], p["published"], marker="D", facecolors="none", edgecolors="crimson",
                   label="published value (VLM4VLA paper)")
    for _, r in pts.iterrows():
        ax.annotate(r["backbone"], (r["vqa_score"], r["estimate"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{xlabel} (per-backbone source in {sources})")
    ax.set_ylabel(metric_label(reg["metric"]))
    ax.set_title(f"{reg['benchmark']}: control vs {xlabel} (n={reg['n']}, Spearman ρ {reg['spearman_rho']:.2f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out, name, note, pts[["backbone", "family", "vqa_score", "estimate", "ci_low", "ci_high",
                                            "published"]])


def _grouped_bars(ax, data: pd.DataFrame, groups: list[str], series: list[str], labels: dict[str, str] | None = None):
    """Bars of data (index (group, series) -> mean, lo, hi: the error bar's ends) grouped by ``groups``; each
    group's bars are centred on its tick, whatever series it has (an SFT variant with only full fine-tuning: one
    bar on the tick)."""
    width = 0.8 / max(1, len(series))
    present = {g: [s for s in series if not np.isnan(data["mean"].get((g, s), np.nan))] for g in groups}
    labelled = set()
    for x, g in enumerate(groups):
        for j, name in enumerate(present[g]):
            i = series.index(name)
            m, lo, hi = (data[k].get((g, name), np.nan) for k in ("mean", "lo", "hi"))
            err = [[0.0], [0.0]] if np.isnan(lo) or np.isnan(hi) else [[m - lo], [hi - m]]
            ax.bar(x + (j - (len(present[g]) - 1) / 2) * width, m, width,
                   yerr=err, capsize=3, color=COLORS[i % len(COLORS)],
                   label=None if name in labelled else (labels or {}).get(name, name), error_kw={"elinewidth": 1})
            labelled.add(name)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _zero_line(ax, zero: pd.DataFrame, metric: str | None) -> None:
    """The zero-action baseline as a dashed line labelled with its value; the axis starts a little below
    zero so that a baseline of 0 is not hidden by the axis."""
    if zero.empty:
        return
    value = float(zero["mean"].iloc[0])
    ax.axhline(value, color="crimson", ls="--", lw=1.5, zorder=5,
               label=f"zero-action baseline ({value:.3g}{' %' if metric == 'success_rate' else ''})")
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, value - 0.03 * max(hi - lo, 1e-9)), max(hi, value + 0.03 * max(hi - lo, 1e-9)))


def ablation_bars(results: pd.DataFrame, config: Study, benchmarks: list[str], out: Path, name: str,
                  note: str | None = None, cells: pd.DataFrame | None = None) -> list[Path]:
    """Per benchmark: each backbone under each training regime; bar = the cell's estimate, error bar = its 95%
    interval from the inference layer (``cells``: inference/cells.csv; none without). The numbers drawn go to
    <name>.csv beside the figure."""
    s = interval_cells(results, cells)
    benches = ordered(s["benchmark"], benchmarks)
    fig, axes = plt.subplots(1, len(benches), figsize=(max(6, 1.2 * s["backbone"].nunique() + 3) * len(benches), 4.5),
                             squeeze=False)
    for ax, bench in zip(axes[0], benches):
        sb = s[s["benchmark"] == bench]
        policy = sb[sb["backbone"] != ZERO]
        groups = backbone_order(policy["backbone"], config)
        series = ordered(policy["ablation"], list(ABLATIONS if config.ablations is None else config.ablations) + list(ABLATIONS))
        data = policy.rename(columns={"estimate": "mean", "ci_low": "lo", "ci_high": "hi"})
        _grouped_bars(ax, data.set_index(["backbone", "ablation"]), groups, series)
        _zero_line(ax, sb[sb["backbone"] == ZERO].rename(columns={"estimate": "mean"}), sb["metric"].iloc[0])
        ax.set_title(bench)
        ax.set_ylabel(metric_label(sb["metric"].iloc[0]))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    with_ci = s["ci_low"].notna().any()
    fig.suptitle("Training regimes (estimate with its 95% interval)" if with_ci else "Training regimes (no interval: "
                 "a results table has no episodes)")
    return _save(fig, out, name, note, s)


def contrasts_plot(contrasts: pd.DataFrame, out: Path, name: str, note: str | None = None) -> list[Path]:
    """Every contrast of the inference layer (inference/contrasts.csv) as a point with its 95% interval, one
    panel per family of comparisons, each labelled with its probability of improvement and adjusted p."""
    c = contrasts.reset_index(drop=True)
    fams = list(dict.fromkeys(c["family"]))
    sizes = [int((c["family"] == f).sum()) for f in fams]
    fig, axes = plt.subplots(len(fams), 1, figsize=(8.5, 1.2 + 0.38 * sum(sizes) + 0.6 * len(fams)), squeeze=False,
                             gridspec_kw={"height_ratios": sizes})
    for ax, fam in zip(axes[:, 0], fams):
        g = c[c["family"] == fam].iloc[::-1]
        y = np.arange(len(g))
        ax.errorbar(g["difference"], y, xerr=[g["difference"] - g["ci_low"], g["ci_high"] - g["difference"]],
                    fmt="o", color="black", ecolor=COLORS[0], capsize=3)
        ax.axvline(0, color="gray", lw=1, ls="--")
        ax.set_yticks(y, [f"{a} − {b}" for a, b in zip(g["a"], g["b"])], fontsize=8)
        for yi, (_, r) in zip(y, g.iterrows()):
            ax.annotate(f"P(impr.) {r['prob_improvement']:.2f}, p adj. {r['p_adjusted']:.2g}", (1.01, yi),
                        xycoords=("axes fraction", "data"), va="center", fontsize=7)
        ax.set_title(fam, fontsize=9, loc="left")
        ax.set_xlabel(metric_label(g["metric"].iloc[0]) + " difference (a − b), 95% interval", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(hspace=0.9 if len(fams) > 1 else 0.2)  # room for each panel's axis label and title
    cols = ["family", "benchmark", "a", "b", "metric", "difference", "ci_low", "ci_high", "prob_improvement",
            "p_adjusted"]
    return _save(fig, out, name, note, c[cols])


def published_scatter(numbers: pd.DataFrame, cells: pd.DataFrame | None, out: Path, name: str,
                      note: str | None = None) -> list[Path]:
    """Reproduced vs published, one point per cell with a published counterpart (``numbers``: the published
    table's numbers), the reproduced value's 95% interval (inference/cells) as a vertical bar, and y = x."""
    p = numbers[numbers["published"].notna()].rename(columns={"mean": "reproduced"})
    if cells is not None and len(cells):  # the reproduced value and its interval: the inference layer's cell
        p = p.drop(columns=["ci_low", "ci_high"], errors="ignore").merge(
            cells[["benchmark", "backbone", "ablation", "estimate", "ci_low", "ci_high"]], how="left",
            on=["benchmark", "backbone", "ablation"])
        p["reproduced"] = p["estimate"].fillna(p["reproduced"])
    elif "ci_low" not in p:
        p = p.assign(ci_low=np.nan, ci_high=np.nan)
    metrics = list(dict.fromkeys(p["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        g = p[p["metric"] == metric]
        for i, (bench, gb) in enumerate(g.groupby("benchmark", sort=False)):
            err = [np.nan_to_num(gb["reproduced"] - gb["ci_low"]), np.nan_to_num(gb["ci_high"] - gb["reproduced"])]
            ax.errorbar(gb["published"], gb["reproduced"], yerr=err, fmt="o", capsize=3, color=COLORS[i % len(COLORS)],
                        label=bench)
            for _, r in gb.iterrows():
                ax.annotate(f"{r['backbone']}" + ("" if r["ablation"] == "full" else f"/{r['ablation']}"),
                            (r["published"], r["reproduced"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        lim = [np.nanmin([g["published"].min(), g["ci_low"].min(), g["reproduced"].min()]),
               np.nanmax([g["published"].max(), g["ci_high"].max(), g["reproduced"].max()])]
        ax.plot(lim, lim, color="gray", ls="--", lw=1, label="y = x (reproduced = published)")
        ax.set_xlabel(f"published ({metric_label(metric)})")
        ax.set_ylabel(f"reproduced ({metric_label(metric)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Reproduced vs published (error bar: the reproduced cell's 95% interval)")
    cols = ["benchmark", "backbone", "ablation", "metric", "published", "reproduced", "ci_low", "ci_high"]
    return _save(fig, out, name, note, p[cols])


def mode_bars(modes: pd.DataFrame, config: Study, benchmarks: list[str], out: Path, name: str,
              note: str | None = None, intervals: pd.DataFrame | None = None) -> list[Path]:
    """Per benchmark: full-fine-tuning runs under each execution mode (chunk, half chunk, one step).
    ``intervals`` (``stats.mode_intervals``): each bar is the mode's cell estimate with its 95% interval;
    without, the mean over seeds with the standard deviation over seeds. The numbers drawn go to <name>.csv."""
    zero = modes[modes["backbone"] == ZERO]
    g = modes[modes["ablation"].isin(["full", "none"]) & (modes["backbone"] != ZERO)]
    s = g.groupby(["backbone", "benchmark", "mode"])["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan)
    if intervals is not None and len(intervals):
        c = intervals[intervals["ablation"] == "full"].set_index(["backbone", "benchmark", "mode"])
        s = s.assign(mean=c["estimate"].reindex(s.index), lo=c["ci_low"].reindex(s.index),
                     hi=c["ci_high"].reindex(s.index))
        kind = "estimate with its 95% interval"
    else:
        s = s.assign(lo=s["mean"] - s["std"], hi=s["mean"] + s["std"])
        kind = "mean ± std over seeds"
    benches = ordered(g["benchmark"], benchmarks)
    fig, axes = plt.subplots(1, len(benches), figsize=(max(6, 1.2 * g["backbone"].nunique() + 3) * len(benches), 4.5),
                             squeeze=False)
    for ax, bench in zip(axes[0], benches):
        steps = g[g["benchmark"] == bench].groupby("mode")["execute_steps"].first().to_dict()
        labels = {m: f"{m} ({steps[m]} step{'s' if steps[m] != 1 else ''})" for m in steps}
        sb = s.xs(bench, level="benchmark")
        groups = backbone_order(sb.index.get_level_values("backbone"), config)
        series = ordered(sb.index.get_level_values("mode"), MODES)
        _grouped_bars(ax, sb, groups, series, labels)
        zb = zero[zero["benchmark"] == bench]
        _zero_line(ax, zb.groupby("benchmark")["value"].agg(mean="mean").reset_index(), zb["metric"].iloc[0]
                   if len(zb) else None)
        ax.set_title(bench)
        ax.set_ylabel(metric_label(g[g["benchmark"] == bench]["metric"].iloc[0]))
        ax.legend(fontsize=8, title="executed before re-planning", title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Success by execution mode (full fine-tuning, {kind})")
    return _save(fig, out, name, note, s.reset_index())


def calvin_lengths(lengths: pd.DataFrame, config: Study, benchmarks: list[str], out: Path, name: str,
                   note: str | None = None, intervals: pd.DataFrame | None = None) -> list[Path]:
    """CALVIN success rate at chain lengths 1..5 (``stats.calvin_length_success``), one line per backbone
    under full fine-tuning (and the zero-action baseline). ``intervals`` (``stats.calvin_length_intervals``):
    each point is its cell's estimate with the 95% interval as error bar; without, the mean over seeds with the
    standard deviation over seeds. The numbers drawn go to <name>.csv."""
    lengths = lengths[lengths["ablation"].isin(["full", "none"]) & (lengths["length"] > 0)]
    if intervals is not None and len(intervals):
        keys = ["backbone", "benchmark", "ablation", "length"]
        lengths = lengths.merge(intervals[keys + ["estimate", "ci_low", "ci_high"]], on=keys, how="left")
        lo, hi = lengths["ci_low"], lengths["ci_high"]
        drawn, kind = lengths["estimate"], "estimate with its 95% interval"
    else:
        lo, hi = lengths["mean"] - lengths["std"], lengths["mean"] + lengths["std"]
        drawn, kind = lengths["mean"], "mean ± std over seeds"
    lengths = lengths.assign(drawn=drawn, lo=lo, hi=hi)
    benches = ordered(lengths["benchmark"], benchmarks)
    fig, axes = plt.subplots(1, len(benches), figsize=(6.5 * len(benches), 4.5), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        lb = lengths[lengths["benchmark"] == bench]
        order = backbone_order(lb["backbone"], config)
        for i, bb in enumerate(order):
            g = lb[lb["backbone"] == bb].set_index("length").reindex(CHAIN_LENGTHS)
            err = [np.nan_to_num((g["drawn"] - g["lo"]).to_numpy(float)), np.nan_to_num((g["hi"] - g["drawn"]).to_numpy(float))]
            dodge = (i - (len(order) - 1) / 2) * 0.08  # side by side, so that the intervals do not hide each other
            ax.errorbar(np.asarray(CHAIN_LENGTHS) + dodge, g["drawn"], yerr=err, marker="o", capsize=3,
                        color="black" if bb == ZERO else COLORS[i % len(COLORS)], ls="--" if bb == ZERO else "-",
                        label=f"{bb} (n={int(g['n_episodes'].iloc[0])} chains)")
        ax.set_xticks(CHAIN_LENGTHS)
        ax.set_xlabel("chain length L (subtasks completed in a row)")
        ax.set_ylabel("success rate at length L (%)")
        ax.set_ylim(0, 100)
        ax.set_title(bench)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"CALVIN: chains with ≥ L subtasks done (full fine-tuning, {kind})")
    cols = ["benchmark", "backbone", "ablation", "length", "mean", "std", "n_episodes", "drawn", "lo", "hi"]
    return _save(fig, out, name, note, lengths[cols])
