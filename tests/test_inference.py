"""Inference layer: interval coverage and test size on simulated studies, the published-numbers regression
diagnostics, claims and their verdicts, the plan and platform-check commands.

Simulations are vectorised over studies and seeded, so each is deterministic and takes well under a second.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vlm4vla_core.aggregate import claims as claims_mod
from vlm4vla_core.aggregate import inference as inf
from vlm4vla_core.aggregate.files import ResultsError
from vlm4vla_core.aggregate.slopes import eiv_slope, fit_points, interaction
from vlm4vla_core.config import Study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_aggregate import CHAINS, calvin_json, paper_config, run_json  # noqa: E402

STUDIES = 2000


def _cells(y, design):
    st = inf.cell_stats(y, design)
    s2, df, q = inf.pooled_seed_component(st, axis=-1)
    return st, s2, df, q


# -- simulated studies with known variance components -------------------------------------------------
def test_cell_intervals_cover_95_percent_nested_and_crossed():
    """6 arms, 3 seeds, 54 episodes per seed, Bernoulli success with a seed effect (sd 8 points) and, crossed,
    an episode difficulty shared by seeds (sd 15 points); truth: the arm's mean success over seeds and
    episodes (Monte Carlo, 10^6 draws)."""
    rng = np.random.default_rng(0)
    R, C, S, n, tau, ep_sd = STUDIES, 6, 3, 54, 0.08, 0.15
    mu = np.linspace(0.3, 0.7, C)
    u = rng.normal(0, tau, (R, C, S))
    for design, ep in (("nested", np.zeros((R, 1, 1, n))), ("crossed", rng.normal(0, ep_sd, (R, 1, 1, n)))):
        p = np.clip(mu[None, :, None, None] + u[..., None] + ep, 0, 1)
        y = 100.0 * (rng.random((R, C, S, n)) < p)
        st, s2, df, q = _cells(y, design)
        se, _, lo, hi = inf.interval(st["mean"], st["S"], st["n"], st["ms_ep"], st["df_ep"], s2[:, None], df[:, None],
                                     seed_ms=q[:, None])
        draws = np.random.default_rng(1)
        sd = np.hypot(tau, ep_sd) if design == "crossed" else tau
        truth = 100 * np.clip(mu[:, None] + draws.normal(0, sd, (1, 10**6)), 0, 1).mean(axis=1)
        coverage = ((lo <= truth) & (truth <= hi)).mean()
        assert 0.93 <= coverage <= 0.97, (design, coverage)
        assert np.all(df[:, None] == C * (S - 1))  # the seed component pools 6 cells x 2 df


def test_paired_contrast_narrower_by_the_expected_factor():
    """Six arms sharing each seed's episodes (nested in seed, as Meta-World): outcome = arm + seed effect
    (sd 2, per arm) + episode effect (sd 8, shared) + noise (sd 6). The variance of a difference of two arms:
    unpaired 2 s2_seed / S + 2 (s2_ep + s2_res) / (n S); paired on (seed, episode) the episode effect cancels,
    2 s2_seed / S + 2 s2_res / (n S). The median widths keep that ratio."""
    rng = np.random.default_rng(2)
    R, C, S, n, s_seed, s_ep, s_res = STUDIES, 6, 3, 20, 2.0, 8.0, 6.0
    e = rng.normal(0, s_ep, (R, 1, S, n))
    y = np.linspace(40, 60, C)[None, :, None, None] + rng.normal(0, s_seed, (R, C, S, 1)) + e \
        + rng.normal(0, s_res, (R, C, S, n))
    st, s2, df, q = _cells(y, "nested")
    se = inf.interval(st["mean"], st["S"], st["n"], st["ms_ep"], st["df_ep"], s2[:, None], df[:, None], seed_ms=q[:, None])[0]
    unpaired = np.sqrt(se[:, 0] ** 2 + se[:, 1] ** 2)
    d = inf.cell_stats(y[:, 0] - y[:, 1], "nested")
    paired = inf.interval(d["mean"], d["S"], d["n"], d["ms_ep"], d["df_ep"], s2, df, seed_scale=2.0, seed_ms=q)[0]
    expected = np.sqrt((2 * s_seed**2 / S + 2 * s_res**2 / (n * S)) / (2 * s_seed**2 / S + 2 * (s_ep**2 + s_res**2) / (n * S)))
    assert np.median(paired) / np.median(unpaired) == pytest.approx(expected, rel=0.05)
    assert expected < 0.85


def test_contrast_type_one_error_under_the_null():
    """Six equal arms (50%), seed sd 8 points, shared episode effects: the paired contrast of arms 0 and 1
    rejects at most 6% of the time at alpha 0.05."""
    rng = np.random.default_rng(3)
    R, C, S, n = STUDIES, 6, 3, 54
    u = rng.normal(0, 0.08, (R, C, S))
    e = rng.normal(0, 0.15, (R, 1, S, n))
    y = 100.0 * (rng.random((R, C, S, n)) < np.clip(0.5 + u[..., None] + e, 0, 1))
    st, s2, df, q = _cells(y, "nested")
    d = inf.cell_stats(y[:, 0] - y[:, 1], "nested")
    _, _, lo, hi = inf.interval(d["mean"], d["S"], d["n"], d["ms_ep"], d["df_ep"], s2, df, seed_scale=2.0, seed_ms=q)
    rate = ((lo > 0) | (hi < 0)).mean()
    assert 0.03 <= rate <= 0.06, rate


def test_errors_in_variables_recovers_the_slope_ols_attenuates():
    """x measured with known error (reliability 100 / (100 + 49) = 0.67): the OLS slope is attenuated by the
    reliability, the moment-corrected slope recovers the true one."""
    rng = np.random.default_rng(4)
    R, n, beta, sd_x, se_x = 1000, 60, 2.0, 10.0, 7.0
    xt = rng.normal(50, sd_x, (R, n))
    xo = xt + rng.normal(0, se_x, (R, n))
    y = beta * xt + rng.normal(0, 5, (R, n))
    xc = xo - xo.mean(axis=1, keepdims=True)
    ols = (xc * (y - y.mean(axis=1, keepdims=True))).sum(axis=1) / (xc**2).sum(axis=1)
    eiv = np.array([eiv_slope(a, b, np.full(n, se_x))["slope"] for a, b in zip(xo[:300], y[:300])])
    reliability = sd_x**2 / (sd_x**2 + se_x**2)
    assert ols.mean() == pytest.approx(beta * reliability, rel=0.03)
    assert eiv.mean() == pytest.approx(beta, rel=0.04)
    assert abs(ols[:300].mean() - beta) > 0.5


# -- the published numbers -----------------------------------------------------------------------------
def published_points() -> pd.DataFrame:
    from vlm4vla_core.published import published_results, published_vqa

    pr = published_results()
    pr = pr[pr["ablation"] == "full"]
    rows = []
    for b, e in published_vqa().items():
        for bench in ("calvin", "simpler_bridge", "libero10"):
            v = pr[(pr["backbone"] == b) & (pr["benchmark"] == bench)]["value"]
            rows.append(dict(backbone=b, benchmark=bench, x=e["score"], y=float(v.iloc[0])))
    return pd.DataFrame(rows)


def test_published_regression_diagnostics():
    """MMMU (val) vs CALVIN average length, the 8 scored backbones of the main table."""
    pts = published_points()
    c = pts[pts["benchmark"] == "calvin"]
    assert len(c) == 8
    fit = fit_points(c["x"].to_numpy(), c["y"].to_numpy(), list(c["backbone"]), sesoi=0.01)
    infl = {r["backbone"]: r for r in fit["influence"]}
    assert infl["kosmos-2"]["leverage"] == pytest.approx(0.79, abs=0.005)
    assert infl["kosmos-2"]["cooks_distance"] == pytest.approx(8.6, abs=0.05)
    others = sorted(r["cooks_distance"] for b, r in infl.items() if b != "kosmos-2")
    assert others[-1] == pytest.approx(0.31, abs=0.005)
    assert fit["flagged"] == ["kosmos-2"] and fit["without_flagged"]["n"] == 7
    assert fit["slope"] == pytest.approx(0.018, abs=5e-4)
    assert fit["theil_sen"]["slope"] == pytest.approx(0.011, abs=5e-4)
    # exact permutation p of Spearman: every one of the 8! pairings, by hand
    x, y = c["x"].to_numpy(), c["y"].to_numpy()
    rho = sps.spearmanr(x, y).statistic
    ry = sps.rankdata(y)
    perms = np.array(list(itertools.permutations(ry)))
    rx = sps.rankdata(x) - 4.5
    r = ((perms - 4.5) * rx).sum(axis=1) / ((rx**2).sum())
    p_hand = np.mean(np.abs(r) >= abs(rho) - 1e-12)
    assert fit["spearman"]["p_permutation"] == pytest.approx(p_hand, abs=1e-9)
    assert fit["spearman"]["p_permutation"] == pytest.approx(0.24, abs=0.005)


def test_published_slope_by_benchmark_interaction():
    """y standardised per benchmark (ddof 1); F test of z ~ x * benchmark against z ~ x + benchmark."""
    pts = published_points()
    assert interaction(pts)["p_value"] == pytest.approx(0.043, abs=5e-4)
    # without Kosmos-2, y standardised again over the 7 remaining backbones
    assert interaction(pts, ["kosmos-2"])["p_value"] == pytest.approx(0.86, abs=5e-3)


# -- cells and contrasts from run files ----------------------------------------------------------------
def test_design_cells_and_paired_contrast_from_runs(tmp_path):
    paths = [calvin_json(tmp_path, b, s, c, a) for (b, a, s), c in CHAINS.items()]
    paths += [run_json(tmp_path, b, s, {"reach-v3": [1, 0, 1, 1]}) for b in ("qwen", "pali") for s in (0, 1)]
    from vlm4vla_core.aggregate.results import load_runs

    frame = inf.episode_frame(load_runs(paths))
    comp = inf.components(frame)
    assert comp["calv"]["design"] == "crossed" and comp["metaworld"]["design"] == "nested"
    cells = inf.cells(comp).set_index(["benchmark", "arm"])
    one = cells.loc[("calv", "qwen/freeze_vision")]
    assert one["interval"] == "episodes only" and one["cell"].endswith("1 seed x 6 ep, episodes only")
    # one seed: mean +- t(5) * sd / sqrt(6) of [1, 0, 0, 2, 1, 0]
    v = np.array([1, 0, 0, 2, 1, 0.0])
    half = sps.t.ppf(0.975, 5) * v.std(ddof=1) / np.sqrt(6)
    assert one["ci_high"] == pytest.approx(v.mean() + half)
    assert cells.loc[("calv", "qwen"), "cell"].startswith("2.667 [") and "2 seeds x 6 ep" in cells.loc[("calv", "qwen"), "cell"]
    # paired contrast qwen - pali on CALVIN: chain-wise differences of the same chains at the same seed
    r = inf.contrast(frame, comp, "calv", "qwen", "pali")
    d = np.array([np.subtract(CHAINS[("qwen", "full", s)], CHAINS[("pali", "full", s)]) for s in (0, 1)], float)
    assert r["paired"] and r["difference"] == pytest.approx(d.mean())
    st = inf.cell_stats(d, "crossed")
    var = 2 * comp["calv"]["s2_seed"] / 2 + st["ms_ep"] / 12
    assert r["se"] == pytest.approx(np.sqrt(var))
    rows = inf.all_contrasts(frame, comp, paper_config())
    fam = [x for x in rows if x["family"] == "backbones:calv"]
    assert len(fam) == 3 and all(x["correction"].startswith("holm") for x in fam)
    p = sorted(x["p_value"] for x in fam)
    assert min(x["p_adjusted"] for x in fam) == pytest.approx(min(1, 3 * p[0]))


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_matches_statsmodels(method, sm):
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(5).random((3, 7)) ** 3  # few calls: each runs gc.collect()
    for row in p:
        assert inf.adjusted_p(row, method) == pytest.approx(multipletests(row, method=sm)[1])


# -- claims --------------------------------------------------------------------------------------------
def test_claims_file_one_line_and_schema(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("correction: bh\nclaims:\n  - 'qwen > pali/freeze_vision on calv by 0.5'\n")
    doc = claims_mod.load_claims(f)
    (c,) = doc["claims"]
    assert c == dict(id="qwen > pali/freeze_vision on calv by 0.5", kind="contrast", a="qwen", b="pali/freeze_vision",
                     benchmark="calv", direction="greater", sesoi=0.5, family="contrast")
    f.write_text("claims:\n  - {id: x, kind: slope, direction: up}\n")
    with pytest.raises(ResultsError, match=r"c.yaml: key 'claims.0'"):
        claims_mod.load_claims(f)
    f.write_text("claims:\n  - 'qwen beats pali'\n")
    with pytest.raises(ResultsError, match=r"c.yaml: key 'claims.0'"):
        claims_mod.load_claims(f)


def test_shipped_claims_files_fit_their_configs():
    from vlm4vla_core.config import load_study

    root = Path(__file__).resolve().parents[1]
    for cfg_path in (root / "config.yaml", root / "config" / "demo.yaml"):
        study = load_study(cfg_path)
        claims = claims_mod.load_claims(root / study.claims)
        claims_mod.check_claims(claims, study)
        assert len(claims["claims"]) >= 5
    bad = claims_mod.load_claims(root / "config" / "claims" / "demo.yaml")
    bad["claims"][0]["a"] = "tiny-llava"
    with pytest.raises(ResultsError, match=r"claims.0 .*backbone 'tiny-llava' is not in the config"):
        claims_mod.check_claims(bad, load_study(root / "config" / "demo.yaml"))


@pytest.mark.parametrize("direction,estimate,se,sesoi,verdict", [
    ("greater", 5.0, 1.0, None, "supported"),
    ("greater", -5.0, 1.0, None, "contradicted"),
    ("greater", 0.1, 0.2, 2.0, "equivalent"),
    ("greater", 1.0, 2.0, 0.5, "inconclusive"),
    ("none", 0.1, 0.2, 2.0, "supported"),
    ("none", 5.0, 1.0, 2.0, "contradicted"),
    ("less", -5.0, 1.0, None, "supported"),
])
def test_verdicts(direction, estimate, se, sesoi, verdict, monkeypatch):
    claim = dict(id="c", kind="slope", benchmark="b", direction=direction, sesoi=sesoi, family="f")
    slopes = {"config": {"b": dict(status="ok", slope=estimate, se=se, n=22, slope_ci95=[estimate - 2 * se, estimate + 2 * se],
                                   theil_sen={"slope": estimate}, flagged=[])}}
    (row,) = claims_mod.evaluate(dict(alpha=0.05, correction="holm", claims=[claim]), slopes=slopes)
    assert row["verdict"] == verdict
    assert row["mde"] == pytest.approx((sps.t.ppf(0.975, 20) + sps.t.ppf(0.8, 20)) * se)


def test_aggregate_writes_inference_and_claims(tmp_path):
    paths = [calvin_json(tmp_path, b, s, c, a) for (b, a, s), c in CHAINS.items()]
    claims = tmp_path / "claims.yaml"
    claims.write_text("claims:\n  - 'qwen > kosmos on calv'\n  - 'qwen > qwen-sftB on calv'\n"
                      "  - {id: slope, kind: slope, benchmark: calv, direction: greater, sesoi: 0.01}\n")
    from vlm4vla_core.aggregate import aggregate

    raw = dict(paper_config().raw)
    raw["benchmarks"] = {"calv": raw["benchmarks"]["calv"]}
    cfg = Study.from_dict(raw)
    out = tmp_path / "out"
    aggregate(paths, cfg, out, claims=claims)
    md = (out / "inference" / "claims.md").read_text()
    rows = {r["id"]: r for r in json.loads((out / "inference" / "claims.json").read_text())["claims"]}
    assert set(rows) == {"qwen > kosmos on calv", "qwen > qwen-sftB on calv", "slope"}
    assert all(r["verdict"] in claims_mod.VERDICTS for r in rows.values())
    assert "not evaluated on 'calv'" in rows["qwen > qwen-sftB on calv"]["status"]
    assert rows["qwen > kosmos on calv"]["p_claim_adjusted"] is not None and "**" in md
    cells = pd.read_csv(out / "inference" / "cells.csv")
    assert cells["cell"].str.contains(r"\[.*\], \d seeds? x \d+ ep").all()
    index = (out / "index.md").read_text()
    assert "inference/claims" in index
    findings = index.split("## Findings", 1)[1].split("\n## ", 1)[0]  # first, one line per claim with its verdict
    assert index.index("## Findings") < index.index("## Artefacts")
    for r in rows.values():
        assert f"- **{r['verdict']}**: {r['text']} ({'estimate' if 'estimate' in r else 'no estimate: '}" in findings
    claims.write_text("claims:\n  - 'qwen > nobody on calv'\n")
    with pytest.raises(ResultsError, match=r"claims.0 \(qwen > nobody on calv\): b 'nobody'"):
        aggregate(paths, cfg, tmp_path / "out2", claims=claims)
    assert not (tmp_path / "out2").exists()  # stopped before writing anything
    main = (out / "inference" / "main_table.md").read_text()
    assert "| qwen " in main and "2 seeds x 6 ep" in main
    regimes = pd.read_csv(out / "inference" / "regimes_table.csv").set_index("ablation")
    assert regimes.loc["from_scratch", "difference"] == pytest.approx(np.mean(CHAINS[("qwen", "from_scratch", 0)])
                                                                      - np.mean(CHAINS[("qwen", "full", 0)] + CHAINS[("qwen", "full", 1)]))
    comp = json.loads((out / "inference" / "variance_components.json").read_text())
    assert comp["benchmarks"]["calv"]["design"] == "crossed"


# -- planning and platforms ----------------------------------------------------------------------------
def test_seeds_and_episodes_needed():
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    # Var(diff) = 2 (s2_seed + s2_ep / n) / S <= (effect / z)^2
    assert inf.seeds_needed(10.0, 25.0, 2500.0, 18) == int(np.ceil(2 * z**2 * (25 + 2500 / 18) / 100))
    e = inf.episodes_needed(10.0, 25.0, 2500.0, 5)
    assert 2 * (25 + 2500 / e) / 5 <= (10 / z) ** 2 < 2 * (25 + 2500 / (e - 1)) / 5
    assert inf.episodes_needed(10.0, 200.0, 2500.0, 3) is None  # seed variance alone too large for 3 seeds


def test_plan_command(tmp_path, capsys):
    from vlm4vla_core.__main__ import main

    comp = {"benchmarks": {"mw": {"metric": "success_rate", "s2_seed": 25.0, "df_seed": 8, "s2_episode": 2500.0,
                                  "arms": {"a": {"n": 18}}}}}
    path = tmp_path / "vc.json"
    path.write_text(json.dumps(comp))
    assert main(["plan", "--components", str(path), "--effect", "10"]) == 0
    printed = capsys.readouterr().out
    assert f"{inf.seeds_needed(10, 25, 2500, 18)} seeds per arm at 18 episodes" in printed
    assert "no platform variance (no run evaluated on two platforms)" in printed
    comp["benchmarks"]["mw"].update(s2_platform=12.5, df_platform=18)
    path.write_text(json.dumps(comp))
    assert main(["plan", "--components", str(path), "--effect", "10"]) == 0
    assert "platform variance 12.5 (df 18)" in capsys.readouterr().out
    assert main(["plan", "--components", str(path), "--effect", "10", "--seeds", "3", "--benchmark", "mw"]) == 0
    assert main(["plan", "--components", str(path), "--effect", "10", "--benchmark", "calvin"]) == 1
    assert "no benchmark 'calvin'" in capsys.readouterr().err


def _episodes(k: dict) -> pd.DataFrame:
    rows = [dict(backbone=b, benchmark="mw", ablation="full", seed=0, metric="success_rate", y=100.0 * (i < kk))
            for b, kk in k.items() for i in range(36)]
    return pd.DataFrame(rows)


def test_platform_check():
    ref = _episodes({"a": 27, "b": 19})
    table, ok = inf.platform_check(ref, _episodes({"a": 25, "b": 21}))
    assert ok and table["agrees"].all()
    # a: 27/36 vs 12/36 lies far outside: pooled p 39/72, var 2 p (1 - p) / 36, Bonferroni over 2 runs
    table, ok = inf.platform_check(ref, _episodes({"a": 12, "b": 19}))
    p = 39 / 72
    half = sps.norm.ppf(1 - 0.05 / 4) * 100 * np.sqrt(2 * p * (1 - p) / 36)
    row = table.set_index("backbone").loc["a"]
    assert not ok and row["half_width"] == pytest.approx(half) and not row["agrees"]


def test_platform_check_command(tmp_path, capsys):
    from vlm4vla_core.__main__ import main

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _episodes({"x": 20}).rename(columns={"y": "value"}).to_csv(a, index=False)
    _episodes({"x": 22}).rename(columns={"y": "value"}).to_csv(b, index=False)
    assert main(["platform-check", "--reference", str(a), "--rerun", str(b)]) == 0
    assert "agrees: 1/1 runs" in capsys.readouterr().out
    _episodes({"x": 2}).rename(columns={"y": "value"}).to_csv(b, index=False)
    assert main(["platform-check", "--reference", str(a), "--rerun", str(b)]) == 3


def _platform_sim(rng, reps: int, groups: int, platforms: int, n: int, sd_platform: float, crossed: bool):
    """Success (0/100) of ``groups`` runs (arm x seed) each evaluated on ``platforms`` machines, ``n`` episodes
    each: a platform shifts the run's success probability by N(0, sd_platform); crossed: the platforms ran the
    same episodes, each with its own difficulty (SD 0.15 on the probability)."""
    base = rng.uniform(0.35, 0.65, size=(reps, groups, 1, 1))
    shift = rng.normal(0, sd_platform, size=(reps, groups, platforms, 1))
    diff = rng.normal(0, 0.15, size=(reps, groups, 1, n)) if crossed else 0.0
    p = np.clip(base + shift + diff, 0, 1)
    return 100.0 * (rng.random((reps, groups, platforms, n)) < p)


@pytest.mark.parametrize("crossed", [False, True])
def test_platform_component_recovers_a_known_platform_variance(crossed):
    """The platform component (the seed component's moment estimator on platform x episode tables, pooled
    over runs) is unbiased for the variance a platform adds to a run's mean: 500 simulated studies of 18
    runs on 2 platforms with 100 episodes; true component (100 x 0.1)^2 = 100 points^2."""
    rng = np.random.default_rng(0)
    R, G, K, n, sd = 500, 18, 2, 100, 0.1
    y = _platform_sim(rng, R, G, K, n, sd, crossed)
    st = inf.cell_stats(y.reshape(R * G, K, n), "crossed" if crossed else "nested")
    st = {k: v.reshape(R, G) for k, v in st.items()}
    s2, df, _ = inf.pooled_seed_component(st)
    assert (df == G * (K - 1)).all()
    true = (100 * sd) ** 2
    se = s2.std(ddof=1) / np.sqrt(R)  # the simulation's own standard error of the mean estimate
    assert abs(s2.mean() - true) < 3 * se, (s2.mean(), se)
    # a null platform: the estimate stays near zero (truncated at zero, so a small positive mean)
    null = inf.cell_stats(_platform_sim(rng, R, G, K, n, 0.0, crossed).reshape(R * G, K, n),
                          "crossed" if crossed else "nested")
    s0 = inf.pooled_seed_component({k: v.reshape(R, G) for k, v in null.items()})[0]
    assert s0.mean() < 0.1 * true


def _platform_frame(y: np.ndarray, crossed: bool) -> pd.DataFrame:
    """An episode frame of one simulated study y (groups, platforms, n): group g is arm g // 3, seed g % 3."""
    G, K, n = y.shape
    rows = [dict(benchmark="mw", metric="success_rate", backbone=f"b{g // 3}", ablation="full", arm=f"b{g // 3}",
                 seed=g % 3, mode="whole_chunk", task="t", platform=f"cpu{k}", y=y[g, k, i],
                 episode_id=f"t/{i}" if crossed else f"t/{k}-{i}")
            for g in range(G) for k in range(K) for i in range(n)]
    return pd.DataFrame(rows)


