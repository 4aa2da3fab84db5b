"""Study config: load, validate, resolve per-job settings.

The JSON schema ships inside the package (``vlm4vla_core/schemas/config.schema.yaml``, ``SCHEMA``), so an
installed package loads a config anywhere; the Snakefile validates against the same file with ``snakemake.utils.validate``. On top of
the schema this module checks what a schema cannot inside the config itself
(the mode rule, the embodied-SFT bases). It is the bottom layer and imports no
other module of the package: ``vlm4vla_core.study`` adds the checks of the
family adapters and the benchmark plug-ins. Every error names the key that is
wrong.

The package reads a config through one typed, frozen object, ``Study``
(``Study.from_dict(validated)``, ``load_study(path)``): its sections are
attributes (``study.training``, ``study.backbones["x"].family``) and the
per-job settings are its methods (``train_settings``, ``resource``, ``jobs``).
Only this module and the workflow's glue (the Snakefile and its rules, which
Snakemake hands a dict) index the dict; ``Study.raw`` is that dict.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
#: Sections of variants that fine-tune a backbone before it becomes a VLA, in the order they apply.
VARIANT_SECTIONS = ("pretraining", "embodied_sft")
#: Execution modes: steps of a predicted chunk executed before re-planning (the whole chunk, half of it,
#: one step), fewer re-plans first: the tie-break order of the ``best`` rule.
MODES = ("whole_chunk", "half_chunk", "single_step")
#: The names the execution modes had before (``full`` also named a training regime): a config that still
#: uses one stops with the new name; results written with them are read under the new names.
RENAMED_MODES = {"full": "whole_chunk", "half": "half_chunk", "single": "single_step"}
#: The training regimes of the ``ablations`` axis: all trained, the vision encoder or the word embeddings
#: frozen, and the backbone's architecture trained from random weights.
ABLATIONS = ("full", "freeze_vision", "freeze_embeddings", "from_scratch")
#: The baseline's name: the policy that always outputs zero actions, evaluated on the same episodes; a
#: backbone name in run paths and results (runs/<BASELINE>/<benchmark>/none/...) and ``evaluate --policy``.
BASELINE = "zero-action"
#: ``resources.<rule>``: a workflow rule's resources, keyed by the rule's name (the rules that submit jobs).
RESOURCE_RULES = ("make_tiny_backbone", "backbone_report", "data", "train", "sft", "vqa_data", "vqa_eval",
                  "evaluate", "evaluate_baseline", "aggregate", "published")
#: A rule that runs the same kind of job as another reads that rule's resources for a key its own entry lacks.
RESOURCE_FALLBACK = {"backbone_report": "make_tiny_backbone", "evaluate_baseline": "evaluate",
                     "published": "aggregate"}
#: The names resource keys had before they were named as their rules: a config that still uses one stops.
RENAMED_RESOURCES = {"collect_data": "data", "make_backbone": "make_tiny_backbone"}
#: default ``evaluation.max_failed_share``: episodes of a job that may raise before the job stops
MAX_FAILED_SHARE = 0.1


class InputError(ValueError):
    """Input a stage stops at (a config, a data or results file): the message names the key or the file.
    The command line prints it as one line ``error: ...`` (``vlm4vla_core.__main__``)."""


class ConfigError(InputError):
    """A study config that cannot run; the message names the key."""


def _schema() -> dict:
    import yaml

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
    check_mode_names(config)
    check_resource_names(config)
    schema = _schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(_explain(e, schema) for e in errors))

    sets = config.get("vqa_sets") or {}
    all_variants = _variants(config)
    for section in VARIANT_SECTIONS:
        for name, entry in (config.get(section) or {}).items():
            if section == "embodied_sft" and name in (config.get("pretraining") or {}):
                raise ConfigError(f"key 'embodied_sft.{name}': the name is already a key of 'pretraining'")
            if entry["base"] not in config["backbones"] and entry["base"] not in all_variants:
                raise ConfigError(f"key '{section}.{name}.base': {entry['base']!r} is not a key of 'backbones' "
                                  "or a pretraining variant")
            if not entry.get("source") and not entry.get("data_path") and entry["dataset"] not in sets:
                raise ConfigError(f"key '{section}.{name}': no data to fine-tune on: give 'data_path', a 'source' "
                                  f"(a published checkpoint), or a 'dataset' that is a key of 'vqa_sets'")
            if not entry.get("source") and not entry.get("data_path") and \
                    (sets.get(entry["dataset"]) or {}).get("framework") == "lmms-eval":
                raise ConfigError(f"key '{section}.{name}.dataset': {entry['dataset']!r} is an lmms-eval set, which "
                                  "has no training split: give 'data_path'")
            if name in config["backbones"] and config["backbones"][name].get("sft") != entry["base"]:
                raise ConfigError(f"key '{section}.{name}': the name is already a key of 'backbones'")
            root, seen = name, {name}
            while root in all_variants:
                root = all_variants[root]["base"]
                if root in seen:
                    raise ConfigError(f"key '{section}.{name}.base': the bases form a cycle ({' -> '.join(seen)})")
                seen.add(root)
    for name, entry in sets.items():
        lmms_keys = [k for k in ("task", "data_path", "python") if k in entry]
        if entry.get("framework") == "lmms-eval":
            if not entry.get("task"):
                raise ConfigError(f"key 'vqa_sets.{name}': framework lmms-eval needs 'task' (an lmms-eval task, "
                                  "e.g. mmmu_val)")
            own = [k for k in ("generate", "benchmark", "heldout_path", "max_new_tokens", "train_episodes_per_task",
                               "heldout_episodes_per_task", "frames_per_episode") if k in entry]
            if own:
                raise ConfigError(f"key 'vqa_sets.{name}.{own[0]}': not a key of a framework lmms-eval set (the "
                                  "task's own data, prompt and answer length are used)")
            continue
        if lmms_keys:
            raise ConfigError(f"key 'vqa_sets.{name}.{lmms_keys[0]}': only a set with framework: lmms-eval has it")
        if entry.get("generate") == "shapes":
            missing = [k for k in ("train_scenes", "heldout_scenes") if k not in entry]
            if missing:
                raise ConfigError(f"missing key 'vqa_sets.{name}.{missing[0]}' (generate: shapes)")
        elif not entry.get("generate") and not entry.get("heldout_path"):
            # a benchmark plug-in's generator and the benchmark it names: vlm4vla_core.study
            raise ConfigError(f"key 'vqa_sets.{name}': give 'heldout_path' (or 'generate': 'shapes' or a "
                              "benchmark's generator)")
    evaluation = config["evaluation"]
    if evaluation["mode_selection"] not in ("best", *evaluation["modes"]):
        raise ConfigError(f"key 'evaluation.mode_selection': {evaluation['mode_selection']!r} is not one of "
                          f"evaluation.modes {evaluation['modes']} (or 'best')")
    return config


def load_config(path: str | Path) -> dict:
    """Read and validate a study config file."""
    import yaml

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
    loader_workers: int = 0  # DataLoader processes decoding and encoding frames (0: in the training process)
    gradient_checkpointing: bool = False
    global_batch: int = 0  # samples per optimizer step over all processes (0: micro_batch x grad_accum x world)

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_batch(settings: TrainSettings, world: int) -> TrainSettings:
    """The settings of a run on ``world`` processes: with ``global_batch`` set, the gradient accumulation
    that keeps it (global = micro_batch x grad_accum x world), or a ConfigError saying what to change."""
    from dataclasses import replace

    if not settings.global_batch:
        return settings
    per_step = settings.micro_batch * world
    if settings.global_batch % per_step:
        raise ConfigError(
            f"global batch {settings.global_batch} is not micro_batch {settings.micro_batch} x grad_accum x "
            f"{world} processes for any whole grad_accum: change training.micro_batch or the job's nodes x gpus "
            f"(resources.train) so that micro_batch x processes divides {settings.global_batch}")
    return replace(settings, grad_accum=settings.global_batch // per_step)


def check_mode_names(config: dict) -> None:
    """Stop at an execution mode under its old name (``evaluation.modes``, ``evaluation.mode_selection``,
    ``benchmarks.<name>.modes`` / ``.mode_selection``), naming the key and the new name."""
    places = []
    evaluation = config.get("evaluation")
    if isinstance(evaluation, dict):
        places += [("evaluation", evaluation)]
    benches = config.get("benchmarks")
    for name, entry in (benches.items() if isinstance(benches, dict) else ()):
        if isinstance(entry, dict):
            places += [(f"benchmarks.{name}", entry)]
    wrong = []
    for where, section in places:
        modes = section.get("modes")
        for i, mode in enumerate(modes if isinstance(modes, list) else []):
            if isinstance(mode, str) and mode in RENAMED_MODES:
                wrong.append(f"key '{where}.modes' (item {i}): execution mode {mode!r} is now called "
                             f"{RENAMED_MODES[mode]!r}")
        rule = section.get("mode_selection")
        if isinstance(rule, str) and rule in RENAMED_MODES:
            wrong.append(f"key '{where}.mode_selection': execution mode {rule!r} is now called {RENAMED_MODES[rule]!r}")
    if wrong:
        raise ConfigError("; ".join(wrong) + f" (the execution modes: {', '.join(MODES)}; the training regime "
                          "'full' under 'ablations' keeps its name)")


def check_resource_names(config: dict) -> None:
    """Stop at a key of ``resources`` under its old name, naming the key and its new name (the rule's)."""
    section = config.get("resources")
    old = [k for k in (section if isinstance(section, dict) else ()) if k in RENAMED_RESOURCES]
    if old:
        raise ConfigError("; ".join(f"key 'resources.{k}' is now called 'resources.{RENAMED_RESOURCES[k]}' (the "
                                    "rule's name)" for k in old) + f" (the rules: {', '.join(RESOURCE_RULES)})")


def renamed_modes(record: dict) -> dict:
    """An evaluation record (a run's eval.json or a shard) with execution modes of an earlier version under
    their new names (``modes`` keys, ``reported_mode``, ``mode_selection``, ``selection``); a record with the
    current names comes back unchanged. Raises ValueError when a mode is there under both names."""
    modes = record.get("modes")
    if not isinstance(modes, dict) or not any(m in RENAMED_MODES for m in modes):
        return record
    clash = [m for m in modes if m in RENAMED_MODES and RENAMED_MODES[m] in modes]
    if clash:
        raise ValueError(f"modes {clash} are there under their old and their new names "
                         f"({', '.join(RENAMED_MODES[m] for m in clash)})")

    def new(mode):
        return RENAMED_MODES.get(mode, mode) if isinstance(mode, str) else mode

    out = dict(record, modes={new(m): v for m, v in modes.items()})
    for key in ("reported_mode", "mode_selection"):
        if key in out:
            out[key] = new(out[key])
    if isinstance(out.get("selection"), dict):
        sel = dict(out["selection"])
        sel.update({k: new(sel[k]) for k in ("rule", "reported_mode") if k in sel})
        if isinstance(sel.get("heldout_modes"), dict):
            sel["heldout_modes"] = {k: new(v) for k, v in sel["heldout_modes"].items()}
        out["selection"] = sel
    return out


def execute_steps(mode: str, chunk: int) -> int:
    """Steps executed before re-planning: the whole chunk, half of it, or one."""
    if mode not in MODES:
        renamed = f"; {mode!r} is now called {RENAMED_MODES[mode]!r}" if mode in RENAMED_MODES else ""
        raise ValueError(f"unknown execution mode {mode!r} (choose from {', '.join(MODES)}{renamed})")
    return {"whole_chunk": chunk, "half_chunk": max(1, chunk // 2), "single_step": 1}[mode]


def select_mode(success: dict[str, float], rule: str) -> str:
    """The reported mode of one run: a fixed mode name, or ``best``, the paper's rule (the mode with
    the highest success of this checkpoint; ties go to fewer re-plans, i.e. whole_chunk > half_chunk > single_step)."""
    if rule != "best":
        if rule not in success:
            raise ValueError(f"mode_selection {rule!r} names a mode that was not evaluated ({', '.join(success)})")
        return rule
    order = [m for m in MODES if m in success]
    return max(order, key=lambda m: (success[m], -order.index(m)))


def _variants(config: dict) -> dict[str, dict]:
    """Every fine-tuned variant of a config dict (``pretraining`` then ``embodied_sft`` entries), by name."""
    return {name: entry for section in VARIANT_SECTIONS for name, entry in (config.get(section) or {}).items()}


def held_out_values(values_by_mode: dict[str, "np.ndarray"]) -> tuple["np.ndarray", list[str]]:
    """Per-episode values of the ``best`` rule without its selection bias (two-fold cross-fitting): the
    episodes at even positions take the mode that is best on the odd ones and the odd ones the mode that is
    best on the even ones, so no episode scores the mode it helped choose. ``values_by_mode``: each mode's
    per-episode values over the same episodes in the same order. Returns the values and the two chosen modes
    (for the even, for the odd positions)."""
    import numpy as np

    values_by_mode = {m: np.asarray(v, dtype=float) for m, v in values_by_mode.items()}
    n = len(next(iter(values_by_mode.values())))
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    for_even = select_mode({m: float(v[odd].mean()) if len(odd) else 0.0 for m, v in values_by_mode.items()}, "best")
    for_odd = select_mode({m: float(v[even].mean()) for m, v in values_by_mode.items()}, "best")
    out = np.empty(n)
    out[even], out[odd] = values_by_mode[for_even][even], values_by_mode[for_odd][odd]
    return out, [for_even, for_odd]


def _copy(value) -> dict:
    """A copy of a mapping of the config (absent: empty), so that the view never changes the dict it came from."""
    return copy.deepcopy(dict(value or {}))


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


def _nothing() -> Mapping:
    """An absent mapping of a section: empty and read-only."""
    return MappingProxyType({})


def _typed(cls, values: Mapping, **extra):
    """A section's dataclass from its dict entry: the keys it declares (absent ones take their defaults), a
    mapping among them as a read-only copy."""
    names = {f.name for f in fields(cls)} - set(extra)
    return cls(**{k: _frozen(_copy(v)) if isinstance(v, Mapping) else copy.deepcopy(v)
                  for k, v in values.items() if k in names}, **extra)


@dataclass(frozen=True)
class Backbone:
    """``backbones.<name>``: a VLM of the study (a pretraining or embodied-SFT variant once
    ``Study.with_sft_variants`` has added it: then ``sft`` names its base)."""

    name: str
    family: str
    source: str
    params_b: float | None = None
    vqa: Mapping | None = None  # {score, source[, n]} or {published}
    training: Mapping = field(default_factory=_nothing)  # overrides of the study's training defaults
    train_resources: Mapping = field(default_factory=_nothing)  # overrides of resources.train
    description: str | None = None
    sft: str | None = None
    ablations: tuple[str, ...] | None = None  # the study's ablations it runs (None: all)


@dataclass(frozen=True)
class BenchmarkEntry:
    """``benchmarks.<name>``: the keys common to every kind, typed, and ``entry``, the whole entry (a
    copy) with the keys of the kind's own plug-in, which reads them (``vlm4vla_core.benchmarks``)."""

    name: str
    kind: str
    chunk: int
    entry: Mapping
    image_size: int | None = None
    data_path: str | None = None
    training: Mapping = field(default_factory=_nothing)  # overrides of the study's training defaults
    eval_shards: int = 1
    eval_workers: int | str = 1  # a count, or "auto" (the evaluation sizes its pool)
    eval_batch: int | None = None
    simulator_python: str | None = None
    modes: tuple[str, ...] | None = None
    mode_selection: str | None = None
    arm_range: str | None = None


@dataclass(frozen=True)
class Variant:
    """``pretraining.<name>`` or ``embodied_sft.<name>`` (``section``): a backbone fine-tuned by the SFT
    stage on a dataset (or a published fine-tuned checkpoint, ``source``)."""

    name: str
    section: str
    base: str
    dataset: str
    data_path: str | None = None
    source: str | None = None
    training: Mapping = field(default_factory=_nothing)  # overrides of the SFT run's training settings
    ablations: tuple[str, ...] | None = None  # VLA ablations it runs (None: full only)
    description: str | None = None


@dataclass(frozen=True)
class VqaSet:
    """``vqa_sets.<name>``: a held-out VQA set. Typed: where it comes from (a generator of ``generate`` and the
    ``benchmark`` whose scenes it uses, or ``framework: lmms-eval``); ``entry``, the whole entry (a copy), holds
    the keys of its generator or framework (scenes, task, paths), read by ``vlm4vla_core.vqa``."""

    name: str
    entry: Mapping
    generate: str | None = None
    benchmark: str | None = None
    framework: str | None = None


@dataclass(frozen=True)
class Policy:
    """``policy``: the action head and its loss."""

    head_hidden: int
    loss: str
    gripper_weight: float
    arm_norm: float
    head_layers: int = 2


@dataclass(frozen=True)
class Evaluation:
    """``evaluation``: the execution modes, the selection rule and the evaluation jobs' limits."""

    modes: tuple[str, ...]
    mode_selection: str
    baseline: bool = True
    max_failed_share: float = MAX_FAILED_SHARE
    videos_per_task: int = 1  # successful and failed episodes per task and job saved as videos


@dataclass(frozen=True)
class Cost:
    """``cost``: the assumptions of the cost plan (``plan-cost``); ``simulators`` and ``vqa`` per benchmark
    and per VQA set."""

    mfu: float | None = None
    inference_mfu: float | None = None
    simulators: Mapping = field(default_factory=_nothing)
    vqa: Mapping = field(default_factory=_nothing)


@dataclass(frozen=True)
class Study:
    """A study config as one typed, frozen object, built once from the validated dict (``from_dict``,
    ``load_study``). Sections are attributes; per-job settings are methods. Keys that depend on a plug-in
    or a generator stay mappings beside the typed common part: a benchmark's own keys (``BenchmarkEntry.entry``,
    read by its plug-in), a VQA set's (``VqaSet.entry``, read by ``vlm4vla_core.vqa``); a rule's resources are
    read through ``resource``.
    A section the dict lacks is None or empty (a partial dict: results read without a study's stages);
    ``raw`` is the dict itself, for the workflow's glue, the config hash and the plan digest."""

    raw: Mapping
    name: str | None
    seeds: tuple[int, ...] | None
    backbones: Mapping[str, Backbone]
    benchmarks: Mapping[str, BenchmarkEntry]
    ablations: tuple[str, ...] | None
    pretraining: Mapping[str, Variant]
    embodied_sft: Mapping[str, Variant]
    vqa_sets: Mapping[str, VqaSet]
    policy: Policy | None
    training: Mapping  # the training defaults of every job (TrainSettings' keys)
    evaluation: Evaluation | None
    resources: Mapping  # per workflow rule (RESOURCE_RULES); read through ``resource``
    cost: Cost | None
    claims: str | None

    @classmethod
    def from_dict(cls, config: Mapping) -> "Study":
        """The typed view of a config dict (validated by ``validate`` or the workflow's schema check)."""
        if isinstance(config, Study):
            return config
        if not isinstance(config, Mapping):
            raise ConfigError("the config must be a mapping of keys to values")

        def tuple_or_none(key):
            return tuple(config[key]) if config.get(key) is not None else None

        def variants_of(section):
            return _frozen({n: _typed(Variant, e, name=n, section=section,
                                      **({"ablations": tuple(e["ablations"])} if "ablations" in e else {}))
                            for n, e in (config.get(section) or {}).items()})

        backbones = {}
        for n, e in (config.get("backbones") or {}).items():
            e = e or {}
            backbones[n] = _typed(Backbone, dict(e, family=e.get("family"), source=e.get("source")), name=n,
                                  **({"ablations": tuple(e["ablations"])} if "ablations" in e else {}))
        benches = {}
        for n, e in (config.get("benchmarks") or {}).items():
            e = e or {}
            benches[n] = _typed(BenchmarkEntry, dict(e, kind=e.get("kind"), chunk=e.get("chunk")), name=n,
                                entry=_frozen(_copy(e)), **({"modes": tuple(e["modes"])} if e.get("modes") else {}))
        evaluation = config.get("evaluation")
        if evaluation is not None:
            evaluation = _typed(Evaluation, dict(evaluation, modes=tuple(evaluation.get("modes") or ()),
                                                 mode_selection=evaluation.get("mode_selection")))
        policy = config.get("policy")
        cost = config.get("cost")
        return cls(
            raw=config, name=config.get("study"), seeds=tuple_or_none("seeds"), backbones=_frozen(backbones),
            benchmarks=_frozen(benches), ablations=tuple_or_none("ablations"),
            pretraining=variants_of("pretraining"), embodied_sft=variants_of("embodied_sft"),
            vqa_sets=_frozen({n: _typed(VqaSet, e or {}, name=n, entry=_frozen(_copy(e)))
                              for n, e in (config.get("vqa_sets") or {}).items()}),
            policy=_typed(Policy, policy) if policy is not None else None, training=_frozen(_copy(config.get("training"))),
            evaluation=evaluation, resources=_frozen({r: _frozen(_copy(e)) for r, e in
                                                      (config.get("resources") or {}).items()}),
            cost=_typed(Cost, cost) if cost else None, claims=config.get("claims"))

    def variants(self) -> dict[str, Variant]:
        """Every fine-tuned variant of the study (``pretraining`` then ``embodied_sft`` entries), by name."""
        return {name: v for section in VARIANT_SECTIONS for name, v in getattr(self, section).items()}

    def root_backbone(self, name: str) -> str:
        """The backbone of ``backbones`` a variant (or a chain of variants) starts from; a backbone's own name."""
        chain = self.variants()
        while name in chain:
            name = chain[name].base
        return name

    def train_settings(self, backbone: str, benchmark: str) -> TrainSettings:
        """Training settings of one job: defaults < benchmark overrides < backbone overrides."""
        merged = dict(self.training)
        merged.update(self.benchmarks[benchmark].training)
        merged.update(self.backbones[backbone].training)
        return TrainSettings(**merged)

    def sft_settings(self, variant: str) -> TrainSettings:
        """Training settings of an SFT run: the training defaults < the root backbone's ``training``
        (precision, memory settings) < the variant's ``training``."""
        merged = dict(self.training)
        merged.update(self.backbones[self.root_backbone(variant)].training)
        merged.update(self.variants()[variant].training)
        return TrainSettings(**merged)

    def resource(self, rule: str, key: str, default: Any = None) -> Any:
        """``resources.<rule>.<key>``; where the rule's entry lacks the key, the entry of the rule it shares
        resources with (``RESOURCE_FALLBACK``), then ``default``."""
        if rule not in RESOURCE_RULES:
            raise KeyError(f"{rule!r} is not a rule with resources (one of {', '.join(RESOURCE_RULES)})")
        for name in (rule, RESOURCE_FALLBACK.get(rule)):
            if key in self.resources.get(name, {}):
                return self.resources[name][key]
        return default

    def train_resource(self, backbone: str, key: str, default: Any = None) -> Any:
        """A resource of a backbone's train jobs: ``backbones.<b>.train_resources`` over ``resources.train``."""
        entry = self.backbones.get(backbone)
        own = entry.train_resources if entry is not None else {}
        return own[key] if key in own else self.resource("train", key, default)

    def with_sft_variants(self) -> "Study":
        """The study with every pretraining and embodied-SFT variant added under ``backbones`` (idempotent):
        its root backbone's family, size and training settings, ``sft: <base>``, and ``source: sft`` (the SFT
        stage's checkpoint) or the variant's own published ``source``; its VLA jobs run the variant's
        ``ablations`` (default: full fine-tuning only, as the paper's variants). ``raw`` is the dict with them."""
        chain = self.variants()
        if not chain:
            return self
        out = dict(self.raw)
        out["backbones"] = dict(self.raw["backbones"])
        for name, entry in chain.items():
            if name in out["backbones"]:
                continue
            base = self.backbones[self.root_backbone(name)]
            added = dict(family=base.family, source=entry.source or "sft", sft=entry.base,
                         params_b=base.params_b, ablations=list(entry.ablations) if entry.ablations is not None else ["full"],
                         description=entry.description or f"{entry.base} fine-tuned on {entry.dataset}")
            if base.training:
                added["training"] = dict(base.training)
            out["backbones"][name] = added
        return Study.from_dict(out)

    def jobs(self) -> list[dict]:
        """Every (backbone, benchmark, ablation, seed) training job of the study; a backbone that lists its own
        ``ablations`` (an embodied-SFT variant) runs those of the study's that it names."""
        return [
            dict(backbone=b, benchmark=k, ablation=a, seed=s)
            for b, entry in self.backbones.items()
            for k in self.benchmarks
            for a in self.ablations if a in (entry.ablations if entry.ablations is not None else self.ablations)
            for s in self.seeds
        ]

    def image_size(self, default: int = 224) -> int:
        """The largest image size of the study's benchmarks: the size backbones are built, fine-tuned and
        asked VQA at."""
        return max(b.image_size or default for b in self.benchmarks.values())


def load_study(path: str | Path) -> Study:
    """Read and validate a study config file: its typed view."""
    return Study.from_dict(load_config(path))
