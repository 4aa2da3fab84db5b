"""Aggregate stage: results table, tables, statistics, regressions, outputs.

Statistics are checked against values computed here independently (closed
forms, hypergeometric sums, hand ranking), layouts against hand-written cases.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vlm4vla_core.aggregate import aggregate, load_results_csv, load_runs, main, results_from_runs
from vlm4vla_core.aggregate.files import write_text
from vlm4vla_core.aggregate.results import ResultsError
from vlm4vla_core.aggregate.stats import baseline_comparison
from vlm4vla_core.aggregate.tables import main_table
from vlm4vla_core.config import Study
from vlm4vla_core.provenance import config_hash, git_commit, provenance

TASKS = ("reach-v3", "push-v3")


def config(**kw) -> Study:
    return Study.from_dict(raw_config(**kw))


def raw_config(backbones=None, ablations=("full", "freeze_vision"), seeds=(0, 1)) -> dict:
    backbones = backbones or {"qwen": 70.0, "pali": 50.0, "kosmos": None}
    return {
        "study": "unit",
        "seeds": list(seeds),
        "ablations": list(ablations),
        "benchmarks": {"metaworld": {"kind": "metaworld", "chunk": 4}},
        "backbones": {
            name: {"family": "f", "source": "tiny", **({"vqa": {"score": s, "source": f"test value {name}"}} if s else {})}
            for name, s in backbones.items()
        },
    }


def run_json(tmp: Path, backbone, seed, successes, ablation="full", modes=None, rule="best", reported=None, **extra):
    """One evaluation JSON; ``successes`` = {task: [bool per episode]} of the 'whole_chunk' mode."""
    def episodes(succ):
        return [dict(task=t, episode_seed=100000 + 1000 * seed + i, success=bool(s), steps=10)
                for t, ss in succ.items() for i, s in enumerate(ss)]

    modes = modes or {"whole_chunk": successes}
    md = {m: {"execute_steps": {"whole_chunk": 4, "half_chunk": 2, "single_step": 1}[m], "episodes": episodes(s)} for m, s in modes.items()}
    rec = dict(study="unit", backbone=backbone, family="f", benchmark="metaworld", ablation=ablation, seed=seed,
               metric="success_rate", modes=md, mode_selection=rule, reported_mode=reported or "whole_chunk",
               provenance={"git_commit": "c0ffee", "config_hash": "abc"}, **extra)
    path = tmp / f"{backbone}-{ablation}-{seed}.json"
    path.write_text(json.dumps(rec))
    return path


# -- results table ---------------------------------------------------------------
def test_results_from_runs_hand_case(tmp_path):
    full = {"reach-v3": [1, 1, 0, 0], "push-v3": [1, 0, 0, 0]}  # 50%, 25%, pooled 3/8
    half = {"reach-v3": [1, 1, 1, 0], "push-v3": [1, 1, 0, 0]}  # pooled 5/8: 'best' picks half
    p = run_json(tmp_path, "qwen", 0, full, modes={"whole_chunk": full, "half_chunk": half}, reported="half_chunk")
    df = results_from_runs([p])
    assert list(df.columns) == ["backbone", "benchmark", "ablation", "seed", "task", "metric", "value", "n_episodes", "mode",
                                "heldout"]
    got = df.set_index("task")
    # half is best on both halves (even positions 75% vs 50%, odd 50% vs 25%): held-out = the reported value
    assert got.loc["all", "heldout"] == pytest.approx(62.5)
    assert list(df["task"]) == ["push-v3", "reach-v3", "all"]
    assert got.loc["reach-v3", "value"] == pytest.approx(75.0)
    assert got.loc["push-v3", "value"] == pytest.approx(50.0)
    assert got.loc["all", "value"] == pytest.approx(62.5)
    assert got.loc["all", "n_episodes"] == 8 and set(df["mode"]) == {"half_chunk"}


def test_mode_rule_is_checked(tmp_path):
    a = {"reach-v3": [1, 0], "push-v3": [1, 0]}
    b = {"reach-v3": [1, 1], "push-v3": [1, 0]}
    bad = run_json(tmp_path, "qwen", 0, a, modes={"whole_chunk": a, "half_chunk": b}, reported="whole_chunk")
    with pytest.raises(ResultsError, match=r"qwen-full-0.json.*breaks mode_selection 'best'"):
        load_runs([bad])
    tie = run_json(tmp_path, "pali", 0, a, modes={"single_step": a, "half_chunk": a, "whole_chunk": a}, reported="whole_chunk")
    assert set(results_from_runs([tie])["mode"]) == {"whole_chunk"}  # ties go to fewer re-plans
    fixed = run_json(tmp_path, "kosmos", 0, a, modes={"whole_chunk": a, "half_chunk": b}, rule="whole_chunk", reported="whole_chunk")
    assert set(results_from_runs([fixed])["mode"]) == {"whole_chunk"}


def test_bad_runs_name_file_and_key(tmp_path):
    ok = {"reach-v3": [1]}
    p = run_json(tmp_path, "qwen", 0, ok)
    rec = json.loads(p.read_text())
    del rec["reported_mode"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(rec))
    with pytest.raises(ResultsError, match=r"broken.json: missing key\(s\) 'reported_mode'"):
        load_runs([broken])
    with pytest.raises(ResultsError, match="duplicate run"):
        load_runs([p, p])
    stranger = run_json(tmp_path, "llava", 0, ok)
    with pytest.raises(ResultsError, match=r"llava-full-0.json: backbone 'llava' is not a key"):
        load_runs([stranger], config())
    late = run_json(tmp_path, "qwen", 7, ok)
    with pytest.raises(ResultsError, match="seed 7 is not in"):
        load_runs([late], config())


# -- tables ----------------------------------------------------------------------
def test_cell_format():
    from vlm4vla_core.aggregate.inference import LABEL, cell_label

    assert cell_label(75.0, 58.2, 88.4, 2, [18, 18], "success_rate") == "75.0 [58, 88], 2 seeds x 18 ep"
    assert cell_label(3.8561, 3.7, 4.01, 1, [1000], "avg_len", "episodes only") == \
        "3.856 [3.70, 4.01], 1 seed x 1000 ep, episodes only"
    assert cell_label(23.95, float("nan"), float("nan"), 1, [float("nan")], "success_rate", "none") == \
        "23.95, 1 seed x ? ep, no interval"
    assert cell_label(50.0, 20.0, 80.0, 3, [12, 18, 18], "success_rate") == "50.0 [20, 80], 3 seeds x 12-18 ep"
    assert cell_label(66.7, 30.0, 90.0, 2, [6, 6], "success_rate", heldout=16.7) == \
        "best-of-modes 66.7 [30, 90], 2 seeds x 6 ep; held-out 16.7"
    m = LABEL.match("best-of-modes 66.7 [30, 90], 2 seeds x 6 ep; held-out 16.7")
    assert (m["estimate"], m["low"], m["high"], m["seeds"], m["episodes"]) == ("66.7", "30", "90", "2", "6")
    assert LABEL.match("23.95, 1 seed x ? ep, no interval")["low"] is None


def parsed(label: str) -> tuple[float, float, float, int]:
    """A table cell read back: (estimate, low, high, seeds)."""
    from vlm4vla_core.aggregate.inference import LABEL

    m = LABEL.match(label)
    assert m, label
    return float(m["estimate"]), float(m["low"]), float(m["high"]), int(m["seeds"])


def test_main_and_ablation_tables_hand_case(tmp_path):
    from vlm4vla_core.aggregate import inference as inf

    four = lambda k: {"reach-v3": [1] * k + [0] * (4 - k)}  # noqa: E731
    paths = [
        run_json(tmp_path, "qwen", 0, four(2)), run_json(tmp_path, "qwen", 1, four(3)),  # 50, 75
        run_json(tmp_path, "pali", 0, four(4)), run_json(tmp_path, "pali", 1, four(4)),  # 100, 100
        run_json(tmp_path, "qwen", 0, four(1), ablation="freeze_vision"),  # 25
        run_json(tmp_path, "zero-action", 0, four(0), ablation="none"), run_json(tmp_path, "zero-action", 1, four(0), ablation="none"),
    ]
    cfg = config()
    out = tmp_path / "out"
    aggregate(paths, cfg, out)
    md = (out / "main_table.md").read_text()
    res = load_runs(paths, cfg)
    _, wide = main_table(res, cfg, ["metaworld"])
    assert list(wide["backbone"]) == ["qwen", "pali", "zero-action"]
    # each cell read back is the inference layer's estimate and interval (rounded as shown), seeds named
    ref = inf.cells(inf.components(inf.episode_frame(res))).set_index("arm")
    for bb, label in zip(wide["backbone"], wide["metaworld"]):
        est, lo, hi, seeds = parsed(label)
        r = ref.loc[bb]
        assert (est, lo, hi, seeds) == (round(r["estimate"], 1), round(r["ci_low"]), round(r["ci_high"]), r["seeds"])
        assert label.endswith(", 2 seeds x 4 ep")
    assert parsed(wide["metaworld"][0])[0] == 62.5  # (50 + 75) / 2
    prov = provenance(cfg.raw)
    assert f"config hash {prov['config_hash']}" in md and f"git commit {prov['git_commit']}" in md
    abl = pd.read_csv(out / "ablation_table.csv")
    row = abl[(abl["backbone"] == "qwen") & (abl["ablation"] == "freeze_vision")].iloc[0]
    assert row["delta_vs_full"] == pytest.approx(25.0 - 62.5) and row["n_seeds"] == 1
    assert "25.0 [" in (out / "ablation_table.md").read_text() and "1 seed x 4 ep, episodes only" in (
        out / "ablation_table.md").read_text()
    tex = (out / "main_table.tex").read_text()
    assert r"\toprule" in tex and r"62.5 [" in tex and "config hash" in tex
    assert set(pd.read_csv(out / "main_table.csv")["config_hash"]) == {prov["config_hash"]}
    # the zero-action table: the inference layer's contrast beside Fisher's pooled test
    base = md_table(out / "baseline_table.md").set_index(["backbone", "ablation"])
    con = pd.read_csv(out / "inference" / "contrasts.csv")
    r = con[(con["a"] == "qwen") & (con["b"] == "zero-action")].iloc[0]
    assert base.loc[("qwen", "full"), "policy − zero-action [95% CI]"] == \
        f"{r['difference']:+.1f} [{r['ci_low']:+.0f}, {r['ci_high']:+.0f}]"
    assert r["difference"] == pytest.approx(62.5)
    # no table of the study shows a mean ± std any more: every cell carries its interval
    for table in out.glob("*_table.md"):
        assert "±" not in table.read_text(), table.name


# -- zero-action comparison -------------------------------------------------------
def fisher_greater_by_hand(k1, n1, k0, n0):
    """P(X >= k1) for X ~ hypergeometric: n1 draws from n1+n0 with k1+k0 successes."""
    k, n = k1 + k0, n1 + n0
    total = math.comb(n, n1)
    return sum(math.comb(k, x) * math.comb(n - k, n1 - x) for x in range(k1, min(k, n1) + 1)) / total


def test_baseline_fisher_on_shared_episodes(tmp_path):
    policy = {"reach-v3": [1, 1, 1, 0, 1], "push-v3": [1, 0, 1, 1, 0]}  # 7/10
    zero = {"reach-v3": [0, 0, 1, 0], "push-v3": [0, 0, 0, 0]}  # 1/8, episodes 0-3 only
    paths = [run_json(tmp_path, "qwen", 0, policy), run_json(tmp_path, "zero-action", 0, zero, ablation="none")]
    rows, notes = baseline_comparison(load_runs(paths))
    (r,) = rows
    # shared episodes: indices 0-3 of each task -> policy 3+3=6 of 8
    assert (r["successes"], r["episodes"], r["baseline_successes"], r["baseline_episodes"]) == (6, 8, 1, 8)
    assert r["shared_episodes"] == 8
    assert r["p_value"] == pytest.approx(fisher_greater_by_hand(6, 8, 1, 8), rel=1e-9)
    assert notes == []


def test_baseline_from_csv_counts(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("backbone,benchmark,ablation,seed,metric,value,n_episodes\n"
                   "qwen,metaworld,full,0,success_rate,40.0,20\nqwen,metaworld,full,1,success_rate,50.0,20\n"
                   "zero-action,metaworld,none,0,success_rate,5.0,20\nzero-action,metaworld,none,1,success_rate,0.0,20\n")
    (r,), _ = baseline_comparison(load_results_csv(csv))
    assert (r["successes"], r["episodes"], r["baseline_successes"], r["baseline_episodes"]) == (18, 40, 1, 40)
    assert r["p_value"] == pytest.approx(fisher_greater_by_hand(18, 40, 1, 40))


# -- regressions -----------------------------------------------------------------------
VQA = {"a": 40.0, "b": 55.0, "c": 62.0, "d": 71.0, "e": 48.0}
SEED_VALUES = {"a": (30.0, 34.0), "b": (52.0, 44.0), "c": (41.0, 47.0), "d": (70.0, 60.0), "e": (20.0, 28.0)}


def regression_csv(tmp: Path) -> Path:
    lines = ["backbone,benchmark,ablation,seed,metric,value"]
    lines += [f"{b},metaworld,full,{s},success_rate,{v}" for b, vs in SEED_VALUES.items() for s, v in enumerate(vs)]
    path = tmp / "reg.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    for pos, i in enumerate(order):
        r[i] = pos + 1.0
    return np.array(r)


def test_regression_against_independent_computation(tmp_path):
    """The regression table and inference/slopes.json (slopes.fit_points) against closed forms."""
    out = tmp_path / "out"
    aggregate(regression_csv(tmp_path), config(backbones=VQA, ablations=("full",)), out)
    reg = json.loads((out / "inference" / "slopes.json").read_text())["slopes"]["config"]["metaworld"]
    x = np.array([VQA[p["backbone"]] for p in reg["points"]])
    y = np.array([np.mean(SEED_VALUES[p["backbone"]]) for p in reg["points"]])
    n = len(x)
    sxx = ((x - x.mean()) ** 2).sum()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / sxx
    intercept = y.mean() - slope * x.mean()
    resid = y - intercept - slope * x
    r2 = 1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()
    se = math.sqrt((resid**2).sum() / (n - 2) / sxx)
    p = 2 * sps.t.sf(abs(slope / se), n - 2)
    half = sps.t.ppf(0.975, n - 2) * se
    assert reg["status"] == "ok" and reg["n"] == 5
    assert reg["slope"] == pytest.approx(slope) and reg["intercept"] == pytest.approx(intercept)
    assert reg["r2"] == pytest.approx(r2) and reg["p_value"] == pytest.approx(p)
    assert reg["slope_ci95"] == pytest.approx([slope - half, slope + half])
    rx, ry = ranks(x), ranks(y)  # no ties here
    rho = ((rx - rx.mean()) * (ry - ry.mean())).sum() / math.sqrt(((rx - rx.mean()) ** 2).sum() * ((ry - ry.mean()) ** 2).sum())
    assert reg["spearman"]["rho"] == pytest.approx(rho)
    # Theil-Sen: the median of the pairwise slopes
    pair = [(y[j] - y[i]) / (x[j] - x[i]) for i, j in itertools.combinations(range(n), 2)]
    assert reg["theil_sen"]["slope"] == pytest.approx(np.median(pair))
    # the table shows these numbers, one row per benchmark; the old bootstrap is gone
    row = pd.read_csv(out / "regression_table.csv").iloc[0]
    assert row["slope"] == pytest.approx(slope) and row["theil_sen_slope"] == pytest.approx(np.median(pair))
    assert row["spearman_p_permutation"] == pytest.approx(reg["spearman"]["p_permutation"])
    assert row["minimum_detectable_slope"] == pytest.approx(reg["power"]["minimum_detectable_slope"])
    shown = md_table(out / "regression_table.md").iloc[0]
    assert shown["OLS slope [95% CI]"] == f"{slope:.3g} [{slope - half:.3g}, {slope + half:.3g}]"
    assert "bootstrap" not in (out / "regression_table.md").read_text() and not (out / "regression.json").exists()


def test_not_enough_scored_backbones(tmp_path):
    paths = [run_json(tmp_path, b, 0, {"reach-v3": [1, 0, 1]}) for b in ("qwen", "pali", "kosmos")]
    out = tmp_path / "out"
    aggregate(paths, config(backbones={"qwen": 70.0, "pali": 50.0, "kosmos": None}, seeds=(0,)), out)
    reg = json.loads((out / "inference" / "slopes.json").read_text())["slopes"]["config"]["metaworld"]
    why = "not enough backbones with distinct VQA scores (n=2)"
    assert reg["status"] == why and "slope" not in reg
    assert why in (out / "regression_table.md").read_text()
    assert not list((out / "figures").glob("vqa_*"))
    assert f"figures/vqa_metaworld not drawn: {why}" in (out / "index.md").read_text()


# -- CSV input, full run, CLI ---------------------------------------------------------------
def test_csv_input_path(tmp_path):
    csv = tmp_path / "per_task.csv"
    csv.write_text("# another group's numbers\nbackbone,benchmark,ablation,seed,task,metric,value,n_episodes\n"
                   "qwen,metaworld,full,0,reach-v3,success_rate,80,10\nqwen,metaworld,full,0,push-v3,success_rate,40,30\n")
    res = load_results_csv(csv)
    pooled = res.results.set_index("task").loc["all"]
    assert pooled["value"] == pytest.approx((80 * 10 + 40 * 30) / 40) and pooled["n_episodes"] == 40
    out = tmp_path / "out"
    aggregate(regression_csv(tmp_path), config(backbones=VQA, ablations=("full",)), out)
    assert (out / "figures" / "vqa_metaworld.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "vqa_metaworld.pdf").read_bytes()[:4] == b"%PDF"
    assert "modes_table and figures/modes are not written" in (out / "index.md").read_text()  # said to be absent, with the reason
    assert not (out / "modes_table.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("backbone,benchmark,seed,metric,value\nq,metaworld,0,success_rate,1\n")
    with pytest.raises(ResultsError, match="missing column.*ablation"):
        load_results_csv(bad)
    bad.write_text("backbone,benchmark,ablation,seed,metric,value\nq,metaworld,full,0,success_rate,high\n")
    with pytest.raises(ResultsError, match="line 2: column 'value' is not a number"):
        load_results_csv(bad)


def test_atomic_writes(tmp_path):
    target = tmp_path / "t.csv"
    write_text(target, "old\n")

    def fails(tmp):
        tmp.write_text("half a fi")
        raise RuntimeError("disk full")

    from vlm4vla_core.aggregate.files import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, fails)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vlm4vla_core.config", None)  # plain-YAML config loading
    import yaml

    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(raw_config()))
    paths = [run_json(tmp_path, b, s, {t: [s, 1, 0] for t in TASKS}, modes={"whole_chunk": {t: [s, 1, 0] for t in TASKS},
                                                                             "single_step": {t: [0, 0, 0] for t in TASKS}})
             for b in ("qwen", "pali", "kosmos") for s in (0, 1)]
    out = tmp_path / "results" / "unit"
    report = tmp_path / "backbones" / "qwen" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"source": "tiny", "total_params": 1_234_000_000, "image_tokens_per_frame": 64}))
    tiny = tmp_path / "backbones" / "pali" / "report.json"
    tiny.parent.mkdir(parents=True)
    tiny.write_text(json.dumps({"source": "tiny", "total_params": 52_300, "image_tokens_per_frame": 16}))
    assert main(["--config", str(cfg_path), "--runs", *map(str, paths), "--reports", str(report), str(tiny),
                 "--out", str(out)]) == 0
    shown = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[4:7]]
             for line in (out / "backbones_table.md").read_text().splitlines() if line.startswith("| ")}
    assert shown["qwen"] == ["-", "1.234 B", "64"]  # published size, measured parameters, image tokens
    assert shown["pali"] == ["-", "52.3 k", "16"]  # a tiny model's count stays readable
    index = (out / "index.md").read_text()
    for name in ("results.csv", "episodes.csv", "main_table.md", "backbones_table.csv", "ablation_table.tex", "per_task_table.csv",
                 "modes_table.md", "baseline.json", "inference/slopes.json", "figures/ablation.png",
                 "figures/modes.pdf", "provenance.json"):
        assert (out / name).is_file(), name
        assert f"({name})" in index, name
    assert not list(out.rglob("*.tmp"))
    assert main(["--config", str(cfg_path), "--runs", str(tmp_path / "missing.json"), "--out", str(out)]) == 1
    assert "run file not found" in capsys.readouterr().err


# -- provenance and published numbers -----------------------------------------------------------
def test_provenance(tmp_path):
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(a) != config_hash({**a, "x": 2})
    prov = provenance(a)
    assert {"git_commit", "config_hash", "versions", "hardware", "timestamp_utc"} <= set(prov)
    assert prov["versions"]["python"] and "numpy" in prov["versions"]
    assert git_commit(tmp_path) == ("unknown", None)


def test_published_numbers():
    from vlm4vla_core.published import published, published_results, published_vqa

    df = published_results().set_index(["backbone", "benchmark", "ablation"])["value"]
    assert df[("kosmos-2", "simpler_bridge", "full")] == 60.4
    assert df[("qwen2.5-vl-7b", "simpler_bridge", "full")] == 46.9  # main table, not the freezing table's 46.75
    assert df[("paligemma-1", "calvin", "freeze_vision")] == 0.495
    assert df[("qwen2.5-vl-3b", "simpler_bridge", "from_scratch")] == 15.75
    pub = published()
    assert all(t["source"] for t in pub["tables"].values())
    for name, entry in pub["vqa"]["scores"].items():
        assert entry.get("source") if entry["score"] is not None else entry.get("reason"), name
    assert set(published_vqa()) <= set(pub["models"])
    study = Study.from_dict({"backbones": {"q3": {"source": "Qwen/Qwen2.5-VL-3B-Instruct"}},
                             "benchmarks": {"calv": {"kind": "calvin"}}})
    mapped = published_results(study)
    assert ((mapped["backbone"] == "q3") & (mapped["benchmark"] == "calv")).any()


# -- paper tables: reproduced vs published, freezing, from scratch, embodied SFT, CALVIN chains -----------------
QWEN3B = "Qwen/Qwen2.5-VL-3B-Instruct"


def paper_config():
    """Two benchmarks (one CALVIN), one backbone the paper has (by hub id), two it lacks, one SFT variant."""
    raw = raw_config(backbones={"qwen": 70.0, "pali": 50.0, "kosmos": 40.0}, ablations=("full", "freeze_vision", "from_scratch"))
    raw["backbones"]["qwen"]["source"] = QWEN3B
    raw["benchmarks"]["calv"] = {"kind": "calvin", "chunk": 10}
    raw["embodied_sft"] = {"qwen-sftA": {"base": "qwen", "dataset": "SetA"}, "qwen-sftB": {"base": "qwen", "dataset": "SetB"}}
    return Study.from_dict(raw)


def calvin_json(tmp: Path, backbone, seed, completed, ablation="full"):
    """One CALVIN evaluation JSON: one episode per chain with ``completed`` (0..5)."""
    eps = [dict(task="chain", episode_seed=i, success=c == 5, completed=c) for i, c in enumerate(completed)]
    rec = dict(study="unit", backbone=backbone, family="f", benchmark="calv", ablation=ablation, seed=seed,
               metric="avg_len", modes={"whole_chunk": {"execute_steps": 10, "episodes": eps}}, mode_selection="best",
               reported_mode="whole_chunk", provenance={"git_commit": "c0ffee", "config_hash": "abc"})
    path = tmp / f"calv-{backbone}-{ablation}-{seed}.json"
    path.write_text(json.dumps(rec))
    return path


CHAINS = {  # (backbone, ablation, seed) -> completed per chain
    ("qwen", "full", 0): [5, 3, 0, 2, 5, 1], ("qwen", "full", 1): [4, 4, 1, 0, 5, 2],
    ("qwen", "freeze_vision", 0): [1, 0, 0, 2, 1, 0],
    ("qwen", "from_scratch", 0): [0, 0, 1, 0, 0, 0],
    ("pali", "full", 0): [2, 2, 3, 0, 1, 1], ("pali", "full", 1): [3, 2, 2, 1, 0, 4],
    ("kosmos", "full", 0): [1, 1, 0, 0, 2, 0], ("kosmos", "full", 1): [0, 1, 1, 0, 0, 3],
    ("qwen-sftA", "full", 0): [3, 3, 0, 2, 4, 1],
}


def md_table(path: Path) -> pd.DataFrame:
    """The pipe table of a written .md table, cells stripped."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


