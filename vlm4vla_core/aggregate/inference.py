"""Inference over episodes, seeds and arms: every cell with an interval, every comparison with a test.

The unit of analysis is the evaluation episode. Each benchmark has a design:

* ``crossed``: the same episodes (ids) for every seed of an arm and for every arm (CALVIN's chains,
  SimplerEnv's task x episode id, LIBERO's task x initial state);
* ``nested``: every seed evaluates its own episodes, shared by every arm at that seed (Meta-World's
  task x episode seed, offset by the training seed).

The design is read off the episode ids themselves, so a results set from any benchmark gets the
analysis its episodes allow.

Variance components (method of moments; statsmodels has no pooled balanced-ANOVA estimator): per cell
(benchmark x arm) the mean squares of seeds, episodes and residual of the seed x episode table; the
seed component ``s2_seed = (MS_seed - MS_res) / n`` is pooled over the cells of a benchmark (weights:
its degrees of freedom S - 1), truncated at zero. A cell's mean over S seeds of n episodes then has

    Var = s2_seed / S + MS_ep / (n S)

where MS_ep is the cell's own episode mean square (nested: the within-seed variance; crossed: S times
the variance of the episode means, which holds episode difficulty and residual). The interval is
Student t with Satterthwaite degrees of freedom. One seed: the episode term alone, labelled
"episodes only". A contrast of two arms is the same computation on the episode-wise differences
(paired on (seed, episode) where both arms ran the same episodes) with a seed component of
2 s2_seed (s2_seed when one arm's outcomes are all the same, as the zero-action baseline's); unpaired,
the two cell variances add.

Written here by hand (nothing in scipy/statsmodels does it): the pooled moment estimator, the
Satterthwaite degrees of freedom, the paired contrast, and Holm's adjustment (see ``adjusted_p``); tests
come from scipy, Benjamini-Hochberg from scipy, the reference mixed model from statsmodels ``MixedLM``.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from vlm4vla_core.aggregate.results import ALL, ZERO, Results, metric_decimals
from vlm4vla_core.config import Study

LEVEL = 0.95
#: the range of each metric's values, to clip intervals
RANGES = {"success_rate": (0.0, 100.0), "avg_len": (0.0, 5.0)}
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}


# -- the episode frame ----------------------------------------------------------------------------
def arm_name(backbone: str, ablation: str) -> str:
    """An arm: backbone x training regime (an embodied-SFT variant is its own backbone key)."""
    return backbone if ablation in ("full", "none") else f"{backbone}/{ablation}"


def episode_frame(res: Results) -> pd.DataFrame:
    """One row per evaluation episode of the reported mode: benchmark, metric, backbone, ablation, arm,
    seed, mode, task, episode id, platform and the outcome ``y`` (success in %, or completed length)."""
    if res.episodes is None:
        raise ValueError("episode-level inference needs the runs' episode records (not a results CSV)")
    e = res.episodes
    ids = e["episode_id"] if "episode_id" in e else e["task"] + "/" + e.groupby(
        ["backbone", "benchmark", "ablation", "seed", "task"]).cumcount().astype(str)
    return pd.DataFrame(dict(
        benchmark=e["benchmark"], metric=e["metric"], backbone=e["backbone"], ablation=e["ablation"],
        arm=[arm_name(b, a) for b, a in zip(e["backbone"], e["ablation"])], seed=e["seed"].astype(int),
        mode=e["mode"], task=e["task"], episode_id=ids.astype(str),
        platform=e["platform"] if "platform" in e else "unknown", y=e["value"].astype(float)))


def design_of(frame: pd.DataFrame) -> str:
    """'crossed' when every seed of an arm ran the same episode ids, else 'nested' (episodes per seed)."""
    for _, g in frame.groupby("arm"):
        sets = [frozenset(s["episode_id"]) for _, s in g.groupby("seed")]
        if len(sets) > 1 and any(s != sets[0] for s in sets[1:]):
            return "nested"
    return "crossed"


# -- cell statistics (vectorised over a leading batch axis) ---------------------------------------
def cell_stats(y: np.ndarray, design: str) -> dict[str, np.ndarray]:
    """Mean squares of the seed x episode table ``y`` (..., S, n); NaN marks a missing episode (nested
    design only). Returns arrays over the batch axes: S, n, mean, ms_seed, ms_res, ms_ep, df_ep."""
    y = np.asarray(y, float)
    S = y.shape[-2]
    cnt = np.sum(~np.isnan(y), axis=-1)  # episodes per seed
    n = S / np.sum(1.0 / cnt, axis=-1)  # harmonic mean
    seed_means = np.nanmean(y, axis=-1)
    mean = seed_means.mean(axis=-1)
    ms_seed = n * (seed_means.var(axis=-1, ddof=1) if S > 1 else np.full(mean.shape, np.nan))
    if design == "crossed" and not np.isnan(y).any():
        nn = y.shape[-1]
        ep_means = y.mean(axis=-2)
        ms_ep = S * ep_means.var(axis=-1, ddof=1)
        df_ep = np.full(mean.shape, nn - 1.0)
        if S > 1:
            resid = y - seed_means[..., None] - ep_means[..., None, :] + mean[..., None, None]
            ms_res = (resid**2).sum(axis=(-2, -1)) / ((S - 1) * (nn - 1))
        else:
            ms_res = np.full(mean.shape, np.nan)
    else:
        dev = np.nansum((y - seed_means[..., None]) ** 2, axis=-1).sum(axis=-1)
        df_ep = (cnt - 1).sum(axis=-1).astype(float)
        ms_ep = dev / df_ep
        ms_res = ms_ep
    return dict(S=np.full(mean.shape, S), n=n, mean=mean, ms_seed=ms_seed, ms_res=ms_res, ms_ep=ms_ep, df_ep=df_ep)


def pooled_seed_component(st: dict[str, np.ndarray], axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed variance component pooled over cells (along ``axis``): (s2_seed >= 0, its degrees of freedom,
    the pooled MS_seed / n it was taken from, which sets its sampling variance)."""
    # a cell whose outcomes are all the same (0% success) has no seed variance to tell: it is left out
    w = np.where((st["S"] > 1) & ((st["ms_seed"] > 0) | (st["ms_res"] > 0)), st["S"] - 1.0, 0.0)
    raw = np.where(w > 0, (st["ms_seed"] - st["ms_res"]) / st["n"], 0.0)
    msn = np.where(w > 0, st["ms_seed"] / st["n"], 0.0)
    df = w.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(df > 0, df, 1.0)
        s2 = np.where(df > 0, (w * raw).sum(axis=axis) / safe, np.nan)
        q = np.where(df > 0, (w * msn).sum(axis=axis) / safe, np.nan)
    return np.maximum(s2, 0.0), df, q


