"""Training diagnostics and per-task views: learning curves from the runs' metrics.jsonl, the SFT loss
curves, a backbone x task heatmap of success annotated with k/n, and the rollout videos of each
(backbone, benchmark, regime, task) copied next to the tables.

A run's ``metrics.jsonl`` sits next to its ``eval.json`` (the training stage writes one row every
``log_every`` steps: loss, arm and gripper losses, gripper accuracy, lr); an SFT variant's sits in
its run folder (``sft/<variant>/metrics.jsonl``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate.figures import COLORS, _save, plt
from vlm4vla_core.aggregate.results import ABLATIONS, ZERO, ResultsError
from vlm4vla_core.aggregate.tables import backbone_order, ordered
from vlm4vla_core.config import Study

METRICS_FILE = "metrics.jsonl"
#: what each curve panel plots: (metrics.jsonl key, axis label, log scale)
PANELS = {"loss": ("training loss", True), "gripper_acc": ("gripper accuracy", False)}


def read_metrics(path: str | Path) -> pd.DataFrame:
    """One metrics.jsonl -> a DataFrame (one row per logged step); a malformed line names the file and line."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ResultsError(f"{path}: line {i} is not JSON ({err})") from None
    df = pd.DataFrame(rows)
    if len(df) and "step" not in df:
        raise ResultsError(f"{path}: rows have no 'step'")
    # a resumed run appends from its last checkpoint: the latest row of a step wins
    return df.drop_duplicates("step", keep="last").sort_values("step") if len(df) else df


