"""A study config checked against everything the package knows: the schema and the config's own
rules (``vlm4vla_core.config``), the family adapters and the benchmark plug-ins.

``python -m vlm4vla_core validate-config config.yaml`` runs these checks and prints the jobs;
every stage loads its config through ``load`` and stops with a message naming the key.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from vlm4vla_core.config import ConfigError, Study, load_config, validate


def check(config) -> Study:
    """All checks of a config dict; returns its typed view (``vlm4vla_core.config.Study``) or raises
    ConfigError naming the key."""
    validate(config)
    study = Study.from_dict(config)
    from vlm4vla_core import benchmarks
    from vlm4vla_core.backbones import FAMILY_NAMES  # the names only: torch is not imported

    for name, entry in study.backbones.items():
        if entry.family not in FAMILY_NAMES:
            close = difflib.get_close_matches(entry.family, list(FAMILY_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"key 'backbones.{name}.family': unknown family {entry.family!r} "
                              f"(supported: {', '.join(sorted(FAMILY_NAMES))}){hint}")
    from vlm4vla_core.published import sourced_vqa

    for name, entry in study.backbones.items():
        if "published" in (entry.vqa or {}):
            try:
                sourced_vqa(entry.vqa["published"])
            except KeyError as err:
                raise ConfigError(f"key 'backbones.{name}.vqa.published': {err.args[0]}") from None
    for name, entry in study.benchmarks.items():
        try:
            bench = benchmarks.get(entry.kind)
        except ConfigError as err:
            raise ConfigError(f"key 'benchmarks.{name}.kind': {err}") from None
        bench.check(name, dict(entry.entry))
        benchmarks.modes_of(study, name)  # a fixed mode_selection names one of the benchmark's modes
    providers = benchmarks.vqa_generators()
    for name, entry in study.vqa_sets.items():
        plugin = providers.get(entry.generate)
        bench = study.benchmarks.get(entry.benchmark)
        if plugin is not None and (bench is None or bench.kind != plugin.kind):
            raise ConfigError(f"key 'vqa_sets.{name}.benchmark': {entry.benchmark!r} is not a {plugin.kind} "
                              f"benchmark of 'benchmarks' (generate: {entry.generate})")
    return study


def load(path: str | Path, benchmark: str | None = None, backbone: str | None = None,
         ablation: str | None = None) -> Study:
    """Read and check a study config (its typed view); the named benchmark, backbone and ablation must be in it."""
    config = load_config(path)
    try:
        study = check(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for key, names, value in (("benchmarks", study.benchmarks, benchmark), ("backbones", study.backbones, backbone)):
        if value is not None and value not in names:
            raise ConfigError(f"{path}: no {value!r} under {key!r}")
    if ablation is not None and ablation not in study.ablations:
        raise ConfigError(f"{path}: ablation {ablation!r} is not listed under 'ablations'")
    return study


def report_head(study: Study) -> tuple[int, int]:
    """(chunk, action_dim) of the largest head in the study: what the backbone report counts."""
    from vlm4vla_core import benchmarks

    benches = study.benchmarks.values()
    return max(b.chunk for b in benches), max(benchmarks.get(b.kind).action_dim for b in benches)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core validate-config", description=__doc__)
    parser.add_argument("config", help="study config YAML")
    args = parser.parse_args(argv)
    study = load(args.config)  # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    todo = study.with_sft_variants().jobs()
    n_pre, n_sft = len(study.pretraining), len(study.embodied_sft)
    print(
        f"{args.config}: study {study.name!r} is valid: {len(study.backbones)} backbones"
        f"{f' + {n_pre} pretraining variants' if n_pre else ''}"
        f"{f' + {n_sft} embodied-SFT variants' if n_sft else ''} x "
        f"{len(study.benchmarks)} benchmarks x {len(study.ablations)} ablations x "
        f"{len(study.seeds)} seeds = {len(todo)} training jobs"
    )
    return 0
