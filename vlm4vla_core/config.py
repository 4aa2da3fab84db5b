"""Study config: load, validate, resolve per-job settings.

The JSON schema lives in ``workflow/schemas/config.schema.yaml``; the Snakefile
validates against the same file with ``snakemake.utils.validate``. On top of
the schema this module checks what a schema cannot: that every family has an
adapter, that ablations and modes make sense for the study. Every error names
the key that is wrong.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
#: Benchmarks whose data and evaluation stages exist in this version.
RUNNABLE_BENCHMARKS = {"metaworld"}
MODES = ("full", "half", "single")
METAWORLD_MAX_STEPS = 500  # Meta-World v3 ends every episode there
#: Action dimensions of each benchmark kind: arm deltas + 1 gripper.
ACTION_DIM = {"metaworld": 4, "calvin": 7, "simpler_bridge": 7, "libero10": 7}


class ConfigError(ValueError):
    """A study config that cannot run; the message names the key."""


def _schema() -> dict:
    if not SCHEMA.is_file():
        raise ConfigError(f"config schema not found at {SCHEMA}")
    return yaml.safe_load(SCHEMA.read_text())


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _explain(error, schema: dict) -> str:
    """Turn a jsonschema error into a message that names the key and suggests a fix."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        parts = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            parts.append(f"unknown key {_key_path([*error.absolute_path, key])!r}{hint}")
        return "; ".join(parts)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing key {_key_path([*error.absolute_path, missing])!r}"
    return f"key {where!r}: {error.message}"


def validate(config: Any) -> dict:
    """Schema + semantic checks. Returns the config unchanged or raises ConfigError."""
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError("the config must be a mapping of keys to values")
    schema = _schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(_explain(e, schema) for e in errors))

    from vlm4vla_core.backbones import FAMILIES

    for name, entry in config["backbones"].items():
        if entry["family"] not in FAMILIES:
            close = difflib.get_close_matches(entry["family"], list(FAMILIES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"key 'backbones.{name}.family': unknown family {entry['family']!r} "
                f"(supported: {', '.join(sorted(FAMILIES))}){hint}"
            )
    for name, entry in config.get("embodied_sft", {}).items():
        if entry["base"] not in config["backbones"]:
            raise ConfigError(f"key 'embodied_sft.{name}.base': {entry['base']!r} is not a key of 'backbones'")
    evaluation = config["evaluation"]
    if evaluation["mode_selection"] not in ("best", *evaluation["modes"]):
        raise ConfigError(f"key 'evaluation.mode_selection': {evaluation['mode_selection']!r} is not one of "
                          f"evaluation.modes {evaluation['modes']} (or 'best')")
    for name, bench in config["benchmarks"].items():
        if bench["kind"] == "metaworld":
            for key in ("tasks", "image_size", "camera", "demos_per_task", "episodes_per_task", "max_steps"):
                if key not in bench:
                    raise ConfigError(f"missing key 'benchmarks.{name}.{key}' (required for kind metaworld)")
            from vlm4vla_core.benchmarks.metaworld.instructions import INSTRUCTIONS

            for i, task in enumerate(bench["tasks"]):
                if task not in INSTRUCTIONS:
                    close = difflib.get_close_matches(task, list(INSTRUCTIONS), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(f"key 'benchmarks.{name}.tasks.{i}': unknown Meta-World task {task!r}{hint}")
            if bench["max_steps"] > METAWORLD_MAX_STEPS:
                raise ConfigError(f"key 'benchmarks.{name}.max_steps': {bench['max_steps']} exceeds Meta-World's "
                                  f"episode limit of {METAWORLD_MAX_STEPS}")
    return config


def load_config(path: str | Path) -> dict:
    """Read and validate a study config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return validate(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


@dataclass(frozen=True)
class TrainSettings:
    """Training settings of one job: defaults < benchmark overrides < backbone overrides."""

    zero_stage: int
    precision: str
    micro_batch: int
    grad_accum: int
    grad_clip: float
    lr: float
    warmup_steps: int
    max_steps: int
    checkpoint_every: int
    weight_decay: float = 0.0
    log_every: int = 10
    num_processes: int = 1
    num_threads: int = 0
    gradient_checkpointing: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def train_settings(config: dict, backbone: str, benchmark: str) -> TrainSettings:
    merged = dict(config["training"])
    merged.update(config["benchmarks"][benchmark].get("training", {}))
    merged.update(config["backbones"][backbone].get("training", {}))
    return TrainSettings(**merged)


def execute_steps(mode: str, chunk: int) -> int:
    """Steps executed before re-planning: the whole chunk, half of it, or one."""
    return {"full": chunk, "half": max(1, chunk // 2), "single": 1}[mode]


def report_head(config: dict) -> tuple[int, int]:
    """(chunk, action_dim) of the largest head in the study: what the backbone report counts."""
    benches = config["benchmarks"].values()
    return max(b["chunk"] for b in benches), max(ACTION_DIM[b["kind"]] for b in benches)


def jobs(config: dict) -> list[dict]:
    """Every (backbone, benchmark, ablation, seed) training job of the study."""
    return [
        dict(backbone=b, benchmark=k, ablation=a, seed=s)
        for b in config["backbones"]
        for k in config["benchmarks"]
        for a in config["ablations"]
        for s in config["seeds"]
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core validate-config", description=__doc__)
    parser.add_argument("config", help="study config YAML")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    todo = jobs(config)
    print(
        f"{args.config}: study {config['study']!r} is valid: {len(config['backbones'])} backbones x "
        f"{len(config['benchmarks'])} benchmarks x {len(config['ablations'])} ablations x "
        f"{len(config['seeds'])} seeds = {len(todo)} training jobs"
    )
    return 0
