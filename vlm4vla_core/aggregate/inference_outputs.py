"""The inference outputs of a study (results/<study>/inference/), the ``plan`` and ``platform-check`` commands.

Written by ``aggregate``: cells (every arm with its 95% interval), contrasts (every comparison the tables
show, with adjusted p), variance_components.json (pooled per benchmark, with degrees of freedom; the
``plan`` command reads it), mixed_model (the reference analysis), slopes.json (the VQA-vs-control
regressions with every estimator of ``slopes``) and claims.md / claims.json (a verdict per claim).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate import claims as claims_mod
from vlm4vla_core.aggregate import inference as inf
from vlm4vla_core.aggregate.files import ResultsError, read_json, write_json, write_text
from vlm4vla_core.aggregate.results import ALL, ZERO, Results, vqa_scores
from vlm4vla_core.aggregate.slopes import fit_points, interaction, score_se
from vlm4vla_core.aggregate.stats import MIN_POINTS, summarize
from vlm4vla_core.config import RENAMED_MODES, Study


def _slope_inputs(res: Results, cells: pd.DataFrame | None, scores: dict[str, dict]) -> pd.DataFrame:
    """One row per (benchmark, scored backbone) at full fine-tuning: x, se_x, y, se_y."""
    if cells is not None and not cells.empty:
        c = cells[(cells["ablation"] == "full") & (cells["backbone"] != ZERO)]
        y = c[["benchmark", "backbone", "estimate", "se"]].rename(columns={"estimate": "y", "se": "se_y"})
    else:
        s = summarize(res.results)
        s = s[(s["task"] == ALL) & (s["ablation"] == "full") & (s["backbone"] != ZERO)]
        y = s[["benchmark", "backbone", "mean"]].rename(columns={"mean": "y"}).assign(se_y=np.nan)
    y = y[y["backbone"].isin(scores)]
    return y.assign(x=[scores[b]["score"] for b in y["backbone"]],
                    se_x=[score_se(scores[b]["score"], scores[b].get("n")) for b in y["backbone"]])


def slope_analyses(res: Results, cells, config: Study, measured: dict, sesoi: dict) -> tuple[dict, dict]:
    """{scores: {benchmark: fit}} and {scores: interaction} for the config's scores and each measured set."""
    sources = {"config": vqa_scores(config), **measured}
    family = {b: e.family for b, e in config.with_sft_variants().backbones.items()}
    slopes, inter = {}, {}
    for name, scores in sources.items():
        if not scores:
            continue
        pts = _slope_inputs(res, cells, scores)
        slopes[name] = {}
        for bench, g in pts.groupby("benchmark", sort=False):
            if len(g) < MIN_POINTS or np.ptp(g["x"]) == 0:
                slopes[name][bench] = dict(status=f"not enough backbones with distinct VQA scores (n={len(g)})",
                                           n=len(g))
                continue
            se_y = None if g["se_y"].isna().any() else list(g["se_y"])
            fit = fit_points(g["x"].to_numpy(), g["y"].to_numpy(), list(g["backbone"]), se_x=list(g["se_x"]),
                             se_y=se_y, sesoi=sesoi.get((name, bench)),
                             families=[family.get(b, b) for b in g["backbone"]])
            fit["points"] = g.drop(columns="benchmark").to_dict("records")
            slopes[name][bench] = dict(status="ok", **fit)
        flagged = sorted({b for f in slopes[name].values() for b in f.get("flagged", [])})
        inter[name] = dict(all_points=interaction(pts), without_flagged=interaction(pts, flagged) if flagged else None)
        inter[name].update(status=inter[name]["all_points"].get("status"), **{
            k: inter[name]["all_points"][k] for k in ("p_value", "F", "df_num", "df_den") if k in inter[name]["all_points"]})
    return slopes, inter


def load_checked_claims(path: str | Path | None, config: Study) -> dict | None:
    """The claims file, schema-validated and checked against the config (None without a file)."""
    if not path:
        return None
    claims = claims_mod.load_claims(path)
    claims_mod.check_claims(claims, config)
    return claims