def interval(mean, S, n, ms_ep, df_ep, s2_seed, df_seed, level: float = LEVEL, seed_scale: float = 1.0, seed_ms=None):
    """(se, df, lo, hi) of a mean over S seeds of n episodes: Var = scale*s2_seed/S + ms_ep/(n S), Student t
    with Satterthwaite df (the seed term's sampling variance is that of the pooled MS_seed / n it was
    taken from, ``seed_ms``). One seed (or no pooled seed component): the episode term alone."""
    S = np.asarray(S, float)
    a = np.where((S > 1) & np.isfinite(s2_seed), seed_scale * np.nan_to_num(s2_seed) / S, 0.0)
    a_ms = a if seed_ms is None else np.where(a > 0, seed_scale * np.nan_to_num(seed_ms) / S, 0.0)
    b = ms_ep / (n * S)
    var = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.where(a > 0, a_ms**2 / np.where(df_seed > 0, df_seed, 1.0), 0.0) + b**2 / df_ep
        df = np.where(denom > 0, var**2 / np.where(denom > 0, denom, 1.0), np.inf)
    se = np.sqrt(var)
    t = sps.t.ppf(0.5 + level / 2, df)
    return se, df, mean - t * se, mean + t * se


# -- cells ----------------------------------------------------------------------------------------
def _tables(frame: pd.DataFrame, design: str):
    """Per arm: the seed x episode array (NaN-padded where seeds ran different numbers of episodes)."""
    out = {}
    for arm, g in frame.groupby("arm", sort=False):
        if design == "crossed":
            t = g.pivot_table(index="seed", columns="episode_id", values="y", aggfunc="mean")
        else:
            g = g.assign(pos=g.groupby("seed").cumcount())
            t = g.pivot_table(index="seed", columns="pos", values="y", aggfunc="mean")
        out[arm] = t
    return out


def components(frame: pd.DataFrame) -> dict[str, dict]:
    """Per benchmark: design, per-arm statistics and the pooled seed component with its df."""
    out = {}
    for bench, fb in frame.groupby("benchmark", sort=False):
        design = design_of(fb)
        tabs = _tables(fb, design)
        arms = {}
        for arm, t in tabs.items():
            with warnings.catch_warnings():  # one episode per seed: no episode variance (NaN), said by the cell
                warnings.simplefilter("ignore", RuntimeWarning)
                st = {k: float(v) for k, v in cell_stats(t.to_numpy(), design).items()}
            g = fb[fb["arm"] == arm]
            st.update(backbone=g["backbone"].iloc[0], ablation=g["ablation"].iloc[0], metric=g["metric"].iloc[0],
                      episodes=int(len(g)), per_seed=sorted(g.groupby("seed").size().unique().tolist()),
                      platforms=sorted(g["platform"].unique()))
            arms[arm] = st
        keys = ["S", "n", "ms_seed", "ms_res"]
        pooled = {k: np.array([a[k] for a in arms.values()]) for k in keys}
        s2, df, q = pooled_seed_component(pooled)
        eps = [a["ms_ep"] for a in arms.values() if np.isfinite(a["ms_ep"]) and a["ms_ep"] > 0]
        plat = platform_component(fb)
        out[bench] = dict(design=design, metric=fb["metric"].iloc[0], arms=arms, s2_seed=float(s2), df_seed=float(df),
                          seed_ms=float(q),
                          s2_episode=float(np.mean(eps)) if eps else float("nan"),
                          s2_platform=plat["s2_platform"], df_platform=plat["df_platform"],
                          platform_runs=plat["runs"], platforms=sorted(fb["platform"].unique()))
    return out


