"""A study config checked against everything the package knows: the schema and the config's own
rules (``vlm4vla_core.config``), the family adapters and the benchmark plug-ins.

``python -m vlm4vla_core validate-config config.yaml`` runs these checks and prints the jobs;
every stage loads its config through ``load`` and stops with a message naming the key.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from vlm4vla_core.config import ConfigError, jobs, load_config, validate, with_sft_variants


def check(config) -> dict:
    """All checks; returns the config unchanged or raises ConfigError naming the key."""
    validate(config)
    from vlm4vla_core import benchmarks
    from vlm4vla_core.backbones import FAMILY_NAMES  # the names only: torch is not imported

    for name, entry in config["backbones"].items():
        if entry["family"] not in FAMILY_NAMES:
            close = difflib.get_close_matches(entry["family"], list(FAMILY_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"key 'backbones.{name}.family': unknown family {entry['family']!r} "
                              f"(supported: {', '.join(sorted(FAMILY_NAMES))}){hint}")
    from vlm4vla_core.published import sourced_vqa

    for name, entry in config["backbones"].items():
        if "published" in (entry.get("vqa") or {}):
            try:
                sourced_vqa(entry["vqa"]["published"])
            except KeyError as err:
                raise ConfigError(f"key 'backbones.{name}.vqa.published': {err.args[0]}") from None
    for name, entry in config["benchmarks"].items():
        try:
            bench = benchmarks.get(entry["kind"])
        except ConfigError as err:
            raise ConfigError(f"key 'benchmarks.{name}.kind': {err}") from None
        bench.check(name, entry)
        benchmarks.modes_of(config, name)  # a fixed mode_selection names one of the benchmark's modes
    providers = benchmarks.vqa_generators()
    for name, entry in (config.get("vqa_sets") or {}).items():
        plugin = providers.get(entry.get("generate"))
        bench = config["benchmarks"].get(entry.get("benchmark"))
        if plugin is not None and (bench is None or bench["kind"] != plugin.kind):
            raise ConfigError(f"key 'vqa_sets.{name}.benchmark': {entry.get('benchmark')!r} is not a {plugin.kind} "
                              f"benchmark of 'benchmarks' (generate: {entry['generate']})")
    return config


def load(path: str | Path, benchmark: str | None = None, backbone: str | None = None,
         ablation: str | None = None) -> dict:
    """Read and check a study config; the named benchmark, backbone and ablation must be in it."""
    config = load_config(path)
    try:
        check(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for key, value in (("benchmarks", benchmark), ("backbones", backbone)):
        if value is not None and value not in config[key]:
            raise ConfigError(f"{path}: no {value!r} under {key!r}")
    if ablation is not None and ablation not in config["ablations"]:
        raise ConfigError(f"{path}: ablation {ablation!r} is not listed under 'ablations'")
    return config


def report_head(config: dict) -> tuple[int, int]:
    """(chunk, action_dim) of the largest head in the study: what the backbone report counts."""
    from vlm4vla_core import benchmarks

    benches = config["benchmarks"].values()
    return max(b["chunk"] for b in benches), max(benchmarks.get(b["kind"]).action_dim for b in benches)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core validate-config", description=__doc__)
    parser.add_argument("config", help="study config YAML")
    args = parser.parse_args(argv)
    config = load(args.config)  # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    todo = jobs(with_sft_variants(config))
    n_pre, n_sft = (len(config.get(k) or {}) for k in ("pretraining", "embodied_sft"))
    print(
        f"{args.config}: study {config['study']!r} is valid: {len(config['backbones'])} backbones"
        f"{f' + {n_pre} pretraining variants' if n_pre else ''}"
        f"{f' + {n_sft} embodied-SFT variants' if n_sft else ''} x "
        f"{len(config['benchmarks'])} benchmarks x {len(config['ablations'])} ablations x "
        f"{len(config['seeds'])} seeds = {len(todo)} training jobs"
    )
    return 0
