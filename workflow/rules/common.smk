# Config validation, paths and helpers shared by every rule.
import hashlib
import inspect
import re
import json
import shutil
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vlm4vla_core import benchmarks
from vlm4vla_core.config import BASELINE, SCHEMA as CONFIG_SCHEMA, ConfigError, check_mode_names, check_resource_names, resolve_batch
from vlm4vla_core.study import check as check_config, report_head

try:
    check_mode_names(config)  # before the schema: an old mode name stops with its new name
    check_resource_names(config)  # and an old resources key with the rule's name
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}")
validate(config, str(CONFIG_SCHEMA))  # the package's own schema (vlm4vla_core/schemas/)
try:
    STUDY_VIEW = check_config(config)  # the typed view the package's functions take (vlm4vla_core.config.Study)
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}")
_dry = getattr(workflow, "dryrun", False) or getattr(getattr(workflow, "output_settings", None), "dryrun", False)
if _dry:  # the study's GPU-hours and core-hours (python -m vlm4vla_core plan-cost)
    from vlm4vla_core.plan_cost import dry_run_line

    _line = dry_run_line(STUDY_VIEW, " ".join(map(str, workflow.overwrite_configfiles or ["config.yaml"])))
    if _line:
        logger.info(_line)
# every embodied-SFT variant is a backbone of the study (its source: the SFT stage's checkpoint)
STUDY_VIEW = STUDY_VIEW.with_sft_variants()
config.update(STUDY_VIEW.raw)

# A dry run plans anywhere: with --sdm conda (the slurm profile) on a machine without conda, the
# rules' environments are not looked at (a real run still needs conda).
try:
    from snakemake.settings.types import DeploymentMethod

    _methods = workflow.deployment_settings.deployment_method
    if _dry and DeploymentMethod.CONDA in _methods and shutil.which("conda") is None:
        logger.warning("conda is not installed here: the dry run plans without the rules' conda environments")
        workflow.deployment_settings.deployment_method = frozenset(m for m in _methods if m != DeploymentMethod.CONDA)
except (AttributeError, ImportError):  # another Snakemake API: plan as before
    pass

STUDY = config["study"]
OUT = f"results/{STUDY}"
RUN = OUT + "/runs/{backbone}/{benchmark}/{ablation}/seed{seed}"

# The stages read the effective config (config files plus --config overrides) from one file,
# rewritten only when it changes so that an unchanged study stays up to date.
STUDY_CONFIG = Path(OUT) / "study_config.yaml"
# backbones are built, fine-tuned and asked VQA at the largest image size of the study's benchmarks
BACKBONE_IMAGE_SIZE = STUDY_VIEW.image_size()
_text = yaml.safe_dump(config, sort_keys=True)
if not STUDY_CONFIG.exists() or STUDY_CONFIG.read_text() != _text:
    STUDY_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    STUDY_CONFIG.write_text(_text)


def _regex(names):
    return "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))


wildcard_constraints:
    backbone=_regex(list(config["backbones"]) + [BASELINE]),
    benchmark=_regex(config["benchmarks"]),
    ablation=_regex(list(config["ablations"]) + ["none"]),
    seed=r"\d+",
    shard=r"\d+",
    vqaset=_regex(config.get("vqa_sets") or {"-": None}),