def test_platform_component_from_an_episode_frame_and_in_platform_check():
    rng = np.random.default_rng(1)
    y = _platform_sim(rng, 1, 18, 2, 100, 0.1, True)[0]
    frame = _platform_frame(y, crossed=True)
    est = inf.platform_component(frame)
    st = inf.cell_stats(y, "crossed")
    assert est["s2_platform"] == pytest.approx(float(inf.pooled_seed_component(st)[0]))
    assert est["df_platform"] == 18 and est["runs"] == 18
    comp = inf.components(frame)["mw"]
    assert comp["s2_platform"] == est["s2_platform"] and comp["df_platform"] == 18
    # one platform only: no component
    assert inf.platform_component(frame[frame["platform"] == "cpu0"])["s2_platform"] is None
    # platform-check takes the reference's own estimate, which widens every run's interval
    ref = frame.drop(columns="arm")
    new = ref[ref["platform"] == "cpu1"].assign(platform="cpu2")
    table, _ = inf.platform_check(ref, new)
    assert (table["platform_variance"] == est["s2_platform"]).all()
    assert table["platform_variance_source"].iloc[0].startswith("estimated from the reference (df 18)")
    given, _ = inf.platform_check(ref, new, s2_platform=0.0)
    assert (given["half_width"] < table["half_width"]).all() and (given["platform_variance_source"] == "given").all()
    single = ref[ref["platform"] == "cpu0"]
    t0, _ = inf.platform_check(single, new)
    assert (t0["platform_variance"] == 0).all() and t0["platform_variance_source"].iloc[0].startswith("none")