def write_inference(res: Results, config: Study, out: str | Path, prov: dict, measured: dict | None = None,
                    claims_path: str | Path | dict | None = None, correction: str = "holm") -> tuple[list[Path], list[str]]:
    """Every inference artefact into ``out`` (results/<study>/inference); returns (paths, notes)."""
    from vlm4vla_core.aggregate.tables import footer, write_table

    out = Path(out)
    written, notes = [], []

    def page(name: str) -> dict:  # the report page of an inference table: html/inference_<name>.html of the study
        return dict(page=f"inference_{name}", html_dir=out.parent / "html")

    claims = load_checked_claims(claims_path, config) if isinstance(claims_path, (str, Path)) else claims_path
    if claims:
        correction = claims["correction"]
    frame = comp = cells = None
    if res.episodes is not None:
        frame = inf.episode_frame(res)
        comp = inf.components(frame)
        cells = inf.cells(comp)
        shown = cells[["benchmark", "arm", "design", "cell"]].rename(columns={"cell": "estimate [95% CI], seeds x episodes"})
        written += write_table(out, "cells", cells, shown, prov, **page("cells"))
        for name, table in (("main_table", main_table(cells, config)),
                            ("regimes_table", regimes_table(cells, frame, comp, config))):
            if table is not None:
                written += write_table(out, name, *table, prov, **page(name))
        rows = inf.all_contrasts(frame, comp, config, correction)
        con = pd.DataFrame(rows)
        if not con.empty:
            d = con["metric"].map(lambda m: 3 if m == "avg_len" else 1)
            shown = pd.DataFrame({
                "family": con["family"], "comparison": con["a"] + " − " + con["b"],
                "difference [95% CI]": [f"{x:+.{k}f} [{lo:+.{k}f}, {hi:+.{k}f}]" for x, lo, hi, k in
                                        zip(con["difference"], con["ci_low"], con["ci_high"], d)],
                "P(improvement)": [f"{p:.2f}" for p in con["prob_improvement"]],
                f"p (adj., {correction})": [f"{p:.3g}" for p in con["p_adjusted"]],
                "pairing": np.where(con["paired"], "paired (seed, episode)", "unpaired")})
            written += write_table(out, "contrasts", con, shown, prov, **page("contrasts"))
        written.append(write_json(out / "variance_components.json", dict(
            method="pooled method of moments over the cells of a benchmark (vlm4vla_core.aggregate.inference); "
                   "s2_platform: over the runs evaluated on two or more platforms (null when none was)",
            benchmarks={b: dict(design=c["design"], metric=c["metric"], s2_seed=c["s2_seed"], df_seed=c["df_seed"],
                                s2_episode=c["s2_episode"], s2_platform=c["s2_platform"],
                                df_platform=c["df_platform"], platform_runs=c["platform_runs"], platforms=c["platforms"],
                                arms={k: {kk: a[kk] for kk in ("S", "n", "mean", "ms_seed", "ms_res", "ms_ep", "df_ep")}
                                      for k, a in c["arms"].items()})
                        for b, c in comp.items()},
            provenance=prov)))
        mm = inf.mixed_model(frame)
        shown = mm.assign(**{c: mm[c].map(lambda v: f"{v:.3g}") for c in mm.columns if mm[c].dtype.kind == "f"})
        written += write_table(out, "mixed_model", mm, shown, prov, **page("mixed_model"))
    else:
        notes.append("inference: a results CSV has no episode records: no cell intervals, contrasts or mixed model")
    sesoi = {}
    for c in (claims or {}).get("claims", []):
        if c["kind"] == "slope" and c["sesoi"] is not None:
            sesoi[(c.get("vqa", "config"), c["benchmark"])] = c["sesoi"]
    slopes, inter = slope_analyses(res, cells, config, measured or {}, sesoi)
    written.append(write_json(out / "slopes.json", dict(
        about="control (full fine-tuning) on VQA score per benchmark and per source of scores "
              "(config: the config's scores; else a measured VQA set); see vlm4vla_core.aggregate.slopes",
        slopes=slopes, interaction=inter, provenance=prov)))
    if claims:
        rows = claims_mod.evaluate(claims, frame, comp, cells, slopes, inter)
        written.append(write_text(out / "claims.md", claims_mod.claims_markdown(rows, claims, footer(prov))))
        written.append(write_json(out / "claims.json", dict(claims=rows, alpha=claims["alpha"],
                                                            correction=claims["correction"], source=claims["source"],
                                                            provenance=prov)))
    else:
        notes.append("inference/claims.md not written: no claims file (config key 'claims' or --claims)")
    return written, notes