def platform_component(frame: pd.DataFrame) -> dict:
    """The platform variance component of one benchmark's episode frame: every run (arm, seed) evaluated on two
    or more platform ids gives a platform x episode table (crossed when the platforms ran the same episode ids,
    else nested); its platform mean square against the residual (or within-platform) mean square is the same
    moment estimator as the seed component's (``cell_stats``, ``pooled_seed_component``), pooled over the runs
    with K - 1 degrees of freedom each and truncated at zero. A platform's run mean then varies by
    ``s2_platform`` beyond its episodes' sampling variance. None (df 0) when no run was evaluated twice."""
    multi = frame.groupby(["arm", "seed"])["platform"].transform("nunique") > 1
    f = frame[multi]
    if f.empty:
        return dict(s2_platform=None, df_platform=0.0, runs=0)
    stats = []
    for _, g in f.groupby(["arm", "seed"], sort=False):
        sets = [frozenset(x["episode_id"]) for _, x in g.groupby("platform")]
        crossed = all(x == sets[0] for x in sets[1:])
        if crossed:
            t = g.pivot_table(index="platform", columns="episode_id", values="y", aggfunc="mean")
        else:
            g = g.assign(pos=g.groupby("platform").cumcount())
            t = g.pivot_table(index="platform", columns="pos", values="y", aggfunc="mean")
        stats.append(cell_stats(t.to_numpy(), "crossed" if crossed else "nested"))
    pooled = {k: np.array([float(st[k]) for st in stats]) for k in ("S", "n", "ms_seed", "ms_res")}
    s2, df, _ = pooled_seed_component(pooled)
    return dict(s2_platform=float(s2) if df > 0 else None, df_platform=float(df), runs=len(stats))


def _floor_ms_ep(ms_ep: float, mean: float, N: int, metric: str) -> float:
    """All outcomes identical (0 or 100 % success): the episode term of an Agresti-Coull proportion."""
    if metric != "success_rate" or ms_ep > 0:
        return ms_ep
    p = (mean / 100 * N + 2) / (N + 4)
    return 1e4 * p * (1 - p) * N / (N + 4)


def exact_number(value: float, metric: str) -> str:
    """A transcribed value as given (up to two more decimals than the metric's, at least its own)."""
    d = metric_decimals(metric)
    shown = f"{value:.{d + 2}f}".rstrip("0")
    return shown + "0" * max(0, d - len(shown.split(".")[1]))


