"""Statistics of a study: seed summaries, the zero-action comparison, CALVIN's chain lengths, the OLS band
of the VQA figures (the VQA regressions themselves: ``slopes``).

Conventions: a run's value is its pooled headline metric (task ``all``);
across seeds we report the mean and the sample standard deviation (ddof=1,
undefined for one seed); episode counts are summed over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from vlm4vla_core.aggregate.results import ALL, KEYS, ZERO, Results

MIN_POINTS = 3


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over seeds per (backbone, benchmark, ablation, task)."""
    group = ["backbone", "benchmark", "ablation", "task", "metric"]
    g = results.groupby(group, sort=False)
    out = g["value"].agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="size")
    n = g["n_episodes"].agg(lambda v: v.sum() if v.notna().all() else np.nan)
    out = out.assign(n_episodes=n)
    if "heldout" in results:  # the best-of-modes cells' value without the selection bias (results.held_out_values)
        out = out.assign(heldout=g["heldout"].agg(lambda v: v.mean() if v.notna().all() else np.nan))
    return out.reset_index()


# -- zero-action baseline ---------------------------------------------------
def fisher_greater(k1: int, n1: int, k0: int, n0: int) -> tuple[float, float]:
    """One-sided Fisher exact test that group 1 succeeds more often than group 0: (odds ratio, p)."""
    res = sps.fisher_exact([[k1, n1 - k1], [k0, n0 - k0]], alternative="greater")
    return float(res[0]), float(res[1])


def baseline_comparison(res: Results) -> tuple[list[dict], list[str]]:
    """Each (backbone, benchmark, ablation) vs the zero-action baseline on the same episodes.

    With episode records, both sides keep only the (seed, task, episode_seed)
    episodes that both were evaluated on; success counts are pooled over tasks
    and seeds. From a results CSV, counts come from the pooled success rate and
    ``n_episodes`` of each run (the episodes are assumed to be shared).
    """
    notes = []
    if res.episodes is not None:
        ep = res.episodes
        key = ["seed", "task", "episode_seed"]
        if ep["episode_seed"].isna().any():
            notes.append("some episodes carry no episode_seed; they are matched by (seed, task, order) instead")
            ep = ep.assign(episode_seed=ep.groupby([*KEYS, "task"]).cumcount())
        per_run = {k: g for k, g in ep.groupby(["backbone", "benchmark", "ablation"], sort=False)}
        counts = lambda g: (int(g["success"].sum()), len(g))  # noqa: E731
    else:
        rows = res.results[(res.results["task"] == ALL) & (res.results["metric"] == "success_rate")]
        if rows["n_episodes"].isna().any():
            notes.append("runs without n_episodes are left out of the baseline comparison")
            rows = rows[rows["n_episodes"].notna()]
        rows = rows.assign(successes=(rows["value"] / 100 * rows["n_episodes"]).round().astype(int),
                           n=rows["n_episodes"].astype(int))
        per_run = {k: g for k, g in rows.groupby(["backbone", "benchmark", "ablation"], sort=False)}
        counts = lambda g: (int(g["successes"].sum()), int(g["n"].sum()))  # noqa: E731

    out = []
    for (backbone, bench, abl), g in per_run.items():
        if backbone == ZERO:
            continue
        base = [b for (bb, bn, _), b in per_run.items() if bb == ZERO and bn == bench]
        if not base:
            notes.append(f"{bench}: no zero-action baseline run, so no comparison")
            continue
        b = pd.concat(base)
        if res.episodes is not None:
            shared = pd.merge(g[key].drop_duplicates(), b[key].drop_duplicates(), on=key)
            g = g.merge(shared, on=key)
            b = b.merge(shared, on=key)
            n_shared = len(shared)
        else:
            shared_seeds = set(g["seed"]) & set(b["seed"])
            g, b = g[g["seed"].isin(shared_seeds)], b[b["seed"].isin(shared_seeds)]
            n_shared = None
        if g.empty or b.empty:
            notes.append(f"{bench}: {backbone}/{abl} shares no episodes with the zero-action baseline")
            continue
        k1, n1 = counts(g)
        k0, n0 = counts(b)
        odds, p = fisher_greater(k1, n1, k0, n0)
        out.append(dict(benchmark=bench, backbone=backbone, ablation=abl, successes=k1, episodes=n1,
                        baseline_successes=k0, baseline_episodes=n0, success_pct=100 * k1 / n1,
                        baseline_success_pct=100 * k0 / n0, odds_ratio=odds, p_value=p,
                        shared_episodes=n_shared, seeds=sorted(int(s) for s in g["seed"].unique())))
    return out, list(dict.fromkeys(notes))