def digest(*parts):
    """Hash of the config sections a job depends on: a change re-runs the job."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def res(rule_name, key, default):
    """resources.<rule>.<key> (a key the rule's entry lacks: the rule it shares resources with)."""
    return STUDY_VIEW.resource(rule_name, key, default)


def train_res(backbone, key, default):
    """A resource of a backbone's train jobs: backbones.<b>.train_resources over resources.train."""
    return STUDY_VIEW.train_resource(backbone, key, default)


def train_layout(backbone, benchmark):
    """(nodes, processes per node) of a train job: one process per GPU, or training.num_processes without GPUs."""
    nodes, gpus = train_res(backbone, "nodes", 1), train_res(backbone, "gpus", 0)
    if gpus:
        return nodes, gpus
    return nodes, STUDY_VIEW.train_settings(backbone, benchmark).num_processes


def _check_global_batch():
    """Every train job keeps its global batch (training.global_batch) on its nodes x GPUs, before any job runs."""
    for b in config["backbones"]:
        for k in config["benchmarks"]:
            nodes, per_node = train_layout(b, k)
            try:
                resolve_batch(STUDY_VIEW.train_settings(b, k), nodes * per_node)
            except ConfigError as err:
                raise WorkflowError(f"invalid config: train job of backbone {b} on {k} ({nodes} nodes x {per_node}): {err}")


def _check_local_sources():
    """A backbone source that is a local path must exist where the DAG is planned (hub ids are checked by the job)."""
    for name, entry in config["backbones"].items():
        src = str(entry["source"])
        if src.startswith(("/", "./", "../", "~")) and not Path(src).expanduser().exists():
            raise WorkflowError(f"invalid config: key 'backbones.{name}.source': local path {src} does not exist")


# the synthetic dataset of a benchmark entry with fixture: synthetic (rule fixture); its data_path names it
FIXTURE = OUT + "/fixtures/{benchmark}"


def _check_fixtures():
    """An entry with fixture: synthetic reads its data_path from where the fixture rule writes it."""
    for name, entry in config["benchmarks"].items():
        want = FIXTURE.format(benchmark=name)
        if entry.get("fixture") == "synthetic" and entry.get("data_path") != want:
            raise WorkflowError(f"invalid config: key 'benchmarks.{name}.data_path' is {entry.get('data_path')!r}; "
                                f"with fixture: synthetic it must be {want!r} (where the fixture rule writes it)")


def fixture_of(wildcards):
    """The fixture a data job waits for (fixture: synthetic), else nothing."""
    return [FIXTURE.format(**wildcards)] if config["benchmarks"][wildcards.benchmark].get("fixture") else []


def job_times(log):
    """Where a job's wall time, memory and CPU time go (Snakemake's benchmark file), from its log's path:
    <root>/logs/<name>.log or <root>/<name>.log becomes <root>/benchmarks/<name>.tsv (root: results/<study>, or
    results/published for its rules)."""
    root, name = (OUT, log[len(OUT) + 1:]) if log.startswith(OUT + "/") else log.split("/logs/", 1)
    return f"{root}/benchmarks/{name.removeprefix('logs/').removesuffix('.log')}.tsv"


_check_global_batch()
_check_local_sources()
_check_fixtures()


def train_resources():
    """Resources of the train rule, per job (wildcards): nodes, GPUs per node as gres or gpu, the
    pre-timeout signal, and the layout the slurm executor needs to run one task per GPU."""
    out = dict(resources_of("train"))
    for key in ("mem_mb", "runtime"):
        out[key] = lambda wc, _k=key, _d=out[key]: train_res(wc.backbone, _k, _d)
    # resources.train.cpus are per node, shared by its tasks (one per GPU)
    out["cpus_per_task"] = lambda wc: max(1, train_res(wc.backbone, "cpus", 1) // train_layout(wc.backbone, wc.benchmark)[1])
    out["nodes"] = lambda wc: train_res(wc.backbone, "nodes", 1)
    if res("train", "gpus", 0) or any(b.get("train_resources", {}).get("gpus") for b in config["backbones"].values()):
        out.pop("gpu", None)  # per node, as GRES: --gpus would count GPUs over all nodes
        out["gres"] = lambda wc: train_res(wc.backbone, "gres", f"gpu:{train_res(wc.backbone, 'gpus', 0)}"
                                           if train_res(wc.backbone, "gpus", 0) else "")
    # 'mpi' present: the jobstep runs the rule's shell as is, and the launcher starts the one srun step
    # (of nodes x GPUs tasks); truthy only where there is more than one task per node, as the plugin asks
    out["mpi"] = lambda wc: "srun" if train_layout(wc.backbone, wc.benchmark)[1] > 1 else 0
    out["tasks_per_node"] = lambda wc: train_layout(wc.backbone, wc.benchmark)[1]
    signal_s = res("train", "signal_s", 600)
    extra = res("train", "slurm_extra", "")
    out["slurm_extra"] = (extra + f" --signal=USR1@{signal_s}").strip() if signal_s else extra
    if not out["slurm_extra"]:
        out.pop("slurm_extra")
    return out


def resources_of(rule_name):
    """Snakemake / slurm executor resources of a rule, from resources.<rule> of the study config."""
    out = dict(
        mem_mb=res(rule_name, "mem_mb", 4000),
        runtime=res(rule_name, "runtime", 60),
        cpus_per_task=res(rule_name, "cpus", 1),
    )
    if res(rule_name, "gpus", 0):
        out["gpu"] = res(rule_name, "gpus", 0)
    for key in ("slurm_partition", "slurm_extra"):
        if res(rule_name, key, None):
            out[key] = res(rule_name, key, None)
    return out


def source_of(backbone):
    """A local tiny checkpoint for source 'tiny', the SFT stage's checkpoint for source 'sft', else the hub id /
    folder from the config."""
    src = config["backbones"][backbone]["source"]
    if src == "tiny":
        return f"{OUT}/backbones/{backbone}/checkpoint"
    if src == "sft":
        return f"{OUT}/sft/{backbone}/checkpoint"
    return src


def backbone_source(wildcards):
    return source_of(wildcards.backbone)


def architecture_of(backbone):
    """The backbone whose architecture and published config a fine-tuned variant shares: its root base."""
    return STUDY_VIEW.root_backbone(backbone)


def local_inputs(backbone):
    """The checkpoint a job waits for when the workflow builds it (tiny or SFT), else nothing."""
    return [source_of(backbone)] if config["backbones"][backbone]["source"] in ("tiny", "sft") else []


def backbone_inputs(wildcards):
    return local_inputs(wildcards.backbone)


def plugin(benchmark):
    return benchmarks.get(config["benchmarks"][benchmark]["kind"])


def env_file(name):
    return f"../../envs/{name}"


def data_env(wildcards):
    return env_file(plugin(wildcards.benchmark).data_env)


def eval_env(wildcards):
    """The policy's side of an evaluation: with the simulator when it runs in process, else the training env."""
    bench = plugin(wildcards.benchmark)
    in_process = bench.runs_in_process(config["benchmarks"][wildcards.benchmark])
    return env_file(bench.sim_env if in_process else "vlm4vla.yaml")


def n_shards(benchmark):
    return config["benchmarks"][benchmark].get("eval_shards", 1)


def shard_files(run_pattern):
    """The shard results of one run, from its wildcards."""

    def files(wildcards):
        return expand(run_pattern + "/eval/shard{shard}.json", **wildcards, shard=range(n_shards(wildcards.benchmark)))

    return files


def memory_plan(wildcards):
    """The memory plan a train job waits for: real backbones on GPUs of a known model (resources.train.gpu_model)."""
    base = architecture_of(wildcards.backbone)  # an SFT variant has its base's architecture and settings
    if config["backbones"][base]["source"] == "tiny" or not res("train", "gpu_model", None):
        return []
    return [f"{OUT}/backbones/{base}/memory_{wildcards.benchmark}.json"]


def eval_files():
    files = [f"{RUN}/eval.json".format(**job) for job in STUDY_VIEW.jobs()]
    if config["evaluation"].get("baseline", True):
        files += [
            f"{OUT}/runs/{BASELINE}/{b}/none/seed{s}/eval.json" for b in config["benchmarks"] for s in config["seeds"]
        ]
    return files


def keep_signatures():
    """Give every callable of the rules (inputs, params, resources, threads, environments) its signature
    once: Snakemake otherwise inspects it again for every job it is applied to (a third of the planning
    time of a study of thousands of jobs)."""
    from snakemake.common import overwrite_function_params

    for rule in workflow.rules:
        for item in [*rule.input, *rule.params, *rule.resources.values(), rule.conda_env]:
            # an input function sits in its file object, a resource's in its evaluator
            func = getattr(getattr(item, "_file", None), "callable", None) or getattr(item, "_evaluator", None) \
                or getattr(item, "callable", None) or item
            if inspect.isfunction(func) and not hasattr(func, "_overwrite_params"):
                overwrite_function_params(func, inspect.signature(func).parameters)