def cell_label(mean: float, lo: float, hi: float, S: int, per_seed: list, metric: str,
               interval: str = "seeds and episodes", heldout: float | None = None) -> str:
    """The one format of a table cell: '75.0 [58, 88], 2 seeds x 18 ep'. ``interval``: 'seeds and
    episodes' (the inference layer's), 'seeds' (pooled over the seeds' run values, no episode records),
    'episodes only' (one seed: '..., 1 seed x 18 ep, episodes only'), or 'none' (a value without an
    episode count, e.g. a transcribed published number: '23.95, 1 seed x ? ep, no interval'). A value
    chosen as the best of several execution modes is labelled so, with its held-out value beside it:
    'best-of-modes 75.0 [58, 88], 2 seeds x 18 ep; held-out 70.0'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    d = metric_decimals(metric)
    b = max(0, d - 1)
    known = [int(x) for x in per_seed if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not known:
        ep = "?"
    else:
        ep = "-".join(str(x) for x in sorted(set(known)) if x in (min(known), max(known)))
    seeds = f"{S} seed{'s' if S != 1 else ''} x {ep} ep"
    if interval != "none" and not (np.isfinite(lo) and np.isfinite(hi)):
        interval = "none"
    if interval == "none":
        text = f"{exact_number(mean, metric) if ep == '?' else f'{mean:.{d}f}'}, {seeds}, no interval"
    else:
        tail = ", episodes only" if interval == "episodes only" else ""
        text = f"{mean:.{d}f} [{lo:.{b}f}, {hi:.{b}f}], {seeds}{tail}"
    if heldout is not None and not (isinstance(heldout, float) and math.isnan(heldout)):
        return f"best-of-modes {text}; held-out {heldout:.{d}f}"
    return text


#: a cell label parsed back: estimate, interval, seeds, episodes per seed (the tests read tables with it)
LABEL = re.compile(r"^(?:best-of-modes )?(?P<estimate>-?[\d.]+)(?: \[(?P<low>-?[\d.]+), (?P<high>-?[\d.]+)\])?, "
                   r"(?P<seeds>\d+) seeds? x (?P<episodes>[\d?-]+) ep")


def cells(comp: dict[str, dict], level: float = LEVEL) -> pd.DataFrame:
    """Every (benchmark, arm) with its estimate, 95% interval, seeds, episodes and label."""
    rows = []
    for bench, c in comp.items():
        lo_r, hi_r = RANGES.get(c["metric"], (-np.inf, np.inf))
        for arm, a in c["arms"].items():
            ms_ep = _floor_ms_ep(a["ms_ep"], a["mean"], a["episodes"], a["metric"])
            # all outcomes the same (e.g. the zero-action baseline): the Agresti-Coull episode term alone
            s2 = c["s2_seed"] if a["ms_ep"] > 0 else 0.0
            se, df, lo, hi = interval(a["mean"], a["S"], a["n"], ms_ep, a["df_ep"], s2, c["df_seed"], level,
                                     seed_ms=c["seed_ms"])
            kind = "episodes only" if a["S"] == 1 else "seeds and episodes"
            if np.isfinite(lo) and np.isfinite(hi):
                lo, hi = max(float(lo), lo_r), min(float(hi), hi_r)
            else:  # one episode in one seed: no variance to tell
                lo, hi, kind = float("nan"), float("nan"), "none"
            rows.append(dict(benchmark=bench, arm=arm, backbone=a["backbone"], ablation=a["ablation"], metric=a["metric"],
                             design=c["design"], estimate=a["mean"], se=float(se), df=float(df), ci_low=lo, ci_high=hi,
                             seeds=int(a["S"]), episodes_per_seed=a["per_seed"][0] if len(a["per_seed"]) == 1 else a["n"],
                             episodes=a["episodes"], interval=kind, per_seed=a["per_seed"],
                             cell=cell_label(a["mean"], lo, hi, int(a["S"]), a["per_seed"], a["metric"], kind)))
    return pd.DataFrame(rows)


# -- the cells of every table ------------------------------------------------------------------------
SEP = "\x1f"  # joins a benchmark and a task (or a chain length) into one pooling unit


def _split_cells(c: pd.DataFrame, column: str) -> pd.DataFrame:
    """Cells computed on benchmark + SEP + ``column``: the benchmark and ``column`` apart again."""
    parts = c["benchmark"].str.split(SEP, n=1, expand=True)
    return c.assign(benchmark=parts[0], **{column: parts[1]})


def frame_cells(frame: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Cells of an episode frame with a ``task`` column: task 'all' (the run's episodes, seed variance pooled
    over the benchmark's arms) and each task (seed variance pooled over the arms on that task; one seed: the
    episodes alone)."""
    whole = cells(components(frame), level).assign(task=ALL)
    per_task = frame.assign(benchmark=frame["benchmark"] + SEP + frame["task"])
    tasks = _split_cells(cells(components(per_task), level), "task")
    return pd.concat([whole, tasks], ignore_index=True)


def seed_value_cells(values: pd.DataFrame, keys: list[str], pool: list[str], level: float = LEVEL) -> pd.DataFrame:
    """Cells from run-level values alone (a results CSV, or the execution modes, which keep no episode records
    of the modes not reported): per cell of ``keys`` the mean over seeds; its variance is the variance of one
    seed's value (which holds the seed's episodes) pooled over the cells of ``pool`` with its degrees of
    freedom, divided by the cell's seeds (interval 'seeds'). Without a pooled variance: a success rate with
    known episode counts gets the Wilson interval of its pooled episodes ('episodes only', statsmodels);
    anything else (a transcribed number) no interval ('none')."""
    from statsmodels.stats.proportion import proportion_confint

    g = values.groupby([*keys, "metric"], sort=False, dropna=False)
    c = g["value"].agg(mean="mean", var=lambda v: v.var(ddof=1) if len(v) > 1 else np.nan, S="size")
    c = c.assign(N=g["n_episodes"].agg(lambda v: v.sum() if v.notna().all() else np.nan),
                 per_seed=g["n_episodes"].agg(lambda v: sorted(v.tolist()))).reset_index()
    lo_b = c["metric"].map(lambda m: RANGES.get(m, (np.nan, np.nan))[0])
    hi_b = c["metric"].map(lambda m: RANGES.get(m, (np.nan, np.nan))[1])
    # a cell whose seeds all sit at a bound of the metric (0 % success) has no seed variance to tell: left out
    same = (c["var"] == 0) & ((c["mean"] == lo_b) | (c["mean"] == hi_b))
    c["w"] = np.where(c["var"].notna() & ~same, c["S"] - 1, 0)
    c["wv"] = c["w"] * c["var"].fillna(0)
    pooled = c.groupby(pool, sort=False, dropna=False)[["w", "wv"]].transform("sum")
    df = pooled["w"].to_numpy(float)
    s2 = np.where(df > 0, pooled["wv"] / np.where(df > 0, df, 1), np.nan)
    rows = []
    for (_, r), d, v, at_bound in zip(c.iterrows(), df, s2, same):
        lo_r, hi_r = RANGES.get(r["metric"], (-np.inf, np.inf))
        if d > 0 and v > 0 and not at_bound:
            se = math.sqrt(v / r["S"])
            t = sps.t.ppf(0.5 + level / 2, d)
            lo, hi, kind = r["mean"] - t * se, r["mean"] + t * se, "seeds"
        elif r["metric"] == "success_rate" and np.isfinite(r["N"]) and r["N"] > 0:
            k = round(r["mean"] / 100 * r["N"])
            lo, hi = (100 * x for x in proportion_confint(k, int(r["N"]), alpha=1 - level, method="wilson"))
            se, d, kind = np.nan, np.inf, "episodes only"
        else:
            se, d, lo, hi, kind = np.nan, np.nan, np.nan, np.nan, "none"
        lo, hi = max(lo, lo_r) if np.isfinite(lo) else lo, min(hi, hi_r) if np.isfinite(hi) else hi
        rows.append({**{k: r[k] for k in keys}, "metric": r["metric"], "estimate": r["mean"], "se": se, "df": float(d),
                     "ci_low": lo, "ci_high": hi, "seeds": int(r["S"]), "per_seed": r["per_seed"], "interval": kind})
    return pd.DataFrame(rows)


