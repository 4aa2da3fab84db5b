"""Interval levels pinned by exact quantiles.

Each bootstrap here is built so that its replicate distribution is a known binomial: 8 units, 4 of
value 0 and 4 of value v, resampled with replacement, give a replicate mean of v * B / 8 with
B ~ Binomial(8, 1/2). P(B <= 0) = 0.39%, P(B <= 1) = 3.5%, P(B <= 2) = 14.5%: the 2.5% quantile is
exactly B = 1 and the 97.5% quantile exactly B = 7, while a 90% interval would end at B = 2 and 6.
With 20,000 replicates the sampled tail fractions stay more than 5 standard errors from every
boundary used, so the quantiles are exact for the fixed seed (and for any other).

The leave-one-out intervals are compared with the closed-form t interval of the OLS slope.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vlm4vla_core.aggregate.results import Results
from vlm4vla_core.aggregate.stats import _leave_one_out, regressions
from vlm4vla_core.benchmarks.calvin.protocol import chain_metrics

N_BOOT = 20_000
#: B ~ Binomial(8, 1/2): the tail masses that make the quantiles exact
assert sps.binom.cdf(0, 8, 0.5) < 0.025 - 0.01 and sps.binom.cdf(1, 8, 0.5) > 0.025 + 0.009
assert sps.binom.cdf(1, 8, 0.5) < 0.05 - 0.01


def test_calvin_chain_bootstrap_has_the_exact_95_percent_quantiles():
    records = [{"completed": c, "subtasks": list("abcde")} for c in [0, 5] * 4]
    m = chain_metrics(records, n_boot=N_BOOT, seed=0)
    assert m["ci"]["level"] == 0.95 and m["ci"]["n_boot"] == N_BOOT and m["ci"]["seed"] == 0
    assert m["ci"]["avg_len"] == [5 * 1 / 8, 5 * 7 / 8]
    for length in "12345":  # every chain did 0 or 5 subtasks: each SR@L is a 0/1 share
        assert m["ci"]["success_at"][length] == [1 / 8, 7 / 8]
    assert chain_metrics(records, n_boot=N_BOOT, seed=0, level=0.9)["ci"]["avg_len"] == [5 * 2 / 8, 5 * 6 / 8]


def test_regression_bootstrap_has_the_exact_95_percent_quantiles():
    """Backbones a, b, c at VQA 0, 10, 20; b and c give 1.0 on each of their seeds, a gives 0 on 4 seeds
    and 1 on 4 others. The OLS slope of (y_a, 1, 1) on (0, 10, 20) is (1 - y_a) / 20, and a's replicate
    mean is B / 8: the 95% interval is [(1 - 7/8) / 20, (1 - 1/8) / 20]."""
    rows = [("a", s, float(s % 2)) for s in range(8)] + [(b, s, 1.0) for b in "bc" for s in range(3)]
    frame = pd.DataFrame([dict(backbone=b, benchmark="bench", ablation="full", seed=s, task="all",
                               metric="success_rate", value=v, n_episodes=np.nan, mode="whole_chunk") for b, s, v in rows])
    vqa = {b: {"score": x, "source": "t"} for b, x in zip("abc", (0.0, 10.0, 20.0))}
    reg = regressions(Results(results=frame), vqa, ["bench"], n_boot=N_BOOT, boot_seed=0)["bench"]
    assert reg["slope"] == pytest.approx((1 - 0.5) / 20)
    boot = reg["bootstrap"]
    assert boot["method"] == "seeds" and boot["seeds_per_backbone"] == [8, 3, 3] and boot["rng_seed"] == 0
    assert boot["slope_ci95"] == pytest.approx([(1 - 7 / 8) / 20, (1 - 1 / 8) / 20], abs=1e-15)
    # the replicate spread: sd of (1 - B/8) / 20 with B ~ Binomial(8, 1/2) is sqrt(8 / 4) / 8 / 20
    assert boot["slope_sd"] == pytest.approx(math.sqrt(2) / 8 / 20, rel=0.03)


def test_leave_one_out_intervals_are_the_t_intervals_of_the_remaining_points():
    x = np.array([40.0, 55.0, 62.0, 71.0, 48.0])
    y = np.array([32.0, 48.0, 44.0, 65.0, 24.0])
    fits = _leave_one_out(list("abcde"), x, y)
    assert [f["left_out"] for f in fits] == list("abcde")
    for i, f in enumerate(fits):
        xs, ys = np.delete(x, i), np.delete(y, i)
        n = len(xs)
        sxx = ((xs - xs.mean()) ** 2).sum()
        slope = ((xs - xs.mean()) * (ys - ys.mean())).sum() / sxx
        resid = ys - ys.mean() - slope * (xs - xs.mean())
        se = math.sqrt((resid**2).sum() / (n - 2) / sxx)
        half = sps.t.ppf(0.975, n - 2) * se  # 95%, n - 2 degrees of freedom
        assert f["n"] == n and f["slope"] == pytest.approx(slope, rel=1e-12)
        assert f["slope_ci95"] == pytest.approx([slope - half, slope + half], rel=1e-10)
        assert f["p_value"] == pytest.approx(2 * sps.t.sf(abs(slope / se), n - 2), rel=1e-9)
    # fewer than 3 points left, or no spread in x: no fit
    assert _leave_one_out(list("abc"), x[:3], y[:3]) == []
    # without d the other three share one x: that fit is skipped, the others are made
    assert [f["left_out"] for f in _leave_one_out(list("abcd"), np.array([1.0, 1.0, 1.0, 2.0]), y[:4])] == list("abc")


def test_fisher_returns_the_sample_odds_ratio_and_the_one_sided_p():
    from vlm4vla_core.aggregate.stats import fisher_greater

    odds, p = fisher_greater(6, 8, 1, 8)
    assert odds == pytest.approx((6 * 7) / (2 * 1))  # (k1 (n0 - k0)) / ((n1 - k1) k0)
    # P(X >= 6) for X hypergeometric: 16 episodes, 7 successes, 8 drawn into group 1
    assert p == pytest.approx(sps.hypergeom.sf(5, 16, 7, 8), rel=1e-12)


# -- the other statistics at their edges -----------------------------------------------------------
def _frame(rows):
    cols = ["backbone", "benchmark", "ablation", "seed", "task", "metric", "value", "n_episodes"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_seed_summary_keeps_the_input_order_and_sums_episodes():
    from vlm4vla_core.aggregate.stats import summarize

    rows = [("b", "m", "full", 0, "all", "success_rate", 40.0, 20), ("b", "m", "full", 1, "all", "success_rate", 50.0, 20),
            ("a", "m", "full", 0, "all", "success_rate", 70.0, 10)]
    s = summarize(_frame(rows))
    assert s["backbone"].tolist() == ["b", "a"]  # the order of first appearance, not sorted
    assert s["mean"].tolist() == [45.0, 70.0] and s["n_seeds"].tolist() == [2, 1]
    assert s["std"].iloc[0] == pytest.approx(np.std([40.0, 50.0], ddof=1)) and np.isnan(s["std"].iloc[1])
    assert s["n_episodes"].tolist() == [40, 10]
    missing = summarize(_frame([("a", "m", "full", 0, "all", "success_rate", 1.0, np.nan),
                                ("a", "m", "full", 1, "all", "success_rate", 2.0, 5)]))
    assert np.isnan(missing["n_episodes"].iloc[0])  # a run without a count: no total


def test_ols_slope_on_one_and_on_many_replicates():
    from vlm4vla_core.aggregate.stats import ols_slope

    x = np.array([1.0, 2.0, 4.0])
    y = np.array([2.0, 3.0, 7.0])
    assert ols_slope(x, y) == pytest.approx(sps.linregress(x, y).slope)
    many = np.stack([y, 2 * y, -y])
    assert ols_slope(x, many) == pytest.approx([sps.linregress(x, r).slope for r in many])


def test_confidence_band_matches_the_t_band_even_at_one_grid_point():
    from vlm4vla_core.aggregate.stats import confidence_band

    x, y = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 2.5, 2.9, 5.2])
    fit = sps.linregress(x, y)
    resid = y - fit.intercept - fit.slope * x
    s2 = (resid**2).sum() / 2
    for grid in (np.array([2.5]), np.array([0.0, 4.0])):
        mean, lo, hi = confidence_band(x, y, grid)
        se = np.sqrt(s2 * (1 / 4 + (grid - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum()))
        t = sps.t.ppf(0.975, 2)
        assert mean == pytest.approx(fit.intercept + fit.slope * grid)
        assert lo == pytest.approx(mean - t * se) and hi == pytest.approx(mean + t * se)


def test_calvin_lengths_without_calvin_runs():
    from vlm4vla_core.aggregate.stats import calvin_length_success

    episodes = _frame([("a", "m", "full", 0, "t", "success_rate", 1.0, 1)])
    out = calvin_length_success(episodes)
    assert out.empty and list(out.columns) == ["backbone", "benchmark", "ablation", "length", "mean", "std",
                                               "n_seeds", "n_episodes"]


def test_baseline_rows_follow_the_input_order_and_name_what_they_leave_out():
    from vlm4vla_core.aggregate.stats import baseline_comparison

    rows = [("zeta", "m", "full", 0, "all", "success_rate", 50.0, 10), ("alpha", "m", "full", 0, "all", "success_rate", 20.0, 10),
            ("zero-action", "m", "none", 0, "all", "success_rate", 10.0, 10),
            ("beta", "m", "full", 0, "all", "success_rate", 30.0, np.nan)]
    out, notes = baseline_comparison(Results(results=_frame(rows)))
    assert [r["backbone"] for r in out] == ["zeta", "alpha"]
    assert (out[0]["successes"], out[0]["episodes"], out[0]["baseline_successes"]) == (5, 10, 1)
    assert notes == ["runs without n_episodes are left out of the baseline comparison"]
