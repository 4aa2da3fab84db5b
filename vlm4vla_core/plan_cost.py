"""``python -m vlm4vla_core plan-cost``: GPU-hours and simulator core-hours of a study before it runs,
per rule, per backbone and in total, and what one more backbone adds.

Each backbone is built from its published config on the meta device (no weights) and reduced to the
numbers its FLOPs need (``flops_facts``). With s the sequence (image tokens + prompt), v the vision
patches, h / h_v the hidden sizes, L / L_v the layer counts, A the parameters a token runs through in
the language model (embeddings excluded; a mixture-of-experts layer counts its ``top_k`` of ``n``
experts) and V those of the vision tower and projector, one forward pass of one sample costs

    F = 2 A s + 4 L s^2 h + 2 V v + 4 L_v v^2 h_v + 2 H

FLOPs (a multiply-add is 2 FLOPs; the attention scores and their product with the values 4 s^2 h per
layer; H: the policy's ActionQuery and head). Training costs 3 F per sample (the backward pass twice
the forward), 4 F with gradient checkpointing (the forward runs again), and a frozen vision tower
only its forward. A job's GPU-hours are its samples (``max_steps`` x the global batch) x that, over
the GPU's peak FLOP/s x the MFU the config assumes (``cost.mfu``).

An evaluation run rolls out every episode of the benchmark's protocol once per execution mode, each
to its step limit (a failed episode's length: the upper bound). The simulator's core-seconds are
``env steps x step_s + policy calls x render_s`` (``cost.simulators``: one core's measured seconds
per step, and per rendered frame, which the policy's re-plans ask for); the policy's are its calls x
F over the evaluation GPU's peak x ``cost.inference_mfu``. A shard job holds its GPUs for the longer
of the two (the simulator spread over ``eval_workers`` processes). A VQA job answers
``cost.vqa.<set>.samples`` questions, each a forward over the prompt and its generated tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from vlm4vla_core.config import Cost, Study

#: Dense tensor-core peak TFLOP/s per GPU for bf16/fp16, and for fp32 without TF32 (PyTorch's default for
#: matmuls). NVIDIA data sheets: A100 (312 / 19.5), H100 SXM (989 / 67), H200 (989 / 67), L40S (362 / 91.6),
#: A10 (125 / 31.2).
PEAK_TFLOPS = {"A100-40GB": (312, 19.5), "A100-80GB": (312, 19.5), "H100-80GB": (989, 67), "H200-141GB": (989, 67),
               "L40S-48GB": (362, 91.6), "A10-24GB": (125, 31.2)}
HOUR = 3600.0


def peak_flops(gpu: str, precision: str, key: str) -> float:
    from vlm4vla_core.config import ConfigError

    if gpu not in PEAK_TFLOPS:
        raise ConfigError(f"key '{key}': unknown GPU {gpu!r} (known: {', '.join(PEAK_TFLOPS)})")
    return PEAK_TFLOPS[gpu][1 if precision == "fp32" else 0] * 1e12


def flops_facts(adapter, vlm, image_size: int) -> dict:
    """What ``forward_flops`` needs of a backbone (built on the meta device): ``architecture_facts`` plus
    the parameters a token runs through (experts of a mixture-of-experts counted at top_k / n)."""
    from vlm4vla_core.backbones.memory import architecture_facts

    facts = architecture_facts(adapter, vlm, image_size)
    text = vlm.config.get_text_config()
    n_experts = int(getattr(text, "num_experts", 0) or getattr(text, "n_routed_experts", 0) or 0)
    top_k = int(getattr(text, "num_experts_per_tok", 0) or 0)
    experts = sum(p.numel() for name, p in adapter.backbone(vlm).named_parameters() if ".experts." in f".{name}.")
    idle = experts * (1 - top_k / n_experts) if n_experts and top_k else 0
    text_params = facts["backbone_params"] - facts["vision_params"] - facts["embedding_params"]
    return dict(text_active=int(text_params - idle), vision_params=facts["vision_params"], hidden=facts["hidden"],
                text_layers=facts["text_layers"], vision_hidden=facts["vision_hidden"],
                vision_layers=facts["vision_layers"], image_tokens=facts["image_tokens"],
                vision_patches=facts["vision_patches"])


def forward_flops(f: dict, sequence: int, head: int = 0) -> tuple[float, float]:
    """(language model + head, vision tower) FLOPs of one forward pass of one sample."""
    text = 2 * f["text_active"] * sequence + 4 * f["text_layers"] * sequence**2 * f["hidden"] + 2 * head
    v = f["vision_patches"]
    vision = 2 * f["vision_params"] * v + 4 * f["vision_layers"] * v**2 * f["vision_hidden"]
    return float(text), float(vision)


def train_flops(f: dict, sequence: int, head: int, ablation: str, checkpointing: bool) -> float:
    """FLOPs of one training sample: forward + backward (+ the recomputed forward)."""
    text, vision = forward_flops(f, sequence, head)
    passes = 4 if checkpointing else 3
    return passes * text + (1 if ablation == "freeze_vision" else passes) * vision


def _cost(config: Study) -> Cost:
    from vlm4vla_core.config import ConfigError

    cost = config.cost
    if not cost:
        raise ConfigError("missing key 'cost' (mfu, inference_mfu, simulators, vqa): the assumptions of plan-cost")
    for key in ("mfu", "inference_mfu"):
        if getattr(cost, key) is None:
            raise ConfigError(f"missing key 'cost.{key}'")
    return cost


def step_budget(config: Study, benchmark: str) -> dict:
    """Environment steps, policy calls and rendered frames of one evaluation run of ``benchmark`` (all
    its episodes, every execution mode), each episode to its step limit."""
    from vlm4vla_core import benchmarks
    from vlm4vla_core.config import execute_steps

    bench, entry = benchmarks.of(config, benchmark)
    episodes = bench.episodes(entry, 0)
    env_steps = calls = 0
    for mode in config.evaluation.modes:
        execute = execute_steps(mode, entry["chunk"])
        for episode in episodes:
            b = bench.step_budget(entry, episode)
            env_steps += b["env_steps"]
            per_segment = b["policy_steps"] / b["segments"]
            calls += b["segments"] * math.ceil(per_segment / execute)
    return dict(episodes=len(episodes), modes=len(config.evaluation.modes), env_steps=env_steps, calls=calls)


def plan_study(config: Study, facts: dict[str, dict]) -> dict:
    """The study's cost from the FLOPs facts of each backbone's architecture (``facts[backbone]``; an
    embodied-SFT variant may be given by its base). Returns rows (rule, backbone, jobs, gpu_hours,
    core_hours) and their totals."""
    from vlm4vla_core.backbones.memory import PROMPT_TEXT_TOKENS, head_params
    from vlm4vla_core import benchmarks
    from vlm4vla_core.config import BASELINE, ConfigError, resolve_batch

    config = config.with_sft_variants()
    cost = _cost(config)
    pol = config.policy

    def facts_of(backbone):
        for name in (backbone, config.root_backbone(backbone)):  # a variant has its root backbone's architecture
            if name in facts:
                return facts[name]
        raise ConfigError(f"backbone {backbone!r}: no architecture facts (a tiny backbone has no published size)")

    rows = defaultdict(lambda: dict(jobs=0, gpu_hours=0.0, core_hours=0.0))
    train_gpu = config.resource("train", "gpu_model")
    for job in config.jobs():
        b, k = job["backbone"], job["benchmark"]
        f = facts_of(b)
        gpu = config.train_resource(b, "gpu_model")
        nodes = config.train_resource(b, "nodes", 1)
        per_node = config.train_resource(b, "gpus", 0)
        settings = config.train_settings(b, k)
        world = nodes * per_node if per_node else settings.num_processes
        settings = resolve_batch(settings, world)
        samples = settings.max_steps * settings.micro_batch * settings.grad_accum * world
        bench = config.benchmarks[k]
        head = head_params(f["hidden"], bench.chunk, benchmarks.get(bench.kind).action_dim, pol.head_hidden,
                           pol.head_layers)
        per_sample = train_flops(f, f["image_tokens"] + PROMPT_TEXT_TOKENS, head, job["ablation"],
                                 settings.gradient_checkpointing)
        peak = peak_flops(gpu, settings.precision, "resources.train.gpu_model")
        row = rows[("train", b)]
        row["jobs"] += 1
        row["gpu_hours"] += samples * per_sample / (peak * cost.mfu) / HOUR

    eval_gpu = config.resource("evaluate", "gpu_model", train_gpu)
    eval_gpus = int(config.resource("evaluate", "gpus", 0) or 0)
    sims = dict(cost.simulators)
    budgets = {k: step_budget(config, k) for k in config.benchmarks}
    runs = [(j["backbone"], j["benchmark"]) for j in config.jobs()]
    if config.evaluation.baseline:
        runs += [(None, k) for k in config.benchmarks for _ in config.seeds]
    for b, k in runs:
        bench = config.benchmarks[k]
        if k not in sims:
            raise ConfigError(f"missing key 'cost.simulators.{k}': one core's seconds per step (step_s) and per "
                              "rendered frame (render_s) of the benchmark's simulator")
        sim, budget = sims[k], budgets[k]
        core_s = budget["env_steps"] * sim["step_s"] + budget["calls"] * sim.get("render_s", 0.0)
        policy_s = 0.0
        if b is not None:
            f = facts_of(b)
            head = head_params(f["hidden"], bench.chunk, benchmarks.get(bench.kind).action_dim,
                               pol.head_hidden, pol.head_layers)
            precision = config.train_settings(b, k).precision
            flops = sum(forward_flops(f, f["image_tokens"] + PROMPT_TEXT_TOKENS, head))
            policy_s = budget["calls"] * flops / (peak_flops(eval_gpu, precision, "resources.evaluate.gpu_model")
                                                  * cost.inference_mfu)
        shards = int(bench.eval_shards)
        workers = bench.eval_workers  # auto: at most the job's cores
        workers = int(config.resource("evaluate", "cpus", 1) if workers == "auto" else workers)
        wall_s = max(core_s / workers, policy_s)  # summed over the run's shards
        row = rows[("evaluate" if b is not None else "evaluate_baseline", b or BASELINE)]
        row["jobs"] += shards
        row["core_hours"] += core_s / HOUR
        row["gpu_hours"] += wall_s * eval_gpus / HOUR

    from vlm4vla_core.vqa import lmms

    vqa_cost = dict(cost.vqa)
    vqa_gpu = config.resource("vqa_eval", "gpu_model", train_gpu)
    for b, entry in config.backbones.items():
        for name, vset in config.vqa_sets.items():
            if not lmms.measures(vset.entry, entry.family):
                continue
            if name not in vqa_cost:
                raise ConfigError(f"missing key 'cost.vqa.{name}': the set's samples (and new_tokens) per backbone")
            f = facts_of(b)
            sequence = f["image_tokens"] + PROMPT_TEXT_TOKENS + int(vqa_cost[name].get("new_tokens", 0))
            flops = vqa_cost[name]["samples"] * sum(forward_flops(f, sequence))
            precision = config.train_settings(b, next(iter(config.benchmarks))).precision
            row = rows[("vqa_eval", b)]
            row["jobs"] += 1
            row["gpu_hours"] += flops / (peak_flops(vqa_gpu, precision, "resources.vqa_eval.gpu_model")
                                         * cost.inference_mfu) / HOUR

    table = [dict(rule=r, backbone=b, **v) for (r, b), v in rows.items()]
    totals = dict(jobs=sum(r["jobs"] for r in table), gpu_hours=sum(r["gpu_hours"] for r in table),
                  core_hours=sum(r["core_hours"] for r in table))
    by_rule = defaultdict(lambda: dict(jobs=0, gpu_hours=0.0, core_hours=0.0))
    by_backbone = defaultdict(lambda: dict(jobs=0, gpu_hours=0.0, core_hours=0.0))
    for r in table:
        for agg, key in ((by_rule, r["rule"]), (by_backbone, r["backbone"])):
            for x in ("jobs", "gpu_hours", "core_hours"):
                agg[key][x] += r[x]
    # one more backbone: as one of the study's own (embodied-SFT variants, with their fewer ablations, aside)
    per_backbone = [v["gpu_hours"] for k, v in by_backbone.items()
                    if k in config.backbones and not config.backbones[k].sft]
    added = dict(min=min(per_backbone), max=max(per_backbone), mean=sum(per_backbone) / len(per_backbone)) \
        if per_backbone else {}
    return dict(rows=table, by_rule=dict(by_rule), by_backbone=dict(by_backbone), total=totals,
                one_more_backbone=added, budgets=budgets,
                assumptions=dict(mfu=cost.mfu, inference_mfu=cost.inference_mfu, train_gpu=train_gpu,
                                 eval_gpu=eval_gpu, vqa_gpu=vqa_gpu, simulators=sims, vqa=vqa_cost,
                                 not_counted="the SFT stage (its data size is read when it runs), data and "
                                             "aggregation jobs (CPU)"))


def architecture_table(config: Study) -> dict[str, dict]:
    """``flops_facts`` of every base backbone of a study, each built on the meta device."""
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.card import meta_model

    size = config.image_size()
    out = {}
    for name, entry in config.backbones.items():
        if entry.source in ("tiny", "sft"):
            continue
        adapter = get_adapter(entry.family)
        out[name] = flops_facts(adapter, meta_model(adapter, entry.source), size)
    return out


def describe(p: dict) -> str:
    a = p["assumptions"]
    lines = [f"{'rule':<18} {'backbone':<28} {'jobs':>6} {'GPU-hours':>11} {'core-hours':>11}"]
    for r in sorted(p["rows"], key=lambda r: (r["rule"], r["backbone"])):
        lines.append(f"{r['rule']:<18} {r['backbone']:<28} {r['jobs']:>6} {r['gpu_hours']:>11,.1f} "
                     f"{r['core_hours']:>11,.0f}")
    lines.append("")
    for backbone, v in sorted(p["by_backbone"].items()):
        lines.append(f"{'all rules':<18} {backbone:<28} {v['jobs']:>6} {v['gpu_hours']:>11,.1f} {v['core_hours']:>11,.0f}")
    lines.append("")
    for rule, v in sorted(p["by_rule"].items()):
        lines.append(f"{'all ' + rule:<47} {v['jobs']:>6} {v['gpu_hours']:>11,.1f} {v['core_hours']:>11,.0f}")
    t = p["total"]
    lines.append(f"{'total':<47} {t['jobs']:>6} {t['gpu_hours']:>11,.1f} {t['core_hours']:>11,.0f}")
    if p["one_more_backbone"]:
        o = p["one_more_backbone"]
        lines.append(f"one more backbone: {o['min']:,.0f} to {o['max']:,.0f} GPU-hours (mean {o['mean']:,.0f}), as "
                     "one of this study's base backbones (all its jobs)")
    lines.append(f"assumptions: training MFU {a['mfu']}, inference MFU {a['inference_mfu']}; GPUs: train "
                 f"{a['train_gpu']}, evaluate {a['eval_gpu']}, VQA {a['vqa_gpu']}; every episode to its step "
                 f"limit; not counted: {a['not_counted']}")
    return "\n".join(lines)


def summary_line(p: dict) -> str:
    t = p["total"]
    return (f"cost plan: {t['gpu_hours']:,.0f} GPU-hours and {t['core_hours']:,.0f} simulator core-hours "
            f"(training MFU {p['assumptions']['mfu']}; python -m vlm4vla_core plan-cost)")


def config_digest(config: Study) -> str:
    """The study config a plan was made for (the dict as read from its file, before the SFT variants are added)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_path(config: Study) -> Path:
    """Where ``plan-cost`` keeps a study's plan for the dry run to show."""
    return Path("results") / config.name / "cost_plan.json"


def dry_run_line(config: Study, config_file: str = "CONFIG") -> str:
    """The dry run's line: the saved plan's totals when it was made for this config, else how to make it
    (the plan builds every backbone on the meta device, too slow for every dry run); empty for a study
    without ``cost`` assumptions."""
    import json

    if not config.cost:
        return ""

    path = plan_path(config)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if saved and saved.get("config_digest") == config_digest(config):
        return summary_line(saved)
    state = "is for another config" if saved else "is not made yet"
    return f"cost plan: {state}; python -m vlm4vla_core plan-cost --config {config_file} writes {path}"


def main(argv: list[str] | None = None) -> int:
    import warnings

    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError
    from vlm4vla_core.io import write_json

    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core plan-cost", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", type=Path, help="plan JSON to write (default: results/<study>/cost_plan.json, "
                                                 "whose totals the dry run shows)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        config = study.load(args.config)
        result = plan_study(config, architecture_table(config))
    except (ConfigError, ValueError, OSError) as err:
        print(f"plan-cost: {err}", file=sys.stderr)
        return 2
    print(describe(result))
    write_json(args.out or plan_path(config), dict(result, config_digest=config_digest(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