def table_cells(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Every cell the tables show, one row per (backbone, benchmark, ablation, task): ``summarize``'s mean, std,
    seeds, episodes and held-out value, with the estimate's 95% interval (``ci_low``, ``ci_high``), its kind
    (``interval``) and the formatted ``cell`` (``cell_label``). With episode records the interval is the
    inference layer's (``frame_cells``); from run values alone, ``seed_value_cells``."""
    from vlm4vla_core.aggregate.stats import summarize

    s = summarize(res.results)
    keys = ["backbone", "benchmark", "ablation", "task"]
    if res.episodes is not None:
        iv = frame_cells(episode_frame(res), level)
    else:
        iv = seed_value_cells(res.results, keys, ["benchmark", "task"], level)
    iv = iv[[*keys, "ci_low", "ci_high", "se", "df", "interval", "per_seed"]]
    s = s.merge(iv, on=keys, how="left", validate="one_to_one")
    return s.assign(cell=[cell_label(r["mean"], r["ci_low"], r["ci_high"], int(r["n_seeds"]), r["per_seed"], r["metric"],
                                     r["interval"], r.get("heldout")) for _, r in s.iterrows()])


def length_cells(frame: pd.DataFrame, lengths=(1, 2, 3, 4, 5), level: float = LEVEL) -> pd.DataFrame:
    """CALVIN: success (%) at each chain length L (a chain succeeds at L when it completed >= L subtasks) and
    the average length (L = 0), each with the inference layer's interval, per (backbone, benchmark, ablation)."""
    f = frame[frame["metric"] == "avg_len"]
    parts = [cells(components(f), level).assign(length=0)]
    for L in lengths:
        fl = f.assign(benchmark=f["benchmark"] + SEP + str(L), y=100.0 * (f["y"] >= L), metric="success_rate")
        parts.append(_split_cells(cells(components(fl), level), "length").assign(length=L))
    return pd.concat(parts, ignore_index=True)[["backbone", "benchmark", "ablation", "length", "ci_low", "ci_high",
                                                "interval", "per_seed", "cell"]]


# -- contrasts ------------------------------------------------------------------------------------
def contrast(frame: pd.DataFrame, comp: dict, bench: str, a: str, b: str, level: float = LEVEL) -> dict:
    """a - b on one benchmark: difference, interval, p (two-sided), probability of improvement
    P(a > b) (the t distribution of the estimate, flat prior), paired on (seed, episode) where both
    arms ran the same episodes; the unpaired se beside it."""
    c = comp[bench]
    A, B = c["arms"][a], c["arms"][b]
    fb = frame[frame["benchmark"] == bench]
    ya = fb[fb["arm"] == a].groupby(["seed", "episode_id"])["y"].mean()
    yb = fb[fb["arm"] == b].groupby(["seed", "episode_id"])["y"].mean()
    shared = ya.index.intersection(yb.index)
    est = A["mean"] - B["mean"]
    # unpaired: the two cells' variances add; df by Satterthwaite over the two
    parts = []
    for x in (A, B):
        ms = _floor_ms_ep(x["ms_ep"], x["mean"], x["episodes"], x["metric"])
        s2 = c["s2_seed"] if x["ms_ep"] > 0 else 0.0
        se_x, df_x = interval(x["mean"], x["S"], x["n"], ms, x["df_ep"], s2, c["df_seed"], level, seed_ms=c["seed_ms"])[:2]
        parts.append((float(se_x) ** 2, float(df_x)))
    var_u = sum(v for v, _ in parts)
    se_u = math.sqrt(var_u)
    if any(d <= 0 for v, d in parts if v > 0):  # a variance estimated with no degrees of freedom (1 seed, 1 episode)
        df_u = 0.0
    else:
        df_u = var_u**2 / sum(v**2 / d for v, d in parts if v > 0) if var_u > 0 else np.inf
    paired = len(shared) == len(ya) == len(yb) and len(shared) > 1
    if paired:
        d = (ya - yb).rename("y").reset_index()
        design = c["design"]
        t = (d.pivot_table(index="seed", columns="episode_id", values="y") if design == "crossed"
             else d.assign(pos=d.groupby("seed").cumcount()).pivot_table(index="seed", columns="pos", values="y"))
        st = cell_stats(t.to_numpy(), design)
        ms_ep = float(st["ms_ep"])
        if ms_ep == 0:  # identical outcomes on every episode: fall back to the unpaired variance
            paired = False
        else:
            est = float(st["mean"])
            se, df, _, _ = interval(est, st["S"], st["n"], ms_ep, st["df_ep"], c["s2_seed"], c["df_seed"], level,
                                    seed_scale=float((A["ms_ep"] > 0) + (B["ms_ep"] > 0)), seed_ms=c["seed_ms"])
            se, df = float(se), float(df)
    if not paired:
        se, df = se_u, float(df_u)
    if not df > 0:  # no degrees of freedom: the difference has no interval and no evidence either way
        lo, hi, p, prob = -np.inf, np.inf, 1.0, 0.5
    else:
        tq = sps.t.ppf(0.5 + level / 2, df)
        lo, hi = est - tq * se, est + tq * se
        p = float(2 * sps.t.sf(abs(est) / se, df)) if se > 0 else (1.0 if est == 0 else 0.0)
        prob = float(sps.t.cdf(est / se, df)) if se > 0 else float(est > 0)
    return dict(benchmark=bench, a=a, b=b, metric=A["metric"], difference=est, se=se, df=df,
                ci_low=lo, ci_high=hi, p_value=p, prob_improvement=prob,
                paired=paired, se_unpaired=se_u, seeds=f"{int(A['S'])}/{int(B['S'])}",
                shared_episodes=int(len(shared)))


class Deltas:
    """The Δ cells of the tables (a regime vs full fine-tuning, an SFT variant vs its base, from scratch vs
    pretrained, a policy vs the zero-action baseline): with episode records, ``contrast`` of the two arms,
    paired on (seed, episode) where both ran the same episodes; from run values alone (``cells``: the
    ``table_cells`` of the same results), the two cells' variances add (Student t, Satterthwaite df); None
    where neither is possible (the table then shows the plain difference)."""

    def __init__(self, res: Results, cells: pd.DataFrame | None = None, level: float = LEVEL):
        self.level = level
        self.frame = episode_frame(res) if res.episodes is not None else None
        self.comp = components(self.frame) if self.frame is not None else {}
        self.cells = None
        if cells is not None and self.frame is None:
            c = cells[cells["task"] == ALL]
            self.cells = c.set_index(["benchmark", "backbone", "ablation"])

    def _unpaired(self, bench: str, a: tuple[str, str], b: tuple[str, str]) -> dict | None:
        if self.cells is None or (bench, *a) not in self.cells.index or (bench, *b) not in self.cells.index:
            return None
        x, y = self.cells.loc[(bench, *a)], self.cells.loc[(bench, *b)]
        parts = [(float(r["se"]) ** 2, float(r["df"])) for r in (x, y)]
        if not all(np.isfinite(v) and np.isfinite(d) and d > 0 for v, d in parts):
            return None
        var = sum(v for v, _ in parts)
        df = var**2 / sum(v**2 / d for v, d in parts if v > 0) if var > 0 else np.inf
        est = float(x["mean"] - y["mean"])
        t = sps.t.ppf(0.5 + self.level / 2, df)
        return dict(metric=x["metric"], difference=est, ci_low=est - t * math.sqrt(var), ci_high=est + t * math.sqrt(var))

    def label(self, bench: str, a: tuple[str, str], b: tuple[str, str]) -> str | None:
        """'-37.5 [-80, +5]' for (backbone, ablation) ``a`` minus ``b`` on ``bench``; None without both arms."""
        arms = (self.comp.get(bench) or {}).get("arms", {})
        arm_a, arm_b = arm_name(*a), arm_name(*b)
        if arm_a in arms and arm_b in arms:
            r = contrast(self.frame, self.comp, bench, arm_a, arm_b, self.level)
        else:
            r = self._unpaired(bench, a, b)
            if r is None:
                return None
        d = metric_decimals(r["metric"])
        if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])):
            return f"{r['difference']:+.{d}f}, no interval"
        b_ = max(0, d - 1)
        return f"{r['difference']:+.{d}f} [{r['ci_low']:+.{b_}f}, {r['ci_high']:+.{b_}f}]"