def test_demo_page_intervals_from_the_runs_per_seed_counts():
    """The demo page's cells with intervals (docs/demo.md): the per-seed successes out of 18 of that run
    (results/demo/episodes.csv); a nested design's cells depend on nothing else."""
    from vlm4vla_core.aggregate.results import Results

    counts = {("tiny-qwen2.5-vl", "full"): (13, 14), ("tiny-qwen2.5-vl-gen300", "full"): (8, 13),
              ("tiny-qwen2.5-vl-gen800", "full"): (5, 6), ("tiny-qwen2.5-vl-gen800", "freeze_vision"): (0, 0),
              ("tiny-qwen2.5-vl-gen800", "from_scratch"): (10, 9), ("tiny-qwen2.5-vl-gen800-mwvqa", "full"): (6, 2),
              ("tiny-paligemma", "full"): (11, 8), ("tiny-paligemma-gen300", "full"): (4, 4),
              ("tiny-paligemma-gen800", "full"): (9, 4), ("tiny-paligemma-gen800", "freeze_vision"): (3, 1),
              ("tiny-paligemma-gen800", "from_scratch"): (10, 12), ("tiny-paligemma-gen800-mwvqa", "full"): (8, 3),
              ("zero-action", "none"): (0, 0)}
    rows = [dict(backbone=b, benchmark="metaworld", ablation=a, seed=s, metric="success_rate", mode="whole_chunk", task="t",
                 episode_id=f"t/{1000 * s + i}", platform="p", value=100.0 * (i < k))
            for (b, a), ks in counts.items() for s, k in enumerate(ks) for i in range(18)]
    comp = inf.components(inf.episode_frame(Results(results=None, episodes=pd.DataFrame(rows))))
    cells = inf.cells(comp).set_index("arm")["cell"]
    assert cells["tiny-qwen2.5-vl"] == "75.0 [55, 95], 2 seeds x 18 ep"
    assert cells["tiny-paligemma-gen800/from_scratch"] == "61.1 [40, 82], 2 seeds x 18 ep"
    assert cells["tiny-qwen2.5-vl-gen800-mwvqa"] == "22.2 [3, 41], 2 seeds x 18 ep"
    assert cells["zero-action"] == "0.0 [0, 7], 2 seeds x 18 ep"
    m = comp["metaworld"]
    assert m["s2_seed"] == pytest.approx(39.12, abs=0.01) and m["df_seed"] == 11
    assert inf.seeds_needed(10, m["s2_seed"], m["s2_episode"], 18) == 25
    assert inf.seeds_needed(25, m["s2_seed"], m["s2_episode"], 18) == 4