def main_table(cells: pd.DataFrame, config: Study):
    """backbone x benchmark (full fine-tuning and the zero-action baseline), each cell with its interval."""
    from vlm4vla_core.aggregate.tables import MISSING, backbone_order, ordered

    c = cells[cells["ablation"].isin(["full", "none"])]
    wide = c.pivot(index="backbone", columns="benchmark", values="cell")
    wide = wide.reindex(index=backbone_order(c["backbone"], config),
                        columns=ordered(c["benchmark"], list(config.benchmarks)))
    return c, wide.fillna(MISSING).rename_axis(index="backbone", columns=None).reset_index()


def regimes_table(cells: pd.DataFrame, frame, comp, config: Study):
    """Per benchmark and backbone: every regime's cell and its paired contrast to full fine-tuning."""
    from vlm4vla_core.aggregate.results import ABLATIONS
    from vlm4vla_core.aggregate.tables import MISSING, backbone_order, ordered

    c = cells[cells["backbone"] != ZERO]
    if set(c["ablation"]) <= {"full"}:
        return None
    regimes = ordered(c["ablation"], list(config.ablations or ABLATIONS))
    numbers, rows = [], []
    for bench in ordered(c["benchmark"], list(config.benchmarks)):
        cb = c[c["benchmark"] == bench].set_index("arm")
        for bb in backbone_order(cb["backbone"], config):
            row = {"benchmark": bench, "backbone": bb}
            for a in regimes:
                arm = inf.arm_name(bb, a)
                row[a] = cb.loc[arm, "cell"] if arm in cb.index else MISSING
                if a == "full":
                    continue
                if arm in cb.index and bb in cb.index:
                    r = inf.contrast(frame, comp, bench, arm, bb)
                    k = 3 if r["metric"] == "avg_len" else 1
                    row[f"Δ {a}"] = f"{r['difference']:+.{k}f} [{r['ci_low']:+.{k}f}, {r['ci_high']:+.{k}f}]"
                    numbers.append(dict(benchmark=bench, backbone=bb, ablation=a, **{
                        x: r[x] for x in ("difference", "ci_low", "ci_high", "p_value", "paired")}))
                else:
                    row[f"Δ {a}"] = MISSING
            rows.append(row)
    return pd.DataFrame(numbers), pd.DataFrame(rows)