def comparisons(comp: dict[str, dict], config: Study) -> list[tuple[str, str, str, str]]:
    """The comparisons the tables show, as (family, benchmark, a, b): every regime vs full fine-tuning of its
    backbone, every embodied-SFT variant vs its base, every pair of backbones (full fine-tuning), every
    policy vs the zero-action baseline. A family is a kind of comparison on one benchmark."""
    sft = {k: v.base for k, v in config.embodied_sft.items()}
    out = []
    for bench, c in comp.items():
        arms = c["arms"]
        full = [k for k, a in arms.items() if a["ablation"] == "full"]
        for k, a in arms.items():
            if a["ablation"] not in ("full", "none") and a["backbone"] in arms:
                out.append(("regime", bench, k, a["backbone"]))
        for k in full:
            if k in sft and sft[k] in arms:
                out.append(("embodied_sft", bench, k, sft[k]))
        base = [k for k in full if k not in sft]
        out += [("backbones", bench, x, y) for x, y in itertools.combinations(base, 2)]
        if ZERO in arms:
            out += [("zero_action", bench, k, ZERO) for k in arms if k != ZERO]
    return out


def adjusted_p(p, method: str = "holm") -> np.ndarray:
    """Holm (step-down) or Benjamini-Hochberg adjusted p. BH is scipy's ``false_discovery_control``; Holm is
    written here, as statsmodels' ``multipletests`` (same values, checked in the tests) runs a full garbage
    collection on every call, seconds each in a process that holds torch."""
    p = np.asarray(p, float)
    if method == "bh":
        return sps.false_discovery_control(p, method="bh")
    if method != "holm":
        raise ValueError(f"correction {method!r}: one of {', '.join(CORRECTIONS)}")
    order = np.argsort(p)
    m = len(p)
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjust(rows: list[dict], method: str = "holm", key: str = "family") -> list[dict]:
    """Adjusted p within each family (``method``: holm or bh, ``adjusted_p``)."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction {method!r}: one of {', '.join(CORRECTIONS)}")
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r[key], []).append(i)
    for idx in by.values():
        p = [rows[i]["p_value"] for i in idx]
        adj = adjusted_p(p, method)
        for i, q in zip(idx, adj):
            rows[i]["p_adjusted"] = float(q)
            rows[i]["correction"] = f"{method} within {rows[i][key]} ({len(idx)} comparisons)"
    return rows


def all_contrasts(frame: pd.DataFrame, comp: dict, config: Study, method: str = "holm") -> list[dict]:
    rows = []
    for family, bench, a, b in comparisons(comp, config):
        rows.append(dict(family=f"{family}:{bench}", **contrast(frame, comp, bench, a, b)))
    return adjust(rows, method)


# -- reference analysis: a mixed model per benchmark ----------------------------------------------
def mixed_model(frame: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark, statsmodels MixedLM of the episode outcome on arm (fixed, no intercept) with variance
    components for seed-within-arm and episode: the arms' marginal means with 95% Wald intervals.
    A linear model on the outcome scale (success 0/100, so the marginal means read like the table
    cells); CALVIN's outcome is the per-subtask continuation (``continuation``), the episode effect then
    being the (chain, subtask) attempt."""
    import statsmodels.formula.api as smf

    rows = []
    for bench, fb in frame.groupby("benchmark", sort=False):
        outcome = "success (%)"
        if (fb["metric"] == "avg_len").all():
            fb, outcome = continuation(fb), "per-subtask continuation (%)"
        d = fb.assign(arm_seed=fb["arm"] + "#" + fb["seed"].astype(str), one=1)
        vc = {"seed": "0 + C(arm_seed)"}
        if d["episode_id"].nunique() < len(d):
            vc["episode"] = "0 + C(episode_id)"
        status = "ok"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = smf.mixedlm("y ~ 0 + C(arm)", d, groups="one", vc_formula=vc, re_formula="0").fit(reml=True)
            ci = fit.conf_int()
            vcomp = dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp)))
        except (np.linalg.LinAlgError, ValueError) as err:
            status, fit = f"not fitted: {err}", None
        for arm in d["arm"].unique():
            name = f"C(arm)[{arm}]"
            row = dict(benchmark=bench, arm=arm, outcome=outcome, simple_mean=float(d[d["arm"] == arm]["y"].mean()),
                       status=status)
            if fit is not None:
                row.update(marginal_mean=float(fit.fe_params[name]), ci_low=float(ci.loc[name, 0]),
                           ci_high=float(ci.loc[name, 1]), var_seed=float(vcomp.get("seed", np.nan)),
                           var_episode=float(vcomp.get("episode", np.nan)), var_residual=float(fit.scale),
                           converged=bool(fit.converged))
            rows.append(row)
    return pd.DataFrame(rows)