def test_calvin_continuation_rows():
    """A chain with k subtasks completed: k continued attempts, then one failed attempt unless k = 5."""
    frame = pd.DataFrame(dict(benchmark="calv", metric="avg_len", arm="a", seed=0, episode_id=["c/0", "c/1", "c/2"],
                              y=[0.0, 2.0, 5.0]))
    out = inf.continuation(frame)
    assert list(out["y"]) == [0, 100, 100, 0, 100, 100, 100, 100, 100]
    assert list(out["episode_id"][:4]) == ["c/0#1", "c/1#1", "c/1#2", "c/1#3"]


def test_within_family_slope_removes_a_family_offset():
    """Two families whose better-VQA member is worse at control overall (a family offset): the plain slope is
    negative, the slope with family as a covariate recovers the within-family slope of 2 exactly."""
    from vlm4vla_core.aggregate.slopes import fit_points, within_family

    x = np.array([0.0, 5, 10, 40, 45, 50])
    fam = ["q", "q", "q", "p", "p", "p"]
    noise = np.array([0.5, -1.0, 0.5, -0.5, 1.0, -0.5])  # sums to zero within each family, orthogonal to x
    y = 2 * x + np.where(np.array(fam) == "q", 80.0, -20.0) + noise
    fit = fit_points(x, y, list("abcdef"), families=fam)
    assert fit["slope"] < 0
    w = fit["within_family"]
    assert w["status"] == "ok" and w["families"] == 2 and w["df"] == 3
    assert w["slope"] == pytest.approx(2.0, abs=1e-9) and w["slope_ci95"][0] < 2 < w["slope_ci95"][1]
    assert within_family(x, y, ["q"] * 6)["status"].startswith("one family")
    assert within_family(x[:3], y[:3], ["q", "p", "p"])["status"].startswith("needs more points")


