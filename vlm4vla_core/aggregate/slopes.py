"""The VQA-vs-control regression with its uncertainty: small n, noisy x, one influential point.

Per benchmark, the points are backbones: x = VQA score (with its standard error when the question count
is known: sqrt(p (1 - p) / n_questions)), y = control (with its standard error when the cells carry one).
Reported beside OLS (statsmodels): Theil-Sen (scipy), influence (leverage and Cook's distance,
statsmodels OLSInfluence) with the fit refitted without the flagged points, the exact permutation p of
Spearman's rho (scipy.stats.permutation_test, exact up to 9 points), an errors-in-variables slope
(method of moments: OLS divided by the reliability of x, 1 - mean(se_x^2) / var(x); hand-written, as no
library here has it), a meta-regression (statsmodels WLS weighted by 1 / se_y^2, when y carries an se),
the equivalence test (two one-sided t tests) of the slope against a smallest effect of interest, and
the power and minimum detectable slope at the study's n. Across benchmarks: the slope x benchmark
interaction (y standardised per benchmark; F test of z ~ x * benchmark against z ~ x + benchmark).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

#: a point is flagged when its Cook's distance exceeds 4 / n or its leverage 2 p / n (p = 2 parameters)
COOK = 4.0
LEVERAGE = 2.0
EXACT_MAX = 9


def score_se(score: float, n_questions: float | None) -> float | None:
    """Binomial standard error (points) of a VQA accuracy in % over ``n_questions``; None when unknown."""
    if n_questions is None or not np.isfinite(n_questions) or n_questions <= 0:
        return None
    p = min(max(score / 100, 0.0), 1.0)
    return float(100 * np.sqrt(p * (1 - p) / n_questions))


def spearman_exact_p(x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """Two-sided permutation p of Spearman's rho: exact (every pairing) up to EXACT_MAX points."""
    rx = sps.rankdata(x)

    def stat(yy, axis=-1):
        ry = sps.rankdata(yy, axis=axis)
        rxc, ryc = rx - rx.mean(), ry - ry.mean(axis=axis, keepdims=True)
        return (rxc * ryc).sum(axis=axis) / np.sqrt((rxc**2).sum() * (ryc**2).sum(axis=axis))

    n = len(x)
    exact = n <= EXACT_MAX
    res = sps.permutation_test((y,), stat, permutation_type="pairings", vectorized=True, alternative="two-sided",
                               n_resamples=np.inf if exact else 20000, random_state=0)
    return float(res.pvalue), "exact (all pairings)" if exact else "Monte Carlo, 20000 pairings"


def slope_power(slope: float, sigma: float, sxx: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided OLS slope t test (df n - 2) against a true ``slope`` (noncentral t)."""
    df = n - 2
    nc = slope * np.sqrt(sxx) / sigma
    t = sps.t.ppf(1 - alpha / 2, df)
    return float(np.nan_to_num(sps.nct.sf(t, df, nc)) + np.nan_to_num(sps.nct.cdf(-t, df, nc)))  # NaN far in a tail


def minimum_detectable_slope(sigma: float, sxx: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest slope the two-sided t test detects with ``power`` (solved on the noncentral t)."""
    from scipy.optimize import brentq

    se = sigma / np.sqrt(sxx)
    if se == 0:
        return 0.0
    f = lambda b: slope_power(b, sigma, sxx, n, alpha) - power  # noqa: E731
    hi = 10 * se
    while f(hi) < 0:  # few points: the t test needs a large effect (a nct tail turns NaN -> 0 past ~40 se)
        if hi > 1e3 * se:
            return float("inf")
        hi *= 2
    return float(brentq(f, 1e-9 * se, hi))


def tost_p(slope: float, se: float, df: float, sesoi: float) -> float:
    """Equivalence p (two one-sided t tests) that |slope| < sesoi."""
    lower = sps.t.sf((slope + sesoi) / se, df)
    upper = sps.t.cdf((slope - sesoi) / se, df)
    return float(max(lower, upper))


def eiv_slope(x: np.ndarray, y: np.ndarray, se_x: np.ndarray) -> dict:
    """Errors-in-variables slope by the method of moments: OLS / reliability, reliability = 1 -
    mean(se_x^2) / var(x) (sample variance, ddof=1). se: the OLS se divided by the reliability."""
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(x)).fit()
    rel = 1 - float(np.mean(se_x**2)) / float(np.var(x, ddof=1))
    if rel <= 0:
        return dict(slope=None, reliability=rel, note="the measurement error of x exceeds its spread")
    return dict(slope=float(fit.params[1] / rel), se=float(fit.bse[1] / rel), reliability=rel)