# -- the VQA regression's figure ------------------------------------------------
def confidence_band(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS fit on ``grid`` with its pointwise 95% confidence band for the mean."""
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(x)).fit()
    frame = fit.get_prediction(sm.add_constant(grid, has_constant="add")).summary_frame(alpha=0.05)
    return frame["mean"].to_numpy(), frame["mean_ci_lower"].to_numpy(), frame["mean_ci_upper"].to_numpy()


# -- CALVIN chains ----------------------------------------------------------------
CHAIN_LENGTHS = (1, 2, 3, 4, 5)


def calvin_length_success(episodes: pd.DataFrame) -> pd.DataFrame:
    """Success rate (%) at each chain length L = 1..5 of CALVIN runs, mean/std over seeds.

    Each CALVIN episode is one chain of 5 subtasks and carries ``completed``
    (0..5, the subtasks done before the first failure; the episode ``value`` of
    metric ``avg_len``). Success at length L is the share of a run's chains with
    ``completed >= L``; across seeds: mean, sample std (ddof=1, NaN for one
    seed), chains summed over seeds. Rows: (backbone, benchmark, ablation,
    length) with mean, std, n_seeds, n_episodes; plus ``length == 0`` rows
    holding the average completed length of the same chains.
    """
    ep = episodes[episodes["metric"] == "avg_len"]
    if ep.empty:
        return pd.DataFrame(columns=["backbone", "benchmark", "ablation", "length", "mean", "std", "n_seeds", "n_episodes"])
    per_run = []
    for key, g in ep.groupby(KEYS, sort=False):
        done = g["value"].to_numpy(float)
        per_run.append(dict(zip(KEYS, key), length=0, value=done.mean(), n=len(done)))
        per_run += [dict(zip(KEYS, key), length=L, value=100.0 * (done >= L).mean(), n=len(done)) for L in CHAIN_LENGTHS]
    g = pd.DataFrame(per_run).groupby(["backbone", "benchmark", "ablation", "length"], sort=False)
    out = g["value"].agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="size")
    return out.assign(n_episodes=g["n"].sum()).reset_index()


def calvin_length_intervals(res: Results) -> pd.DataFrame:
    """The success rate at each chain length L = 1..5 with its 95% interval from the inference layer: the
    reported mode's chains as an episode frame (``inference.episode_frame``) with the outcome
    ``100 * (completed >= L)``, a success-rate cell per (benchmark, arm). Rows: the cells' columns and
    ``length``; empty without CALVIN episodes."""
    from vlm4vla_core.aggregate import inference as inf

    if res.episodes is None or not (res.episodes["metric"] == "avg_len").any():
        return pd.DataFrame(columns=["benchmark", "backbone", "ablation", "length", "estimate", "ci_low", "ci_high"])
    frame = inf.episode_frame(res)
    frame = frame[frame["metric"] == "avg_len"]
    return pd.concat([inf.cells(inf.components(frame.assign(y=100.0 * (frame["y"] >= L), metric="success_rate")))
                      .assign(length=L) for L in CHAIN_LENGTHS], ignore_index=True)


def mode_intervals(res: Results) -> pd.DataFrame:
    """Every execution mode's cell with its 95% interval from the inference layer: per mode, that mode's
    episodes (``Results.mode_episodes``) as an episode frame. Rows: the cells' columns and ``mode``; empty
    without episode records."""
    from vlm4vla_core.aggregate import inference as inf

    if res.mode_episodes is None or res.mode_episodes.empty:
        return pd.DataFrame(columns=["benchmark", "backbone", "ablation", "mode", "estimate", "ci_low", "ci_high"])
    return pd.concat([inf.cells(inf.components(inf.episode_frame(Results(res.results, e)))).assign(mode=mode)
                      for mode, e in res.mode_episodes.groupby("mode", sort=False)], ignore_index=True)