@pytest.fixture(scope="module")
def paper_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    four = lambda k: {"reach-v3": [1] * k + [0] * (4 - k)}  # noqa: E731
    paths = [calvin_json(tmp, b, s, c, a) for (b, a, s), c in CHAINS.items()]
    paths += [run_json(tmp, "qwen", 0, four(3)), run_json(tmp, "qwen", 1, four(2)), run_json(tmp, "pali", 0, four(1)),
              run_json(tmp, "kosmos", 0, four(2)), run_json(tmp, "qwen", 0, four(1), ablation="freeze_vision")]
    out = tmp / "out"
    aggregate(paths, paper_config(), out)
    return out


def test_published_table_hand_case(tmp_path):
    from statsmodels.stats.proportion import proportion_confint

    from vlm4vla_core.aggregate.tables import published_table
    from vlm4vla_core.published import published_results

    csv = tmp_path / "r.csv"
    csv.write_text("backbone,benchmark,ablation,seed,metric,value,n_episodes\n"
                   "qwen,calv,full,0,avg_len,3.0,100\nqwen,calv,full,1,avg_len,3.5,100\n"
                   "qwen,calv,from_scratch,0,avg_len,1.5,100\nqwen,calv,freeze_embeddings,0,avg_len,3.0,100\n"
                   "pali,calv,full,0,avg_len,2.0,100\nqwen,metaworld,full,0,success_rate,50.0,10\n")
    cfg = paper_config()
    T1 = sps.t.ppf(0.975, 1)
    assert [round(100 * x) for x in proportion_confint(5, 10, method="wilson")] == [24, 76]
    numbers, shown = published_table(load_results_csv(csv).results, cfg, ["metaworld", "calv"], published_results(cfg))
    # Δ from run values alone: the two cells' variances add, Satterthwaite df
    from vlm4vla_core.aggregate import inference as inf
    from vlm4vla_core.aggregate.tables import ablation_table

    res = load_results_csv(csv)
    cells = inf.table_cells(res)
    _, abl = ablation_table(cells, cfg, ["calv"], inf.Deltas(res, cells))
    va, vb = 0.125 / 2, 0.125  # full: 2 seeds; word embeddings frozen: 1 seed; pooled variance 0.125, df 1
    half = sps.t.ppf(0.975, (va + vb) ** 2 / (va**2 + vb**2)) * (va + vb) ** 0.5
    row = abl.set_index(["benchmark", "backbone"]).loc[("calv", "qwen")]
    assert row["Δ freeze_embeddings"] == f"-0.250 [{-0.25 - half:+.2f}, {-0.25 + half:+.2f}]"
    # published values transcribed from the paper: Qwen2.5VL-3B CALVIN 3.856 (main), 3.849 (word embeddings
    # frozen), 1.381 (from scratch)
    expected = pd.DataFrame({
        "benchmark": ["metaworld", "calv", "calv", "calv", "calv"],
        "backbone": ["qwen", "qwen", "qwen", "qwen", "pali"],
        "ablation": ["full", "full", "freeze_embeddings", "from_scratch", "full"],
        # run values alone: the seeds' variance pooled over the benchmark's cells (qwen's 3.0, 3.5: 0.125, df 1),
        # t(1) interval clipped to 0..5; metaworld's single value: the Wilson interval of 5/10 episodes
        "reproduced": ["50.0 [24, 76], 1 seed x 10 ep, episodes only",
                       f"3.250 [{3.25 - T1 * (0.125 / 2) ** 0.5:.2f}, 5.00], 2 seeds x 100 ep",
                       "3.000 [0.00, 5.00], 1 seed x 100 ep", "1.500 [0.00, 5.00], 1 seed x 100 ep",
                       "2.000 [0.00, 5.00], 1 seed x 100 ep"],
        "published": ["none: benchmark kind 'metaworld' is not in the paper", "3.856", "3.849", "1.381",
                      "none: backbone not in the paper (source 'tiny' matches no published model)"],
        "difference": ["-", "-0.606", "-0.849", "+0.119", "-"],
        "published in": ["-", "main", "module freezing", "from scratch", "-"],
    })
    pd.testing.assert_frame_equal(shown, expected)
    got = numbers.set_index(["backbone", "benchmark", "ablation"])
    assert got.loc[("qwen", "calv", "full"), "difference"] == pytest.approx(3.25 - 3.856)
    assert got.loc[("qwen", "calv", "full"), "published_table"] == "main"
    assert math.isnan(got.loc[("pali", "calv", "full"), "published"])


