"""Claims as data: each claim of a study is a contrast, a slope or an interaction with a direction and a
smallest effect of interest (SESOI); the aggregate stage gives each a verdict.

A claims file (YAML, schema vlm4vla_core/schemas/claims.schema.yaml)::

    alpha: 0.05
    correction: holm            # or bh, within each family
    claims:
      - "qwen > pali on metaworld by 5"          # one line: a contrast of two arms
      - id: vqa-predicts-calvin
        kind: slope                               # control on VQA score, full fine-tuning
        benchmark: calvin
        direction: greater                        # greater | less | none (no relation / no difference)
        sesoi: 0.01                               # per VQA point, in the benchmark's unit
      - {id: calvin-only, kind: interaction, direction: greater}

An arm is ``backbone`` (full fine-tuning) or ``backbone/ablation``. Verdicts, at level ``alpha`` after
the family's correction:

* supported: the effect lies in the claimed direction (one-sided adjusted p < alpha); for a ``none``
  claim, the effect lies inside +-SESOI (two one-sided tests);
* contradicted: the effect lies significantly in the other direction (a ``none`` claim: any significant
  effect);
* equivalent: a directional claim whose effect lies inside +-SESOI (too small to matter);
* inconclusive: none of these; the minimum detectable effect says what the data could have seen.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from vlm4vla_core.aggregate.files import ResultsError
from vlm4vla_core.config import Study

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "claims.schema.yaml"
LINE = re.compile(r"^\s*(\S+)\s*(>|<)\s*(\S+)\s+on\s+(\S+)(?:\s+by\s+([0-9.eE+-]+))?\s*$")
VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive")


def parse_line(text: str, where: str) -> dict:
    """'A > B on BENCH [by SESOI]' -> a contrast claim."""
    m = LINE.match(text)
    if not m:
        raise ResultsError(f"{where}: {text!r} is not 'ARM > ARM on BENCHMARK [by SESOI]' (ARM: backbone or "
                           "backbone/ablation)")
    a, op, b, bench, sesoi = m.groups()
    return dict(id=text.strip(), kind="contrast", a=a, b=b, benchmark=bench,
                direction="greater" if op == ">" else "less", sesoi=float(sesoi) if sesoi else None)


def load_claims(path: str | Path) -> dict:
    """Read and validate a claims file; one-line claims are expanded. Errors name the file and the key."""
    import jsonschema

    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (SCHEMA.parents[2] / path).is_file():
        path = SCHEMA.parents[2] / path  # a config's relative path, from outside the repository root
    if not path.is_file():
        raise ResultsError(f"claims file not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ResultsError(f"{path}: not YAML ({err})") from None
    schema = yaml.safe_load(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(k) for k in e.absolute_path) or "(top level)"
        raise ResultsError(f"{path}: key {key!r}: {e.message}")
    claims = []
    for i, c in enumerate(doc["claims"]):
        c = parse_line(c, f"{path}: claims.{i}") if isinstance(c, str) else dict(c)
        c.setdefault("family", c["kind"])
        c.setdefault("sesoi", None)
        claims.append(c)
    ids = [c["id"] for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ResultsError(f"{path}: duplicate claim id(s) {dup}")
    return dict(alpha=float(doc.get("alpha", 0.05)), correction=doc.get("correction", "holm"), claims=claims,
                source=str(path))


def check_claims(claims: dict, config: Study) -> None:
    """Every claim names the config's benchmarks, backbones and regimes; the error names the claim's key."""
    from vlm4vla_core.aggregate.results import ABLATIONS, ZERO, benchmark_names
    benches = benchmark_names(config)
    backbones = {*config.backbones, *config.variants(), ZERO}
    regimes = {*ABLATIONS, *(config.ablations or ()), "none"}  # a regime the study skips: not evaluated
    sets = {"config", *config.vqa_sets}
    for i, c in enumerate(claims["claims"]):
        where = f"{claims['source']}: claims.{i} ({c['id']})"
        if c.get("benchmark") is not None and c["benchmark"] not in benches:
            raise ResultsError(f"{where}: benchmark {c['benchmark']!r} is not in the config's 'benchmarks' {benches}")
        if c.get("vqa", "config") not in sets:
            raise ResultsError(f"{where}: vqa {c['vqa']!r} is neither 'config' nor a key of 'vqa_sets'")
        for side in ("a", "b"):
            if side not in c:
                continue
            backbone, _, regime = c[side].partition("/")
            if backbone not in backbones:
                raise ResultsError(f"{where}: {side} {c[side]!r}: backbone {backbone!r} is not in the config")
            if regime and regime not in regimes:
                raise ResultsError(f"{where}: {side} {c[side]!r}: unknown regime {regime!r} (known: "
                                   f"{', '.join(sorted(regimes))})")


# -- evidence -------------------------------------------------------------------------------------
def _arm(text: str) -> str:
    return text[:-5] if text.endswith("/full") else text


def _contrast_evidence(c: dict, cells: pd.DataFrame | None, frame, comp) -> dict:
    from vlm4vla_core.aggregate.inference import contrast

    a, b, bench = _arm(c["a"]), _arm(c["b"]), c["benchmark"]
    if comp is None or bench not in comp:
        return dict(status=f"no episode records for benchmark {bench!r} (a results CSV carries no uncertainty)")
    arms = comp[bench]["arms"]
    missing = [x for x in (a, b) if x not in arms]
    if missing:
        return dict(status=f"arm(s) {missing} not evaluated on {bench!r} (evaluated: {', '.join(arms)})")
    r = contrast(frame, comp, bench, a, b)
    return dict(status="ok", estimate=r["difference"], se=r["se"], df=r["df"], ci95=[r["ci_low"], r["ci_high"]],
                detail=f"{'paired' if r['paired'] else 'unpaired'}, seeds {r['seeds']}")


def _slope_evidence(c: dict, slopes: dict[str, dict[str, dict]]) -> dict:
    scores = c.get("vqa", "config")
    regs = slopes.get(scores)
    if regs is None:
        return dict(status=f"no VQA scores {scores!r} (known: {', '.join(slopes) or 'none'})")
    r = regs.get(c["benchmark"])
    if r is None or r.get("status") != "ok":
        return dict(status=(r or {}).get("status") or f"no regression on benchmark {c['benchmark']!r}")
    if c.get("adjust") == "family":
        w = r.get("within_family") or {}
        if w.get("status") != "ok":
            return dict(status=f"no within-family slope: {w.get('status', 'families unknown')}")
        return dict(status="ok", estimate=w["slope"], se=w["se"], df=w["df"], ci95=w["slope_ci95"],
                    detail=f"OLS with family as a covariate over {w['n']} backbones of {w['families']} families; "
                           f"plain OLS {r['slope']:.3g}")
    return dict(status="ok", estimate=r["slope"], se=r["se"], df=r["n"] - 2, ci95=r["slope_ci95"],
                detail=f"OLS over {r['n']} backbones; Theil-Sen {r['theil_sen']['slope']:.3g}"
                       + (f"; without {', '.join(r['flagged'])} (influential): {r['without_flagged']['slope']:.3g}, "
                          f"p {r['without_flagged']['p_value']:.2g}" if r.get("without_flagged") else ""))


def _interaction_evidence(c: dict, inter: dict[str, dict]) -> dict:
    r = inter.get(c.get("vqa", "config"))
    if not r or r.get("status") != "ok":
        return dict(status=(r or {}).get("status", "no interaction test"))
    return dict(status="ok", p_value=r["p_value"], detail=f"F({r['df_num']}, {r['df_den']}) = {r['F']:.2f}")


def _claim_p(c: dict, ev: dict) -> float:
    """The p the claim is judged on: one-sided in the claimed direction; a 'none' claim: the TOST p."""
    if "p_value" in ev:
        return ev["p_value"]
    t = ev["estimate"] / ev["se"] if ev["se"] > 0 else np.inf * np.sign(ev["estimate"])
    if c["direction"] == "greater":
        return float(sps.t.sf(t, ev["df"]))
    if c["direction"] == "less":
        return float(sps.t.cdf(t, ev["df"]))
    return _tost(ev, c["sesoi"]) if c["sesoi"] is not None else 1.0


def _tost(ev: dict, sesoi: float) -> float:
    lo = sps.t.sf((ev["estimate"] + sesoi) / ev["se"], ev["df"])
    hi = sps.t.cdf((ev["estimate"] - sesoi) / ev["se"], ev["df"])
    return float(max(lo, hi))


def evaluate(claims: dict, frame=None, comp=None, cells=None, slopes=None, interactions=None) -> list[dict]:
    """A verdict per claim (see module docstring)."""
    from vlm4vla_core.aggregate.inference import adjusted_p, minimum_detectable

    alpha, method = claims["alpha"], claims["correction"]
    rows = []
    for c in claims["claims"]:
        if c["kind"] == "contrast":
            ev = _contrast_evidence(c, cells, frame, comp)
        elif c["kind"] == "slope":
            ev = _slope_evidence(c, slopes or {})
        else:
            ev = _interaction_evidence(c, interactions or {})
        row = dict(id=c["id"], kind=c["kind"], family=c["family"], direction=c["direction"], sesoi=c["sesoi"],
                   text=c.get("text") or c["id"], status=ev["status"], detail=ev.get("detail", ""))
        if ev["status"] == "ok":
            row["p_claim"] = _claim_p(c, ev)
            if "estimate" in ev:
                row.update(estimate=ev["estimate"], ci95=ev["ci95"], se=ev["se"],
                           p_two_sided=float(2 * sps.t.sf(abs(ev["estimate"]) / ev["se"], ev["df"])) if ev["se"] > 0 else 0.0,
                           mde=minimum_detectable(ev["se"], ev["df"], alpha),
                           p_equivalence=_tost(ev, c["sesoi"]) if c["sesoi"] is not None else None)
        rows.append(row)
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if "p_claim" in r:
            by.setdefault(r["family"], []).append(i)
    for idx in by.values():
        for key in ("p_claim", "p_two_sided", "p_equivalence"):
            have = [i for i in idx if rows[i].get(key) is not None]
            if have:
                adj = adjusted_p([rows[i][key] for i in have], method)
                for i, q in zip(have, adj):
                    rows[i][f"{key}_adjusted"] = float(q)
    for r in rows:
        r["verdict"] = _verdict(r, alpha) if r["status"] == "ok" else "inconclusive"
        r["correction"] = f"{method} within family {r['family']!r}"
    return rows


def _verdict(r: dict, alpha: float) -> str:
    p = r["p_claim_adjusted"]
    if r["kind"] == "interaction":
        return "supported" if p < alpha else "inconclusive"
    sign = np.sign(r["estimate"])
    significant = r["p_two_sided_adjusted"] < alpha
    equivalent = r.get("p_equivalence_adjusted") is not None and r["p_equivalence_adjusted"] < alpha
    if r["direction"] == "none":
        return "contradicted" if significant else "supported" if equivalent else "inconclusive"
    wanted = 1 if r["direction"] == "greater" else -1
    if p < alpha and sign == wanted:
        return "supported"
    if significant and sign == -wanted:
        return "contradicted"
    return "equivalent" if equivalent else "inconclusive"


def claims_markdown(rows: list[dict], claims: dict, foot: str) -> str:
    """claims.md: one row per claim with its verdict, adjusted p, interval and minimum detectable effect."""
    def g(x, f="{:.3g}"):
        return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f.format(x)

    lines = [f"### Claims ({claims['source']})", "",
             f"Verdicts at alpha {claims['alpha']:g}, {claims['correction']} correction within each family. "
             "p (claim): one-sided in the claimed direction (a 'none' claim: equivalence within ±SESOI; an "
             "interaction: F test). MDE: the smallest effect detectable with 80% power at this study's precision.",
             "", "| claim | verdict | estimate [95% CI] | p (claim, adj.) | p (equiv., adj.) | SESOI | MDE | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = (f"{g(r['estimate'])} [{g(r['ci95'][0])}, {g(r['ci95'][1])}]" if "estimate" in r else "-")
        note = r["detail"] if r["status"] == "ok" else r["status"]
        lines.append(f"| {r['text']} | **{r['verdict']}** | {est} | {g(r.get('p_claim_adjusted'))} | "
                     f"{g(r.get('p_equivalence_adjusted'))} | {g(r['sesoi'])} | {g(r.get('mde'))} | "
                     f"{note.replace('|', '/')} |")
    return "\n".join(lines) + f"\n\n_{foot}_\n"