def test_a_contrast_of_single_episode_cells_has_no_interval():
    """One seed and one episode per arm: the cells' variances have no degrees of freedom, so the contrast
    reports an unbounded interval and p = 1 instead of failing (as a shrunk study does)."""
    from vlm4vla_core.aggregate.results import Results

    rows = [dict(backbone=b, benchmark="m", ablation="full", seed=0, metric="success_rate", mode="whole_chunk", task="t",
                 episode_id=f"t/{b}", platform="p", value=v) for b, v in (("a", 100.0), ("b", 0.0))]
    frame = inf.episode_frame(Results(results=None, episodes=pd.DataFrame(rows)))
    comp = inf.components(frame)
    c = inf.contrast(frame, comp, "m", "a", "b")
    assert c["difference"] == 100.0 and c["p_value"] == 1.0 and c["prob_improvement"] == 0.5
    assert c["ci_low"] == -np.inf and c["ci_high"] == np.inf and c["df"] == 0


def test_findings_show_an_unbounded_interval(tmp_path):
    """A claim whose interval has no bound (stored as null in claims.json) still gets its findings line."""
    from vlm4vla_core.aggregate import findings

    path = tmp_path / "inference" / "claims.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"claims": [dict(id="c", verdict="inconclusive", text="a beats b", estimate=100.0,
                                                ci95=[None, None], status="ok", p_claim_adjusted=1.0)]}))
    claims = {"claims": [dict(id="c", kind="contrast", a="a", b="b", benchmark="mw")]}
    found = findings.lines(tmp_path, claims, Study.from_dict({}), {"inference_contrasts"})
    assert ("- **inconclusive**: a beats b (estimate 100 [unbounded, unbounded]; p adj. 1) — "
            "[inference_contrasts](html/inference_contrasts.html)") in findings.markdown(found)
    assert "(estimate 100 [unbounded, unbounded]; p adj. 1) — `inference_contrasts.html`_" in findings.rst(found, "s")
    assert findings.lines(tmp_path, None, Study.from_dict({}), set()) == []  # no claims file: no findings


