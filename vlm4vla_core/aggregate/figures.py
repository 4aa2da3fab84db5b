"""Study figures (PNG and PDF, matplotlib Agg): VQA vs control, ablations, execution modes, CALVIN chains."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vlm4vla_core.aggregate.io import save_figure  # noqa: E402
from vlm4vla_core.aggregate.results import ABLATIONS, ALL, ZERO, metric_label  # noqa: E402
from vlm4vla_core.aggregate.stats import CHAIN_LENGTHS, confidence_band, summarize  # noqa: E402
from vlm4vla_core.aggregate.tables import ordered, backbone_order  # noqa: E402
from vlm4vla_core.config import MODES  # noqa: E402

COLORS = plt.get_cmap("tab10").colors


def _save(fig, out: Path, name: str, note: str | None = None) -> list[Path]:
    """PNG and PDF of ``fig``; ``note`` (provenance: commit, config hash) goes into their metadata."""
    paths = [save_figure(fig, out / f"{name}.{ext}", note) for ext in ("png", "pdf")]
    plt.close(fig)
    return paths


def vqa_scatter(reg: dict, out: Path, name: str, note: str | None = None, xlabel: str = "VQA score",
                sources: str = "regression.json") -> list[Path]:
    """Control vs VQA score of one benchmark with the OLS fit and its 95% confidence band; ``xlabel`` names
    the score, ``sources`` the file that gives each backbone's."""
    pts = reg["points"]
    x = np.array([p["vqa_score"] for p in pts])
    y = np.array([p["mean"] for p in pts])
    err = np.array([0.0 if p["std"] is None or np.isnan(p["std"]) else p["std"] for p in pts])
    grid = np.linspace(x.min() - 0.05 * np.ptp(x), x.max() + 0.05 * np.ptp(x), 100)
    mean, lo, hi = confidence_band(x, y, grid)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.fill_between(grid, lo, hi, color=COLORS[0], alpha=0.18, label="95% confidence band (OLS mean)")
    ax.plot(grid, mean, color=COLORS[0], lw=2, label=f"OLS: slope {reg['slope']:.3g}, R² {reg['r2']:.2f}, p {reg['p_value']:.2g}")
    ax.errorbar(x, y, yerr=err, fmt="o", color="black", ecolor="gray", capsize=3, label="backbone (mean ± std over seeds)")
    for p in pts:
        ax.annotate(p["backbone"], (p["vqa_score"], p["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{xlabel} (per-backbone source in {sources})")
    ax.set_ylabel(metric_label(reg["metric"]))
    ax.set_title(f"{reg['benchmark']}: control vs {xlabel} (n={reg['n']}, Spearman ρ {reg['spearman_rho']:.2f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, name, note)


def _grouped_bars(ax, data: pd.DataFrame, groups: list[str], series: list[str], labels: dict[str, str] | None = None):
    """Bars of data (index (group, series) -> mean, std) grouped by ``groups``; each group's bars are
    centred on its tick, whatever series it has (an SFT variant with only full fine-tuning: one bar on the tick)."""
    width = 0.8 / max(1, len(series))
    present = {g: [s for s in series if not np.isnan(data["mean"].get((g, s), np.nan))] for g in groups}
    labelled = set()
    for x, g in enumerate(groups):
        for j, name in enumerate(present[g]):
            i = series.index(name)
            std = data["std"].get((g, name), np.nan)
            ax.bar(x + (j - (len(present[g]) - 1) / 2) * width, data["mean"][(g, name)], width,
                   yerr=0 if np.isnan(std) else std, capsize=3, color=COLORS[i % len(COLORS)],
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


def ablation_bars(results: pd.DataFrame, config: dict, benchmarks: list[str], out: Path, name: str,
                  note: str | None = None) -> list[Path]:
    """Per benchmark: each backbone under each training regime, error bars = std over seeds."""
    s = summarize(results)
    s = s[s["task"] == ALL]
    benches = ordered(s["benchmark"], benchmarks)
    fig, axes = plt.subplots(1, len(benches), figsize=(max(6, 1.2 * s["backbone"].nunique() + 3) * len(benches), 4.5),
                             squeeze=False)
    for ax, bench in zip(axes[0], benches):
        sb = s[s["benchmark"] == bench]
        policy = sb[sb["backbone"] != ZERO]
        groups = backbone_order(policy["backbone"], config)
        series = ordered(policy["ablation"], list(config.get("ablations", ABLATIONS)) + list(ABLATIONS))
        _grouped_bars(ax, policy.set_index(["backbone", "ablation"]), groups, series)
        _zero_line(ax, sb[sb["backbone"] == ZERO], sb["metric"].iloc[0])
        ax.set_title(bench)
        ax.set_ylabel(metric_label(sb["metric"].iloc[0]))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Training regimes (mean ± std over seeds)")
    return _save(fig, out, name, note)


def mode_bars(modes: pd.DataFrame, config: dict, benchmarks: list[str], out: Path, name: str,
              note: str | None = None) -> list[Path]:
    """Per benchmark: full-fine-tuning runs under each execution mode (chunk, half chunk, one step)."""
    zero = modes[modes["backbone"] == ZERO]
    g = modes[modes["ablation"].isin(["full", "none"]) & (modes["backbone"] != ZERO)]
    s = g.groupby(["backbone", "benchmark", "mode"])["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan)
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
    fig.suptitle("Success by execution mode (full fine-tuning, mean ± std over seeds)")
    return _save(fig, out, name, note)


def calvin_lengths(lengths: pd.DataFrame, config: dict, benchmarks: list[str], out: Path, name: str,
                   note: str | None = None) -> list[Path]:
    """CALVIN success rate at chain lengths 1..5 (``stats.calvin_length_success``), one line per backbone
    under full fine-tuning (and the zero-action baseline), error bars = std over seeds."""
    lengths = lengths[lengths["ablation"].isin(["full", "none"]) & (lengths["length"] > 0)]
    benches = ordered(lengths["benchmark"], benchmarks)
    fig, axes = plt.subplots(1, len(benches), figsize=(6.5 * len(benches), 4.5), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        lb = lengths[lengths["benchmark"] == bench]
        for i, bb in enumerate(backbone_order(lb["backbone"], config)):
            g = lb[lb["backbone"] == bb].set_index("length").reindex(CHAIN_LENGTHS)
            ax.errorbar(CHAIN_LENGTHS, g["mean"], yerr=np.nan_to_num(g["std"].to_numpy(float)), marker="o", capsize=3,
                        color="black" if bb == ZERO else COLORS[i % len(COLORS)], ls="--" if bb == ZERO else "-",
                        label=f"{bb} (n={int(g['n_episodes'].iloc[0])} chains)")
        ax.set_xticks(CHAIN_LENGTHS)
        ax.set_xlabel("chain length L (subtasks completed in a row)")
        ax.set_ylabel("success rate at length L (%)")
        ax.set_ylim(0, 100)
        ax.set_title(bench)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("CALVIN: chains with ≥ L subtasks done (full fine-tuning, mean ± std over seeds)")
    return _save(fig, out, name, note)