def training_curves(modes: pd.DataFrame | None) -> pd.DataFrame:
    """The logged metrics of every run whose metrics.jsonl sits next to its evaluation JSON (one row
    per run and step, with backbone, benchmark, ablation, seed)."""
    if modes is None or "run_file" not in modes:
        return pd.DataFrame()
    runs = modes.drop_duplicates("run_file")
    frames = []
    for _, r in runs[runs["backbone"] != ZERO].iterrows():
        path = Path(r["run_file"]).parent / METRICS_FILE
        if path.is_file():
            df = read_metrics(path)
            if len(df):
                frames.append(df.assign(backbone=r["backbone"], benchmark=r["benchmark"], ablation=r["ablation"],
                                        seed=int(r["seed"])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sft_curves(paths) -> pd.DataFrame:
    """SFT metrics.jsonl files (``sft/<variant>/metrics.jsonl``; the variant is the folder's name)."""
    frames = [read_metrics(p).assign(variant=Path(p).parent.name) for p in paths or [] if Path(p).is_file()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _band(ax, df: pd.DataFrame, key: str, color, label: str) -> None:
    """Mean over seeds at each logged step, and the range over seeds as a band."""
    g = df.groupby("step")[key].agg(["mean", "min", "max", "size"])
    ax.plot(g.index, g["mean"], color=color, lw=1.5, label=f"{label} ({df['seed'].nunique()} seed(s))")
    if df["seed"].nunique() > 1:
        ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.2, lw=0)


def learning_curves(curves: pd.DataFrame, config: Study, benchmarks: list[str], out: Path, name: str,
                    note: str | None = None) -> list[Path]:
    """Per benchmark, the training loss and the gripper accuracy against the step, one line per backbone
    under full fine-tuning: the mean over seeds with the range over seeds as a band."""
    full = curves[curves["ablation"] == "full"]
    benches = ordered(full["benchmark"], benchmarks)
    panels = [k for k in PANELS if k in full]
    fig, axes = plt.subplots(len(benches), len(panels), figsize=(6 * len(panels), 3.8 * len(benches)), squeeze=False)
    for row, bench in zip(axes, benches):
        fb = full[full["benchmark"] == bench]
        for ax, key in zip(row, panels):
            label, log = PANELS[key]
            for i, bb in enumerate(backbone_order(fb["backbone"], config)):
                sub = fb[(fb["backbone"] == bb) & fb[key].notna()]
                if len(sub):
                    _band(ax, sub, key, COLORS[i % len(COLORS)], bb)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label)
            ax.set_title(f"{bench}: {label}")
            ax.grid(alpha=0.3)
        row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Learning curves, full fine-tuning (line: mean over seeds, band: range over seeds)")
    fig.tight_layout()
    return _save(fig, out, name, note)


def sft_loss_curves(curves: pd.DataFrame, out: Path, name: str, note: str | None = None) -> list[Path]:
    """The SFT loss (answer tokens' cross-entropy) of every embodied-SFT variant against the step."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (variant, df) in enumerate(sorted(curves.groupby("variant"), key=lambda kv: kv[0])):
        ax.plot(df["step"], df["loss"], color=COLORS[i % len(COLORS)], lw=1.5, label=variant)
    ax.set_yscale("log")
    ax.set_xlabel("SFT step")
    ax.set_ylabel("SFT loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Embodied SFT: loss per variant (one run each)")
    return _save(fig, out, name, note)


def task_counts(episodes: pd.DataFrame, benchmark: str, ablation: str = "full") -> pd.DataFrame:
    """Successes k and episodes n per (backbone, task) of a success-rate benchmark, pooled over seeds, for
    the regime ``ablation`` and the zero-action baseline."""
    e = episodes[(episodes["benchmark"] == benchmark) & episodes["ablation"].isin([ablation, "none"])
                 & (episodes["metric"] == "success_rate")]
    return e.groupby(["backbone", "task"])["success"].agg(k="sum", n="size").reset_index()


def task_heatmap(episodes: pd.DataFrame, config: Study, benchmark: str, out: Path, name: str,
                 note: str | None = None) -> list[Path]:
    """Backbone x task success (%) of full fine-tuning pooled over seeds; each cell annotated with k/n."""
    counts = task_counts(episodes, benchmark)
    rows = backbone_order(counts["backbone"], config)
    entry = config.benchmarks.get(benchmark)
    tasks = ordered(sorted(counts["task"].unique()), list(entry.entry.get("tasks", []) if entry else []))
    k = counts.pivot(index="backbone", columns="task", values="k").reindex(index=rows, columns=tasks)
    n = counts.pivot(index="backbone", columns="task", values="n").reindex(index=rows, columns=tasks)
    rate = 100 * k / n
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 3, 0.55 * len(rows) + 1.8))
    im = ax.imshow(rate.to_numpy(float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(tasks)):
            if not np.isnan(rate.iat[i, j]):
                ax.text(j, i, f"{int(k.iat[i, j])}/{int(n.iat[i, j])}", ha="center", va="center", fontsize=9,
                        color="white" if rate.iat[i, j] < 60 else "black")
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    fig.colorbar(im, ax=ax, label="success (%)")
    ax.set_title(f"{benchmark}: success per task, full fine-tuning (k/n pooled over seeds)")
    return _save(fig, out, name, note)


def pick_videos(episodes: pd.DataFrame, config: Study, per_outcome: int = 1) -> pd.DataFrame:
    """Up to ``per_outcome`` successful and failed episodes with a video per (backbone, benchmark, ablation,
    task), from the reported mode, lowest seed and episode first; backbones in the config's order, then
    regimes, tasks (the benchmark's order) and outcomes."""
    if "video" not in episodes:
        return episodes.iloc[0:0]
    v = episodes[episodes["video"].notna()].copy()
    v["outcome"] = np.where(v["success"], "success", "failure")
    rank = {b: i for i, b in enumerate(backbone_order(v["backbone"], config))}
    tasks = {t: i for i, t in enumerate(ordered(sorted(v["task"].unique()), [
        t for e in config.benchmarks.values() for t in e.entry.get("tasks", [])]))}
    v = v.assign(_b=v["backbone"].map(rank), _a=v["ablation"].map(lambda a: (["none", *ABLATIONS] + [a]).index(a)),
                 _t=v["task"].map(tasks))
    v = v.sort_values(["_b", "benchmark", "_a", "_t", "outcome", "seed", "video"])
    picked = v.groupby(["backbone", "benchmark", "ablation", "task", "outcome"], sort=False).head(per_outcome)
    return picked.drop(columns=["_b", "_a", "_t"])


def copy_videos(picked: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Copy the picked videos to ``out/videos/<benchmark>/<backbone>/<ablation>/<task>_<outcome>_seed<s>.mp4``;
    returns the rows with ``file`` (relative to ``out``) and the files written. A missing video stops with its path."""
    from vlm4vla_core.io import atomic_write

    rows, written = [], []
    for _, r in picked.iterrows():
        src = Path(r["video"])
        if not src.is_file():
            raise ResultsError(f"rollout video not found: {src} (named by an episode of {r['backbone']}/"
                               f"{r['benchmark']}/{r['ablation']} seed {r['seed']})")
        rel = Path("videos") / r["benchmark"] / r["backbone"] / r["ablation"] / \
            f"{r['task']}_{r['outcome']}_seed{int(r['seed'])}.mp4"
        written.append(atomic_write(out / rel, lambda tmp, src=src: shutil.copyfile(src, tmp)))
        rows.append({**r.to_dict(), "file": rel.as_posix()})
    return pd.DataFrame(rows), written


def video_links(videos: pd.DataFrame) -> dict[tuple, str]:
    """(backbone, benchmark, ablation) -> Markdown links to its videos, per task, for the per-task table."""
    links = {}
    if videos is None or not len(videos):
        return links
    for key, g in videos.groupby(["backbone", "benchmark", "ablation"], sort=False):
        links[key] = "; ".join(f"{task}: " + " ".join(f"[{o}]({f})" for o, f in zip(t["outcome"], t["file"]))
                               for task, t in g.groupby("task", sort=False))
    return links


# -- how episodes end: time to success and the failure breakdown ---------------------------------
def _outcome_order(outcomes) -> list[str]:
    """success first, then the failures by kind (CALVIN's subtasks in order), raised last."""
    rank = {"success": 0, "raised": 9}
    return sorted(set(outcomes), key=lambda o: (rank.get(o, 5), o))


def outcome_counts(episodes: pd.DataFrame, config: Study, benchmarks: list[str]) -> pd.DataFrame:
    """One row per (benchmark, backbone, ablation) of the reported mode: episodes, successes, the steps to success
    (median, quartiles, mean; from each record's ``success_step``) and the count of every outcome (records'
    ``outcome``: success, timed out, raised, a plug-in's own kinds), pooled over seeds and tasks."""
    rows = []
    kinds = _outcome_order(episodes["outcome"])
    for bench in ordered(episodes["benchmark"], benchmarks):
        eb = episodes[episodes["benchmark"] == bench]
        for bb in backbone_order(eb["backbone"], config):
            ebb = eb[eb["backbone"] == bb]
            for abl in ordered(ebb["ablation"], list(config.ablations or ABLATIONS) + ["none"]):
                g = ebb[ebb["ablation"] == abl]
                t = pd.to_numeric(g.loc[g["success"].astype(bool), "success_step"], errors="coerce").dropna()
                n = g["outcome"].value_counts()
                rows.append(dict(benchmark=bench, backbone=bb, ablation=abl, episodes=len(g),
                                 successes=int(g["success"].astype(bool).sum()), timed=len(t),
                                 steps_median=t.median() if len(t) else np.nan,
                                 steps_q1=t.quantile(0.25) if len(t) else np.nan,
                                 steps_q3=t.quantile(0.75) if len(t) else np.nan,
                                 steps_mean=t.mean() if len(t) else np.nan,
                                 **{f"n_{k}": int(n.get(k, 0)) for k in kinds}))
    return pd.DataFrame(rows)


def outcomes_table(counts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, shown): the steps to success as median [quartiles] over the successful episodes, and each
    outcome as k/n of the episodes."""
    kinds = [c[2:] for c in counts.columns if c.startswith("n_")]
    shown = pd.DataFrame({"benchmark": counts["benchmark"], "backbone": counts["backbone"],
                          "training regime": counts["ablation"], "episodes": counts["episodes"]})
    shown["steps to success: median [Q1, Q3] (mean)"] = [
        "-" if not r["timed"] else f"{r['steps_median']:g} [{r['steps_q1']:g}, {r['steps_q3']:g}] ({r['steps_mean']:.1f})"
        for _, r in counts.iterrows()]
    for k in kinds:
        shown[k] = [f"{r[f'n_{k}']}/{r['episodes']}" for _, r in counts.iterrows()]
    return counts, shown


def outcomes_plot(counts: pd.DataFrame, episodes: pd.DataFrame, benchmarks: list[str], out: Path, name: str,
                  note: str | None = None) -> list[Path]:
    """Per benchmark: the share of each outcome per (backbone, regime) as stacked bars, and the steps to success
    of every successful episode (box plot), from the same counts as the outcomes table (<name>.csv beside it)."""
    kinds = [c[2:] for c in counts.columns if c.startswith("n_")]
    benches = ordered(counts["benchmark"], benchmarks)
    fig, axes = plt.subplots(len(benches), 2, figsize=(12, 0.5 * counts.groupby("benchmark").size().max() * 1.2 + 2.5),
                             squeeze=False)
    failures = [COLORS[i] for i in (1, 3, 4, 5, 6, 8, 9)]  # tab10 without blue, green and gray
    colors = {k: ("tab:green" if k == "success" else "dimgray" if k == "raised" else failures[i % len(failures)])
              for i, k in enumerate(k for k in kinds if k not in ("success", "raised"))}
    colors.update(success="tab:green", raised="dimgray")
    for (ax, axt), bench in zip(axes, benches):
        c = counts[counts["benchmark"] == bench].reset_index(drop=True)
        labels = [f"{b}" + ("" if a in ("full", "none") else f"/{a}") for b, a in zip(c["backbone"], c["ablation"])]
        y = np.arange(len(c))[::-1]
        left = np.zeros(len(c))
        for k in kinds:
            share = 100 * c[f"n_{k}"] / c["episodes"]
            if share.any():
                ax.barh(y, share, left=left, color=colors[k], label=k)
            left += share
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of episodes (%)")
        ax.set_title(f"{bench}: how episodes ended", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        e = episodes[(episodes["benchmark"] == bench) & episodes["success"].astype(bool)]
        data = [pd.to_numeric(e[(e["backbone"] == b) & (e["ablation"] == a)]["success_step"], errors="coerce").dropna()
                for b, a in zip(c["backbone"], c["ablation"])]
        if any(len(d) for d in data):
            axt.boxplot([d.to_numpy() if len(d) else [np.nan] for d in data], positions=y, orientation="horizontal",
                        widths=0.5)
        else:
            axt.text(0.5, 0.5, "no successful episode records its steps", transform=axt.transAxes, ha="center")
        axt.set_yticks(y, labels, fontsize=8)
        axt.set_xlabel("steps to success (successful episodes)")
        axt.set_title(f"{bench}: time to success", fontsize=9, loc="left")
        axt.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(hspace=0.6, wspace=0.55)  # room for the legend and the arms' labels
    return _save(fig, out, name, note, counts)