def test_published_table_from_runs(paper_out):
    md = (paper_out / "published_table.md").read_text()
    assert "the paper gives no numbers for the embodied-SFT variants" in md
    pub = pd.read_csv(paper_out / "published_table.csv").set_index(["backbone", "benchmark", "ablation"])
    assert pub.loc[("qwen", "calv", "full"), "published"] == 3.856
    assert pub.loc[("qwen", "calv", "freeze_vision"), "published"] == 2.855
    assert "freeze_embeddings" in (paper_out / "index.md").read_text()  # published but not reproduced: listed


def test_calvin_success_by_chain_length(paper_out):
    table = pd.read_csv(paper_out / "calvin_length_table.csv")
    for (b, a), _ in itertools.groupby(sorted(CHAINS), key=lambda k: k[:2]):
        seeds = [c for (bb, aa, _), c in CHAINS.items() if (bb, aa) == (b, a)]
        for L in range(1, 6):
            per_seed = [100.0 * sum(1 for c in chains if c >= L) / len(chains) for chains in seeds]
            row = table[(table["backbone"] == b) & (table["ablation"] == a) & (table["length"] == L)].iloc[0]
            assert row["mean"] == pytest.approx(np.mean(per_seed)), (b, a, L)
            assert row["n_episodes"] == 6 * len(seeds)
            if len(seeds) > 1:
                assert row["std"] == pytest.approx(np.std(per_seed, ddof=1))
        avg = table[(table["backbone"] == b) & (table["ablation"] == a) & (table["length"] == 0)]["mean"].iloc[0]
        assert avg == pytest.approx(np.mean([np.mean(c) for c in seeds]))  # = sum over L of success at L / 100
    # qwen full, seed 0: >=1: 5/6, >=5: 2/6; seed 1: >=1: 5/6, >=5: 1/6
    shown = md_table(paper_out / "calvin_length_table.md").set_index(["backbone", "ablation"])
    assert shown.loc[("qwen", "full"), "success ≥1 (%)"] == "83.3 [56, 100], 2 seeds x 6 ep"
    assert shown.loc[("qwen", "full"), "success ≥5 (%)"] == "25.0 [0, 73], 2 seeds x 6 ep"
    assert shown.loc[("qwen", "full"), "avg. length"] == "2.667 [0.66, 4.68], 2 seeds x 6 ep"
    assert shown.loc[("qwen", "freeze_vision"), "avg. length"] == "0.667 [0.00, 1.52], 1 seed x 6 ep, episodes only"
    # every cell read back is the interval of the CSV's numbers (the inference layer's)
    for (b, a), row in shown.iterrows():
        for L, col in [*((L, f"success ≥{L} (%)") for L in range(1, 6)), (0, "avg. length")]:
            est, lo, hi, seeds = parsed(row[col])
            x = table[(table["backbone"] == b) & (table["ablation"] == a) & (table["length"] == L)].iloc[0]
            k = 2 if L == 0 else 0
            assert (lo, hi, seeds) == (round(x["ci_low"], k), round(x["ci_high"], k), x["n_seeds"]), (b, a, L)
            assert est == round(x["mean"], 3 if L == 0 else 1)
    assert (paper_out / "figures" / "calvin_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (paper_out / "figures" / "calvin_lengths.pdf").read_bytes()[:4] == b"%PDF"


def test_no_calvin_figure_without_calvin(tmp_path):
    paths = [run_json(tmp_path, b, 0, {"reach-v3": [1, 0]}) for b in ("qwen", "pali")]
    out = tmp_path / "out"
    aggregate(paths, config(seeds=(0,)), out)
    assert not list((out / "figures").glob("calvin*")) and not (out / "calvin_length_table.csv").exists()
    assert "embodied_sft_table not written: the config lists no embodied_sft variants" in (out / "index.md").read_text()


def _delta(paper_out, a: str, b: str, bench: str) -> str:
    """A Δ cell as the tables show it, from the inference layer's contrast (inference/contrasts.csv)."""
    con = pd.read_csv(paper_out / "inference" / "contrasts.csv")
    r = con[(con["a"] == a) & (con["b"] == b) & (con["benchmark"] == bench)].iloc[0]
    d = 3 if r["metric"] == "avg_len" else 1
    return f"{r['difference']:+.{d}f} [{r['ci_low']:+.{d - 1}f}, {r['ci_high']:+.{d - 1}f}]"


def test_embodied_sft_freezing_and_scratch_layout(paper_out):
    sft = md_table(paper_out / "embodied_sft_table.md")
    # qwen calv full: seeds 16/6, 16/6 -> 2.667; sftA: 13/6 = 2.167 -> Δ -0.500
    # metaworld: qwen 3/4, 2/4 -> 62.5
    expected = pd.DataFrame({
        "base": ["qwen", "qwen", "qwen"],
        "model": ["qwen (base)", "qwen-sftA", "qwen-sftB"],
        "SFT dataset": ["-", "SetA", "SetB"],
        "metaworld": ["62.5 [16, 100], 2 seeds x 4 ep", "not run", "not run"],
        "Δ metaworld vs base": ["-", "-", "-"],
        "calv": ["2.667 [0.66, 4.68], 2 seeds x 6 ep", "2.167 [0.62, 3.71], 1 seed x 6 ep, episodes only", "not run"],
        "Δ calv vs base": ["-", _delta(paper_out, "qwen-sftA", "qwen", "calv"), "-"],
    })
    pd.testing.assert_frame_equal(sft.reset_index(drop=True), expected)
    # qwen freeze_vision: metaworld 25.0 (Δ -37.5), calv 4/6 = 0.667 (Δ -2.000); only qwen froze a module
    expected = pd.DataFrame({"backbone": ["qwen"],
                             "all trained (metaworld / calv)": ["62.5 [16, 100], 2 seeds x 4 ep / 2.667 [0.66, 4.68], 2 seeds x 6 ep"],
                             "vision frozen (metaworld / calv)": ["25.0 [0, 100], 1 seed x 4 ep, episodes only / "
                                                                  "0.667 [0.00, 1.52], 1 seed x 6 ep, episodes only"],
                             "Δ vision frozen (metaworld / calv)": [" / ".join(
                                 _delta(paper_out, "qwen/freeze_vision", "qwen", k) for k in ("metaworld", "calv"))]})
    pd.testing.assert_frame_equal(md_table(paper_out / "freezing_table.md"), expected)
    scr = pd.read_csv(paper_out / "scratch_table.csv")
    (d,) = set(scr["delta_scratch_minus_pretrained"])
    assert d == pytest.approx(1 / 6 - 16 / 6)
    shown = md_table(paper_out / "scratch_table.md").set_index("initialisation")
    assert shown.loc["Δ (from scratch - pretrained)", "calv"] == _delta(paper_out, "qwen/from_scratch", "qwen", "calv")
    assert _delta(paper_out, "qwen-sftA", "qwen", "calv").startswith("-0.500 [")


def _page_caption(page: str) -> str:
    import html as html_lib
    import re

    m = re.search(r'<p class="caption">(.*?)</p>', page, flags=re.S)
    assert m, "page without a caption"
    return html_lib.unescape(m.group(1))


def check_pages(out: Path):
    """Every table and figure has a page in html/ in one of the report's categories; each page's caption is
    its own (no other output's caption text) and true for it: the interval convention exactly where cells have one."""
    import html as html_lib
    import re

    from vlm4vla_core.aggregate import pages

    names = {p.stem for p in (out / "html").glob("*.html")}
    assert {p.stem for p in out.glob("*_table.md")} <= names
    assert {p.stem for p in (out / "figures").glob("*.png")} <= names
    own_texts = {k: v[2] for k, v in pages.PAGES.items()}
    for name in names:
        page = (out / "html" / f"{name}.html").read_text()
        assert pages.category(name) in pages.CATEGORIES, name
        text = _page_caption(page)
        assert text.startswith(pages._entry(name)[2]), name
        others = [k for k, t in own_texts.items() if t in text and t != pages._entry(name)[2]]
        assert not others, (name, others)
        assert "next to this page" not in page and "No caption" not in page
        if name.endswith("_table"):
            body = html_lib.unescape(page.split('<p class="caption">', 1)[1].split("</p>", 1)[1])
            assert bool(re.search(pages.SPREAD_CELL, body.split("<em>git commit")[0])) == (pages.SPREAD in text), name
            header = body.split("</thead>")[0]
            for column, note in pages.COLUMN_NOTES.get(name, {}).items():
                assert (f"<th>{column}" in header) == (note in text), (name, column)
            # an inference table's page (html/inference_<name>.html) has its files under inference/
            md = (out / "inference" / f"{name.removeprefix('inference_')}.md" if name.startswith("inference_")
                  else out / f"{name}.md").read_text()
            assert text in md, name  # the Markdown copy carries the same caption
            assert md.startswith(f"### {pages.title(name)}\n"), name  # and the same title: one home, PAGES
        assert f"<h3>{html_lib.escape(pages.title(name))}</h3>" in page, name
    return names


def test_every_caption_belongs_to_its_table(paper_out, tmp_path):
    """The study pages (runs) and the published-numbers pages (a results CSV, one value per cell)."""
    root = Path(__file__).resolve().parents[1]
    smk = (root / "workflow" / "rules" / "aggregate.smk").read_text()
    assert "category=page_category" in smk and "return pages.category(wildcards.name)" in smk and not (root / "workflow" / "report" / "tables.rst").exists()
    names = check_pages(paper_out)
    assert {"published_table", "embodied_sft_table", "calvin_length_table", "freezing_table", "calvin_lengths",
            "ablation", "vqa_calv", "provenance"} <= names
    assert not any(n.startswith("per_task_") and n != "per_task_table" for n in names)  # no per-benchmark duplicate
    csv = tmp_path / "published.csv"  # as the published numbers: one value per cell
    csv.write_text("backbone,benchmark,ablation,seed,metric,value\n"
                   + "".join(f"{b},metaworld,full,0,success_rate,{v}\n" for b, v in VQA.items()))
    cfg = config(backbones=VQA)
    aggregate(csv, cfg, tmp_path / "pub")
    pub = check_pages(tmp_path / "pub")
    assert "main_table" in pub
    main = (tmp_path / "pub" / "html" / "main_table.html").read_text()
    assert "1 seed x ? ep, no interval" in main and "'? ep, no interval' marks a value" in _page_caption(main)
    regression = (tmp_path / "pub" / "html" / "regression_table.html").read_text()
    assert "95% interval], seeds x" not in _page_caption(regression)  # no such cells there


def test_result_files_carry_provenance(paper_out):
    from PIL import Image

    h = config_hash(paper_config().raw)
    for csv in paper_out.glob("*.csv"):
        df = pd.read_csv(csv)  # baseline_table.csv has no rows here (no zero-action runs)
        assert set(df["config_hash"]) == ({h} if len(df) else set()), csv.name
    for md in paper_out.glob("*_table.md"):
        assert f"config hash {h}" in md.read_text(), md.name
    for png in (paper_out / "figures").glob("*.png"):
        assert f"config hash {h}" in Image.open(png).info["Description"], png.name
    for pdf in (paper_out / "figures").glob("*.pdf"):
        assert f"config hash {h}".encode() in pdf.read_bytes(), pdf.name
    prov = json.loads((paper_out / "provenance.json").read_text())
    assert prov["aggregate"]["config_hash"] == h and prov["aggregate"]["versions"] and prov["aggregate"]["hardware"]
    assert all(r["config_hash"] == "abc" for r in prov["runs"])  # each run's own record, as the run wrote it


def test_measured_vqa_gets_its_own_regression_and_sft_variants_their_base_scratch_run(tmp_path):
    raw = raw_config(backbones={"qwen": 70.0, "pali": 50.0, "kosmos": None}, ablations=("full", "from_scratch"))
    raw["backbones"]["qwen-sft"] = {"family": "f", "source": "sft", "sft": "qwen", "ablations": ["full"]}
    raw["embodied_sft"] = {"qwen-sft": {"base": "qwen", "dataset": "mw"}}
    cfg = Study.from_dict(raw)
    succ = {"qwen": [1, 0, 0], "pali": [1, 1, 0], "kosmos": [0, 0, 0], "qwen-sft": [1, 1, 1]}
    paths = [run_json(tmp_path, b, s, {t: v for t in TASKS}) for b, v in succ.items() for s in (0, 1)]
    paths += [run_json(tmp_path, b, s, {t: [0, 1, 0] for t in TASKS}, ablation="from_scratch")
              for b in ("qwen", "pali", "kosmos") for s in (0, 1)]
    vqa = []
    for b, score in {"qwen": 10.0, "pali": 30.0, "kosmos": 0.0, "qwen-sft": 60.0}.items():
        p = tmp_path / "vqa" / b / "mw.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"score": score, "n": 50, "set": "mw", "source": "measured: mw held-out split"}))
        vqa.append(p)
    out = tmp_path / "out"
    aggregate(paths, cfg, out, vqa=vqa)
    slopes = json.loads((out / "inference" / "slopes.json").read_text())["slopes"]
    measured = slopes["mw"]["metaworld"]
    assert measured["status"] == "ok" and measured["n"] == 4
    assert {p["backbone"]: p["x"] for p in measured["points"]} == {"qwen": 10.0, "pali": 30.0, "kosmos": 0.0,
                                                                  "qwen-sft": 60.0}
    assert (out / "figures" / "vqa_mw_metaworld.png").is_file()
    assert pd.read_csv(out / "regression_mw_table.csv")["n"].tolist() == [4]
    sourced = slopes["config"]["metaworld"]
    assert sourced["n"] == 2  # the config's sourced scores stay a separate regression
    assert (out / "regression_table.md").is_file() and not list(out.glob("regression*.json"))
    scratch = (out / "scratch_table.md").read_text()
    assert "from scratch (qwen's run)" in scratch
    sft = md_table(out / "embodied_sft_table.md")
    assert list(sft["model"]) == ["qwen (base)", "qwen-sft"]
    assert list(sft["VQA mw"]) == ["10.0", "60.0"]  # the measured score beside the control result it went with
    assert sft["Δ metaworld vs base"].iloc[1].startswith("+")
    assert list(pd.read_csv(out / "embodied_sft_table.csv")["vqa_mw"]) == [10.0, 60.0]


def test_vqa_and_published_figures_draw_the_cells_intervals(paper_out):
    """The VQA-vs-control points and the reproduced-vs-published points are the inference layer's cells with
    their 95% intervals (the CSV beside each figure), the published value beside the reproduced one."""
    cells = pd.read_csv(paper_out / "inference" / "cells.csv")
    full = cells[cells["ablation"] == "full"].set_index(["benchmark", "backbone"])
    vqa = pd.read_csv(paper_out / "figures" / "vqa_calv.csv").set_index("backbone")
    for bb, r in vqa.iterrows():
        assert np.allclose(r[["estimate", "ci_low", "ci_high"]].astype(float),
                           full.loc[("calv", bb), ["estimate", "ci_low", "ci_high"]].astype(float)), bb
    assert vqa.loc["qwen", "published"] == 3.856 and np.isnan(vqa.loc["pali", "published"])  # paper: Qwen2.5VL-3B CALVIN
    pub = pd.read_csv(paper_out / "figures" / "published_vs_reproduced.csv")
    table = pd.read_csv(paper_out / "published_table.csv")
    assert len(pub) == table["published"].notna().sum() > 0
    merged = pub.merge(cells, on=["benchmark", "backbone", "ablation"], suffixes=("", "_cell"))
    assert len(merged) == len(pub) and np.allclose(merged["reproduced"], merged["estimate"])
    assert np.allclose(merged[["ci_low", "ci_high"]], merged[["ci_low_cell", "ci_high_cell"]])
    assert {"published_vs_reproduced", "contrasts", "vqa_calv"} <= {p.stem for p in (paper_out / "html").glob("*.html")}


def test_calvin_lengths_draw_intervals_of_the_inference_layer(paper_out):
    """Each point of the chain-length figure is the table's success rate at that length, with a 95% interval
    around it from the inference layer (a success-rate cell of 'at least L subtasks done')."""
    from vlm4vla_core.aggregate import inference as inf
    from vlm4vla_core.aggregate.results import Results
    from vlm4vla_core.aggregate.stats import calvin_length_intervals

    drawn = pd.read_csv(paper_out / "figures" / "calvin_lengths.csv")
    assert set(drawn["length"]) == {1, 2, 3, 4, 5} and np.allclose(drawn["drawn"], drawn["mean"])
    assert ((drawn["lo"] <= drawn["drawn"] + 1e-9) & (drawn["drawn"] <= drawn["hi"] + 1e-9)).all()
    qwen = drawn[(drawn["backbone"] == "qwen") & (drawn["length"] == 1)].iloc[0]
    assert qwen["hi"] > qwen["lo"]  # two seeds: a real interval
    # the same cell by hand: the episode frame's outcome at L = 1 as a success-rate arm
    eps = pd.read_csv(paper_out / "episodes.csv")
    calv = eps[(eps["metric"] == "avg_len")].assign(value=lambda e: 100.0 * (e["value"] >= 1), metric="success_rate")
    frame = inf.episode_frame(Results(calv.iloc[:0], calv, None, [], "test"))
    cell = inf.cells(inf.components(frame)).set_index("arm").loc["qwen"]
    assert (qwen["lo"], qwen["hi"]) == pytest.approx((cell["ci_low"], cell["ci_high"]))
    assert calvin_length_intervals(Results(calv.iloc[:0], None, None, [], "csv")).empty
