"""Interval levels pinned by exact quantiles.

Each bootstrap here is built so that its replicate distribution is a known binomial: 8 units, 4 of
value 0 and 4 of value v, resampled with replacement, give a replicate mean of v * B / 8 with
B ~ Binomial(8, 1/2). P(B <= 0) = 0.39%, P(B <= 1) = 3.5%, P(B <= 2) = 14.5%: the 2.5% quantile is
exactly B = 1 and the 97.5% quantile exactly B = 7, while a 90% interval would end at B = 2 and 6.
With 20,000 replicates the sampled tail fractions stay more than 5 standard errors from every
boundary used, so the quantiles are exact for the fixed seed (and for any other).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vlm4vla_core.aggregate.results import Results
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