def test_findings_of_a_results_table_link_the_plain_tables(tmp_path):
    """Without episodes (a results CSV) a contrast links the plain tables in place of the ones with intervals;
    an interaction, a test without an estimate, shows its F test."""
    from vlm4vla_core.aggregate import findings

    path = tmp_path / "inference" / "claims.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"claims": [
        dict(id="c", verdict="inconclusive", text="freezing hurts", status="no episode records", detail=""),
        dict(id="i", verdict="supported", text="slopes differ", status="ok", detail="F(2, 18) = 3.76",
             p_claim_adjusted=0.01)]}))
    claims = {"claims": [dict(id="c", kind="contrast", a="q/freeze_vision", b="q", benchmark="mw"),
                         dict(id="i", kind="interaction")]}
    pages = {"ablation_table", "main_table", "ablation", "regression_table"}
    found = findings.markdown(findings.lines(tmp_path, claims, Study.from_dict({}), pages))
    assert ("- **inconclusive**: freezing hurts (no estimate: no episode records) — [ablation_table]"
            "(html/ablation_table.html), [main_table](html/main_table.html), [ablation](html/ablation.html)") in found
    assert ("- **supported**: slopes differ (F(2, 18) = 3.76; p adj. 0.01) — [regression_table]"
            "(html/regression_table.html)") in found