def fit_points(x: np.ndarray, y: np.ndarray, names: list[str], se_x=None, se_y=None, sesoi: float | None = None,
               alpha: float = 0.05, families: list[str] | None = None) -> dict:
    """Every estimator above on one benchmark's points (with ``families``, also the within-family slope)."""
    import statsmodels.api as sm
    from statsmodels.stats.outliers_influence import OLSInfluence

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    ci = fit.conf_int(alpha)
    sigma = float(np.sqrt(fit.scale))
    sxx = float(((x - x.mean()) ** 2).sum())
    infl = OLSInfluence(fit)
    lev, cook = infl.hat_matrix_diag, infl.cooks_distance[0]
    flagged = [nm for nm, h, c in zip(names, lev, cook) if c > COOK / n or h > LEVERAGE * 2 / n]
    ts = sps.theilslopes(y, x, alpha=1 - alpha)
    p_perm, how = spearman_exact_p(x, y)
    out = dict(
        n=n, slope=float(fit.params[1]), intercept=float(fit.params[0]), se=float(fit.bse[1]),
        slope_ci95=[float(ci[1, 0]), float(ci[1, 1])], p_value=float(fit.pvalues[1]), r2=float(fit.rsquared),
        residual_sd=sigma,
        theil_sen=dict(slope=float(ts.slope), ci95=[float(ts.low_slope), float(ts.high_slope)]),
        spearman=dict(rho=float(sps.spearmanr(x, y).statistic), p_permutation=p_perm, permutation=how),
        influence=[dict(backbone=nm, leverage=float(h), cooks_distance=float(c)) for nm, h, c in zip(names, lev, cook)],
        flag_rule=f"Cook's distance > {COOK:g}/n or leverage > {LEVERAGE:g}*2/n",
        flagged=flagged,
        power=dict(minimum_detectable_slope=minimum_detectable_slope(sigma, sxx, n, alpha) if n > 2 else None,
                   at="80% power, two-sided alpha 0.05, the residual sd and x spread of this fit"),
    )
    if sesoi is not None:
        out["equivalence"] = dict(sesoi=sesoi, p_tost=tost_p(out["slope"], out["se"], n - 2, sesoi),
                                  power_at_sesoi=slope_power(sesoi, sigma, sxx, n, alpha))
    keep = np.array([nm not in flagged for nm in names])
    if flagged and keep.sum() >= 3 and np.ptp(x[keep]) > 0:
        f2 = sm.OLS(y[keep], sm.add_constant(x[keep])).fit()
        c2 = f2.conf_int(alpha)
        out["without_flagged"] = dict(left_out=flagged, n=int(keep.sum()), slope=float(f2.params[1]),
                                      slope_ci95=[float(c2[1, 0]), float(c2[1, 1])], p_value=float(f2.pvalues[1]))
    if se_x is not None and all(s is not None for s in se_x):
        out["errors_in_variables"] = eiv_slope(x, y, np.asarray(se_x, float))
    else:
        out["errors_in_variables"] = dict(slope=None, note="x without a question count: its error is unknown")
    if families is not None:
        out["within_family"] = within_family(x, y, families, alpha)
    if se_y is not None and all(s is not None and s > 0 for s in se_y):
        w = sm.WLS(y, sm.add_constant(x), weights=1 / np.asarray(se_y, float) ** 2).fit()
        cw = w.conf_int(alpha)
        out["meta_regression"] = dict(slope=float(w.params[1]), slope_ci95=[float(cw[1, 0]), float(cw[1, 1])],
                                      p_value=float(w.pvalues[1]), weights="1 / se(control)^2")
    return out


def within_family(x: np.ndarray, y: np.ndarray, families: list[str], alpha: float = 0.05) -> dict:
    """The slope of control on VQA score with family as a covariate (y ~ x + C(family), OLS): the relation
    within families, so a family that is better at both does not make the slope. Needs at least two families
    and a point more than the model has parameters."""
    import statsmodels.formula.api as smf

    d = pd.DataFrame(dict(x=np.asarray(x, float), y=np.asarray(y, float), family=list(families)))
    k = d["family"].nunique()
    if k < 2:
        return dict(status="one family: the plain slope is the within-family slope")
    if len(d) <= k + 1 or d.groupby("family")["x"].nunique().max() < 2:
        return dict(status=f"needs more points than parameters and two distinct VQA scores in a family (n={len(d)}, "
                           f"{k} families)")
    fit = smf.ols("y ~ x + C(family)", d).fit()
    ci = fit.conf_int(alpha).loc["x"]
    return dict(status="ok", slope=float(fit.params["x"]), se=float(fit.bse["x"]), slope_ci95=[float(ci[0]), float(ci[1])],
                p_value=float(fit.pvalues["x"]), df=int(fit.df_resid), n=len(d), families=int(k),
                model="y ~ x + C(family) (OLS)")


def interaction(points: pd.DataFrame, drop: list[str] = ()) -> dict:
    """Slope x benchmark interaction: ``points`` has benchmark, backbone, x, y; y is standardised per
    benchmark (after dropping ``drop``), then z ~ x * C(benchmark) is F-tested against z ~ x + C(benchmark)."""
    import statsmodels.formula.api as smf

    d = points[~points["backbone"].isin(list(drop))].copy()
    d = d.groupby("benchmark").filter(lambda g: len(g) >= 3)
    if d["benchmark"].nunique() < 2:
        return dict(status="needs two benchmarks with at least 3 scored backbones")
    d["z"] = d.groupby("benchmark")["y"].transform(lambda s: (s - s.mean()) / s.std(ddof=1))
    full = smf.ols("z ~ x * C(benchmark)", d).fit()
    red = smf.ols("z ~ x + C(benchmark)", d).fit()
    f, p, df = full.compare_f_test(red)
    return dict(status="ok", F=float(f), df_num=int(df), df_den=int(full.df_resid), p_value=float(p),
                n=len(d), benchmarks=sorted(d["benchmark"].unique()), dropped=list(drop),
                model="z ~ x * C(benchmark) vs z ~ x + C(benchmark), y standardised per benchmark")