def continuation(frame: pd.DataFrame, length: int = 5) -> pd.DataFrame:
    """CALVIN chains -> one row per attempted subtask: subtask k of a chain is attempted when the first k - 1
    were completed, and continues the chain (y = 100) when it is completed too. The continuation rate p of
    an arm gives its average length as p + p^2 + ... + p^5 when p is the same at every step."""
    done = frame["y"].round().astype(int).to_numpy()
    reps = np.minimum(done + 1, length)
    out = frame.loc[frame.index.repeat(reps)].copy()
    k = out.groupby(level=0).cumcount().to_numpy() + 1
    out["y"] = 100.0 * (k <= np.repeat(done, reps))
    out["episode_id"] = out["episode_id"] + "#" + k.astype(str)
    return out.reset_index(drop=True)


# -- planning -------------------------------------------------------------------------------------
def _z(alpha: float, power: float) -> float:
    return sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)


def seeds_needed(effect: float, s2_seed: float, s2_episode: float, episodes: int, alpha: float = 0.05,
                 power: float = 0.8) -> int:
    """Seeds per arm for a two-sided test of a difference ``effect`` between two arms to reach ``power``:
    Var(diff) = 2 (s2_seed + s2_episode / n) / S (unpaired, the conservative case)."""
    if effect == 0:
        raise ValueError("effect must be non-zero")
    return max(2, math.ceil(2 * _z(alpha, power) ** 2 * (s2_seed + s2_episode / episodes) / effect**2))