def test_a_task_cell_of_one_episode_says_it_has_no_interval():
    rows = [dict(benchmark="b", metric="success_rate", backbone="q", ablation="full", arm="q", seed=0, mode="whole_chunk",
                 task=t, episode_id=f"{t}/0", platform="p", y=y) for t, y in (("t1", 100.0), ("t2", 0.0))]
    c = inf.frame_cells(pd.DataFrame(rows)).set_index("task")
    assert c.loc["t1", "cell"] == "100.0, 1 seed x 1 ep, no interval" and c.loc["t1", "interval"] == "none"
    assert c.loc["all", "cell"].startswith("50.0 [") and c.loc["all", "interval"] == "episodes only"


def test_seed_value_cells_pool_the_seeds_variance_and_fall_back_to_wilson():
    """Run values alone (a results CSV, the execution modes): A's seeds 40/50/60 give the pooled variance 100
    with 2 df; C (one seed) borrows it; B sits at 100% on every seed, so it gets the Wilson interval of 20/20."""
    from statsmodels.stats.proportion import proportion_confint

    rows = [("A", s, v) for s, v in enumerate((40.0, 50.0, 60.0))] + [("B", s, 100.0) for s in range(2)] + [("C", 0, 30.0)]
    values = pd.DataFrame([dict(backbone=b, benchmark="m", ablation="full", task="all", seed=s, metric="success_rate",
                                value=v, n_episodes=10) for b, s, v in rows])
    c = inf.seed_value_cells(values, ["backbone", "benchmark", "ablation", "task"], ["benchmark", "task"]).set_index("backbone")
    t2 = sps.t.ppf(0.975, 2)
    assert c.loc["A", "ci_low"] == pytest.approx(50 - t2 * np.sqrt(100 / 3))
    assert c.loc["C", "ci_high"] == pytest.approx(30 + t2 * 10) and c.loc["C", "ci_low"] == 0.0  # clipped
    assert (c.loc["A", "interval"], c.loc["C", "interval"], c.loc["B", "interval"]) == ("seeds", "seeds", "episodes only")
    assert c.loc["B", "ci_low"] == pytest.approx(100 * proportion_confint(20, 20, method="wilson")[0])
    label = inf.cell_label(50.0, c.loc["A", "ci_low"], c.loc["A", "ci_high"], 3, [10, 10, 10], "success_rate", "seeds")
    assert label == "50.0 [25, 75], 3 seeds x 10 ep"
