"""The study's findings: one line per declared claim with its verdict, estimate, 95% interval and the report
pages behind it (the table and figure that show the evidence).

Written in two forms from the same lines: the "Findings" section that opens ``index.md`` (links to the pages
under ``html/``) and ``findings.rst``, the fragment the Snakemake report's landing page
(workflow/report/workflow.rst) includes, whose links open the pages inside the report.
"""

from __future__ import annotations

import math
from pathlib import Path

from vlm4vla_core.aggregate.files import read_json
from vlm4vla_core.config import Study

CLAIMS_PAGE = "inference_claims"


def _regime(arm: str) -> str:
    return arm.partition("/")[2] or "full"


def evidence(claim: dict, config: Study) -> list[tuple[str, ...]]:
    """The report pages (``html/<name>.html``) that show a claim's evidence, most specific first; each entry
    lists alternatives, of which the caller keeps the first that was written (the table with intervals, else
    the plain table, as for a results CSV without episodes)."""

    if claim["kind"] == "contrast":
        arms = (claim["a"], claim["b"])
        names = [("inference_contrasts",)]
        if any(_regime(a) not in ("full", "none") for a in arms):
            names.append(("inference_regimes_table", "ablation_table"))
        if any(a.partition("/")[0] in config.variants() for a in arms):
            names.append(("embodied_sft_table",))
        names += [("inference_main_table", "main_table"), ("ablation",)]
        return names
    scores = claim.get("vqa", "config")
    suffix = "" if scores == "config" else f"_{scores}"
    names = [(f"regression{suffix}_table",)]
    if claim.get("benchmark"):
        names.append((f"vqa{suffix}_{claim['benchmark']}",))
    return names


def _g(x, fmt: str = "{:.3g}") -> str:
    """A number; an unbounded interval end (no degrees of freedom) is stored as null."""
    return "unbounded" if x is None or not math.isfinite(x) else fmt.format(x)


def lines(out: Path, claims: dict | None, config: Study, pages: set[str]) -> list[dict]:
    """One finding per claim of ``out/inference/claims.json`` (written by this aggregation): verdict, text,
    estimate with its interval, adjusted p and the written pages behind it. ``pages``: the report pages written
    (the claims table, ``inference_claims``, among them: the Snakemake landing page includes the findings when
    the report has that page)."""
    path = Path(out) / "inference" / "claims.json"
    if not claims or not path.is_file():
        return []
    rows = read_json(path, "claims verdicts")["claims"]
    by_id = {c["id"]: c for c in claims["claims"]}
    found = []
    for r in rows:
        if "estimate" in r:
            est = f"estimate {_g(r['estimate'])} [{_g(r['ci95'][0])}, {_g(r['ci95'][1])}]"
        else:  # an interaction is a test without an estimate; a claim without evidence says why
            est = r["detail"] if r["status"] == "ok" else "no estimate: " + r["status"]
        p = r.get("p_claim_adjusted")
        behind = [next(n for n in alt if n in pages) for alt in evidence(by_id[r["id"]], config)
                  if any(n in pages for n in alt)]
        found.append(dict(verdict=r["verdict"], text=r["text"],
                          summary=est + (f"; p adj. {_g(p, '{:.2g}')}" if p is not None else ""),
                          pages=behind))
    return found


def markdown(found: list[dict]) -> list[str]:
    """index.md's opening section; links go to the pages under html/."""
    if not found:
        return []
    head = ["## Findings", "", "Each question the claims file declares, with the verdict of the inference layer "
            "([inference/claims.md](inference/claims.md): adjusted p, smallest effect of interest, minimum detectable "
            "effect; docs/statistics.md), and the pages that show the evidence:", ""]
    body = [f"- **{f['verdict']}**: {f['text']} ({f['summary']})"
            + (" — " + ", ".join(f"[{n}](html/{n}.html)" for n in f["pages"]) if f["pages"] else "")
            for f in found]
    return head + body + [""]


def _rst_text(text: str) -> str:
    return "".join("\\" + ch if ch in "*`_|\\" else ch for ch in text)


def rst(found: list[dict], study: str) -> str:
    """findings.rst: the landing page's Findings section. A link names a page's file (``<name>.html``), a
    target the Snakemake report defines for every file in the report."""
    title = f"Findings of study {study}"
    out = [title, "-" * len(title), "",
           "Each question the claims file declares, with the verdict of the inference layer (estimate and 95% "
           "interval; p adjusted within the claim's family; the table: `inference_claims.html`_), and the pages "
           "that show the evidence:", ""]
    if not found:
        out.append("No claims file: no findings (config key ``claims``).")
    for f in found:
        links = ", ".join(f"`{n}.html`_" for n in f["pages"])
        out.append(f"- **{f['verdict']}**: {_rst_text(f['text'])} ({_rst_text(f['summary'])})"
                   + (f" — {links}" if links else ""))
    return "\n".join(out) + "\n"


def claims_page_rows(out: Path) -> list[dict]:
    """The claims table of the report page ``inference_claims`` (from inference/claims.json)."""
    rows = read_json(Path(out) / "inference" / "claims.json", "claims verdicts")["claims"]
    return [{"claim": r["text"], "verdict": r["verdict"],
             "estimate [95% CI]": (f"{_g(r['estimate'])} [{_g(r['ci95'][0])}, {_g(r['ci95'][1])}]"
                                   if "estimate" in r else "-"),
             "p (claim, adj.)": _g(r.get("p_claim_adjusted"), "{:.2g}") if r.get("p_claim_adjusted") is not None else "-",
             "SESOI": _g(r["sesoi"]) if r.get("sesoi") is not None else "-",
             "MDE": _g(r.get("mde")) if r.get("mde") is not None else "-",
             "family": r["family"], "note": r["detail"] if r["status"] == "ok" else r["status"]} for r in rows]