def episodes_needed(effect: float, s2_seed: float, s2_episode: float, seeds: int, alpha: float = 0.05,
                    power: float = 0.8) -> int | None:
    """Episodes per seed for the same test with ``seeds`` per arm; None when the seed variance alone
    already exceeds what that many seeds allow (no number of episodes suffices)."""
    room = seeds * effect**2 / (2 * _z(alpha, power) ** 2) - s2_seed
    if room <= 0:
        return None
    return max(1, math.ceil(s2_episode / room))


def minimum_detectable(se: float, df: float = np.inf, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true effect a two-sided t test at ``alpha`` detects with ``power``, given the estimate's se."""
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


# -- platforms ------------------------------------------------------------------------------------
def platform_check(reference: pd.DataFrame, rerun: pd.DataFrame, s2_platform: float | None = None,
                   level: float = LEVEL) -> tuple[pd.DataFrame, bool]:
    """Does a rerun (another machine) agree with a reference run within its prediction interval?

    Both frames: episode frames (``episode_frame``) of the same runs. Per run (backbone, benchmark,
    ablation, seed): the rerun's mean is predicted as the reference's, with variance s2/n_ref + s2/n_new
    (s2: the reference run's episode variance; success: the binomial variance of the pooled rate) plus the
    platform variance: ``s2_platform`` when given, else the reference's own estimate per benchmark
    (``platform_component``, where the reference holds runs evaluated on two or more platforms), else 0.
    Every run is judged at a Bonferroni level over the runs; the rerun agrees when all are inside.
    Returns (one row per run, with the platform variance used and its source, agrees)."""
    plat = {}
    for bench, fb in reference.groupby("benchmark"):
        if s2_platform is not None:
            plat[bench] = (float(s2_platform), "given")
            continue
        est = dict(s2_platform=None)
        if "platform" in fb and "episode_id" in fb:
            est = platform_component(fb.assign(arm=[arm_name(b, a) for b, a in zip(fb["backbone"], fb["ablation"])]))
        plat[bench] = ((est["s2_platform"], f"estimated from the reference (df {est['df_platform']:.0f})")
                       if est["s2_platform"] is not None else (0.0, "none: no run of the reference ran on two platforms"))
    keys = ["backbone", "benchmark", "ablation", "seed"]
    ref = reference.groupby(keys)["y"].agg(["mean", "var", "size"])
    new = rerun.groupby(keys)["y"].agg(["mean", "size"])
    both = ref.add_suffix("_ref").join(new.add_suffix("_new"), how="inner").rename(columns={"var_ref": "var"})
    if both.empty:
        raise ValueError("the rerun shares no run (backbone, benchmark, ablation, seed) with the reference")
    metric = reference.groupby(keys)["metric"].first().reindex(both.index)
    pooled = (both["mean_ref"] * both["size_ref"] + both["mean_new"] * both["size_new"]) / (both["size_ref"] + both["size_new"])
    p = pooled / 100
    s2 = np.where(metric == "success_rate", 1e4 * p * (1 - p), both["var"].fillna(0))
    # a run whose outcomes are all the same still has a binomial spread (Agresti-Coull)
    n_all = both["size_ref"] + both["size_new"]
    pa = (p * n_all + 2) / (n_all + 4)
    s2 = np.where((metric == "success_rate") & (s2 == 0), 1e4 * pa * (1 - pa), s2)
    benches = both.index.get_level_values("benchmark")
    s2p = np.array([plat[b][0] for b in benches])
    var = s2 / both["size_ref"] + s2 / both["size_new"] + s2p
    z = sps.norm.ppf(1 - (1 - level) / (2 * len(both)))
    half = z * np.sqrt(var)
    out = both.reset_index().assign(
        difference=(both["mean_new"] - both["mean_ref"]).to_numpy(), half_width=np.asarray(half),
        platform_variance=s2p, platform_variance_source=[plat[b][1] for b in benches],
        level=f"{level:.0%} prediction interval, Bonferroni over {len(both)} run(s)")
    out["agrees"] = (out["difference"].abs() <= out["half_width"]).to_numpy()
    return out, bool(out["agrees"].all())


__all__ = ["episode_frame", "design_of", "cell_stats", "pooled_seed_component", "interval", "components", "cells",
           "contrast", "comparisons", "adjust", "all_contrasts", "platform_component", "mixed_model", "seeds_needed", "episodes_needed",
           "minimum_detectable", "platform_check", "table_cells", "seed_value_cells", "frame_cells", "length_cells",
           "cell_label", "LABEL", "ALL"]