# -- commands -------------------------------------------------------------------------------------
def plan_main(argv: list[str] | None = None) -> int:
    """``plan``: seeds (or episodes) needed to detect a difference between two arms, from a study's pooled
    variance components (results/<study>/inference/variance_components.json)."""
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core plan", description=plan_main.__doc__)
    p.add_argument("--components", required=True, help="variance_components.json of a finished study")
    p.add_argument("--benchmark", help="benchmark name (default: every benchmark in the file)")
    p.add_argument("--effect", type=float, required=True, help="difference to detect, in the benchmark's unit")
    p.add_argument("--episodes", type=int, help="episodes per seed (default: the study's)")
    p.add_argument("--seeds", type=int, help="seeds per arm: print the episodes needed instead")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = read_json(args.components, "variance components")
        benches = doc.get("benchmarks") or {}
        if args.benchmark and args.benchmark not in benches:
            raise ResultsError(f"{args.components}: no benchmark {args.benchmark!r} (has: {', '.join(benches)})")
        for name in [args.benchmark] if args.benchmark else list(benches):
            b = benches[name]
            n = args.episodes or int(round(np.mean([a["n"] for a in b["arms"].values()])))
            s2s, s2e = b["s2_seed"], b["s2_episode"]
            plat = (f"platform variance {b['s2_platform']:.4g} (df {b['df_platform']:.0f})"
                    if b.get("s2_platform") is not None else "no platform variance (no run evaluated on two platforms)")
            head = (f"{name} ({b['metric']}): seed variance {s2s:.4g} (df {b['df_seed']:.0f}), episode variance "
                    f"{s2e:.4g}, {plat}; effect {args.effect:g}, alpha {args.alpha:g}, power {args.power:g}")
            if args.seeds:
                e = inf.episodes_needed(args.effect, s2s, s2e, args.seeds, args.alpha, args.power)
                print(f"{head}: {args.seeds} seeds need "
                      + (f"{e} episodes per seed" if e else "more seeds: the seed variance alone is too large"))
            else:
                print(f"{head}: {inf.seeds_needed(args.effect, s2s, s2e, n, args.alpha, args.power)} seeds per arm "
                      f"at {n} episodes per seed")
    except (ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def platform_main(argv: list[str] | None = None) -> int:
    """``platform-check``: does a rerun on another machine agree with a reference run within its prediction
    interval? Both sides: a study's episodes.csv (aggregate output) or evaluation JSONs."""
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core platform-check", description=platform_main.__doc__)
    p.add_argument("--reference", nargs="+", required=True, help="episodes.csv, or eval.json files")
    p.add_argument("--rerun", nargs="+", required=True, help="episodes.csv, or eval.json files")
    p.add_argument("--platform-variance", type=float, default=None,
                   help="known platform variance component (default: the reference's own estimate, where it holds "
                        "runs evaluated on two or more platforms, else 0)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ref, new = load_episodes(args.reference), load_episodes(args.rerun)
        table, ok = inf.platform_check(ref, new, args.platform_variance)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(table[["backbone", "benchmark", "ablation", "seed", "mean_ref", "mean_new", "difference", "half_width",
                 "agrees"]].to_string(index=False))
    for bench, g in table.groupby("benchmark"):
        print(f"{bench}: platform variance {g['platform_variance'].iloc[0]:.4g} "
              f"({g['platform_variance_source'].iloc[0]})")
    both = pd.concat([ref, new], ignore_index=True)
    if {"platform", "episode_id"} <= set(both):  # what this pair says about the platforms, for later checks
        both = both.assign(arm=[inf.arm_name(b, a) for b, a in zip(both["backbone"], both["ablation"])])
        for bench, fb in both.groupby("benchmark"):
            est = inf.platform_component(fb)
            if est["s2_platform"] is not None:
                print(f"{bench}: this pair's platform variance {est['s2_platform']:.4g} (df {est['df_platform']:.0f}, "
                      f"{est['runs']} runs on two or more platforms)")
    print(f"{'agrees' if ok else 'DISAGREES'}: {table['agrees'].sum()}/{len(table)} runs inside their "
          f"{table['level'].iloc[0]}")
    return 0 if ok else 3


def load_episodes(paths: list[str]) -> pd.DataFrame:
    """An episode frame from an aggregate's episodes.csv or from evaluation JSONs."""
    from vlm4vla_core.aggregate.results import load_runs

    if len(paths) == 1 and str(paths[0]).endswith(".csv"):
        if not Path(paths[0]).is_file():
            raise ResultsError(f"episodes CSV not found: {paths[0]}")
        e = pd.read_csv(paths[0])
        missing = [c for c in ("backbone", "benchmark", "ablation", "seed", "metric", "value") if c not in e]
        if missing:
            raise ResultsError(f"{paths[0]}: missing column(s) {', '.join(missing)}")
        if "mode" in e:  # written before the execution modes were renamed
            e["mode"] = e["mode"].replace(RENAMED_MODES)
        return e.rename(columns={"value": "y"})
    return inf.episode_frame(load_runs(paths))
