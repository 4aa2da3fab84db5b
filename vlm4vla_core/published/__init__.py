"""The published VLM4VLA numbers with their sources (published.yaml): a mapping, a results table, VQA scores."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vlm4vla_core.config import Study

PUBLISHED = Path(__file__).with_name("published.yaml")


@cache
def published() -> dict:
    """The parsed published.yaml (see the comments in that file)."""
    return yaml.safe_load(PUBLISHED.read_text())


def published_results(config: Study | None = None) -> pd.DataFrame:
    """Published numbers as a long-format results table (aggregate stage columns + ``source`` and
    ``table``, the key under ``tables`` in published.yaml).

    Full fine-tuning comes from the main table, frozen variants from the
    module-freezing table, ``from_scratch`` from the from-scratch row. With a
    ``config``, models are renamed to the config's backbone key whose
    ``source`` is the model's hub id (or one of its ``aliases``), and benchmarks to the config's benchmark
    of the same kind; models and benchmarks the config lacks keep their own names.
    """
    pub = published()
    model_name = {m: m for m in pub["models"]}
    bench_name = {b: b for b in pub["benchmarks"]}
    if config is not None:
        by_hub = {e.source: k for k, e in config.backbones.items()}
        for m, e in pub["models"].items():
            ids = [e.get("hub_id"), *e.get("aliases", [])]
            model_name[m] = next((by_hub[i] for i in ids if i in by_hub), m)
        by_kind = {e.kind: k for k, e in config.benchmarks.items()}
        if by_kind:
            bench_name.update({b: by_kind[e["kind"]] for b, e in pub["benchmarks"].items() if e["kind"] in by_kind})
    rows = []

    t = pub["tables"]

    def add(model, ablation, values, table):
        for bench, value in values.items():
            rows.append(dict(backbone=model_name[model], benchmark=bench_name[bench], ablation=ablation, seed=0,
                             task="all", metric=pub["benchmarks"][bench]["metric"], value=float(value),
                             n_episodes=np.nan, mode=np.nan, source=t[table]["source"], table=table))

    for model, values in t["main"]["results"].items():
        add(model, "full", values, "main")
    for model, by_ablation in t["module_freezing"]["results"].items():
        for ablation, values in by_ablation.items():
            if ablation != "full":
                add(model, ablation, values, "module_freezing")
    for model, values in t["from_scratch"]["results"].items():
        add(model, "from_scratch", values, "from_scratch")
    return pd.DataFrame(rows)


def published_vqa(benchmark: str | None = None) -> dict[str, dict]:
    """{model: {"score", "source"}} for the models with a sourced VQA score (nulls left out).

    Without ``benchmark``: the main VQA benchmark (``vqa.scores``); otherwise a key of
    ``vqa.other_benchmarks`` (e.g. ``"docvqa"``).
    """
    vqa = published()["vqa"]
    if benchmark is None:
        scores = vqa["scores"]
    elif benchmark in vqa.get("other_benchmarks", {}):
        scores = vqa["other_benchmarks"][benchmark]["scores"]
    else:
        raise KeyError(f"published.yaml vqa: unknown benchmark {benchmark!r}; "
                       f"known: {sorted(vqa.get('other_benchmarks', {}))}")
    return {m: {"score": float(e["score"]), "source": e["source"]} for m, e in scores.items() if e.get("score") is not None}


def sourced_vqa(key: str) -> dict:
    """The main published VQA score of model ``key`` as a config's ``vqa`` entry: ``{"score", "n", "source"}``
    (n: the benchmark's question count, for the score's standard error),
    the source naming the benchmark, the evaluator and where the value was read. KeyError, with the
    recorded reason, when published.yaml has no score for it."""
    vqa = published()["vqa"]
    entry = vqa["scores"].get(key)
    if entry is None:
        raise KeyError(f"published.yaml vqa.scores has no model {key!r}; known: {sorted(vqa['scores'])}")
    if entry.get("score") is None:
        reason = " ".join(str(entry.get("reason", "no reason recorded")).split())
        raise KeyError(f"published.yaml has no VQA score for {key!r}: {reason}")
    benchmark = vqa["name"]
    protocol = f"; {entry['protocol']}" if entry.get("protocol") else ""
    return {"score": float(entry["score"]), "n": vqa.get("n_questions"),
            "source": f"{benchmark}{protocol}: {' '.join(entry['source'].split())} (vlm4vla_core/published/published.yaml)"}


def main(argv: list[str]) -> int:
    """``published-results``: write the published numbers as a results CSV for ``aggregate --results-csv``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core published-results", description=main.__doc__)
    p.add_argument("--config", help="study config: name models and benchmarks by its keys (e.g. config.yaml)")
    p.add_argument("--out", required=True, help="CSV file")
    args = p.parse_args(argv)
    config = None
    if args.config:
        from vlm4vla_core.config import load_study

        config = load_study(args.config)  # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    from vlm4vla_core.io import atomic_write

    atomic_write(args.out, lambda tmp: published_results(config).to_csv(tmp, index=False))
    return 0
