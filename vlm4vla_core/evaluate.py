"""Evaluation stage: closed-loop rollouts of one trained policy (or the zero-action baseline).

Each run is rolled out in every configured execution mode: the whole action
chunk, half of it, or a single step before re-planning. The reported mode
follows ``evaluation.mode_selection``: ``best`` is the paper's rule (the mode
with the highest success of this checkpoint; ties go to fewer re-plans, i.e.
full > half > single), a mode name fixes the mode in advance. Evaluation
episodes of training seed ``s`` are the benchmark's evaluation seeds from
offset ``eval_seed_offset + 1000 * s`` on: disjoint from the demonstrations'
seeds, different for every training seed, and the same for every backbone and
ablation, so runs are compared on identical episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlm4vla_core.config import MODES, ConfigError, RUNNABLE_BENCHMARKS, execute_steps, load_config

ZERO = "zero-action"


def episode_seeds(bench: dict, seed: int) -> list[int]:
    from vlm4vla_core.benchmarks.metaworld.env import eval_seeds

    return eval_seeds(bench["episodes_per_task"], offset=bench.get("eval_seed_offset", 0) + 1000 * seed)


def select_mode(modes: dict[str, dict], rule: str) -> str:
    """The reported mode of one run under ``rule`` (see module docstring)."""
    if rule != "best":
        if rule not in modes:
            raise ValueError(f"mode_selection {rule!r} names a mode that was not evaluated ({', '.join(modes)})")
        return rule
    rate = {m: sum(e["success"] for e in r["episodes"]) / max(1, len(r["episodes"])) for m, r in modes.items()}
    order = [m for m in MODES if m in modes]  # fewer re-plans first wins ties
    return max(order, key=lambda m: (rate[m], -order.index(m)))


def evaluate(config: dict, benchmark: str, seed: int, policy_fn, chunk: int, modes: list[str]) -> dict[str, dict]:
    """Roll out ``policy_fn`` in each mode; returns {mode: {execute_steps, episodes}}."""
    bench = config["benchmarks"][benchmark]
    if bench["kind"] not in RUNNABLE_BENCHMARKS:
        raise ConfigError(f"benchmark {benchmark!r} (kind {bench['kind']}) has no evaluator in this version")
    from vlm4vla_core.benchmarks.metaworld.rollout import rollout

    seeds = episode_seeds(bench, seed)
    out = {}
    for mode in modes:
        steps = execute_steps(mode, chunk)
        episodes = rollout(
            policy_fn,
            tasks=bench["tasks"],
            episode_seeds=seeds,
            execute_steps=steps,
            image_size=bench["image_size"],
            camera=bench["camera"],
            max_steps=bench["max_steps"],
            chunk_size=chunk,
        )
        out[mode] = dict(execute_steps=steps, episodes=episodes)
        ok = sum(e["success"] for e in episodes)
        print(f"{benchmark} seed {seed} mode {mode}: {ok}/{len(episodes)} successful", flush=True)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core evaluate", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--seed", type=int, required=True, help="training seed of the run (selects its evaluation episodes)")
    p.add_argument("--policy", required=True, help=f"a trained policy folder, or {ZERO!r} for the zero-action baseline")
    p.add_argument("--backbone", default=ZERO)
    p.add_argument("--ablation", default="none")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, help="result JSON")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.benchmark not in config["benchmarks"]:
            raise ConfigError(f"{args.config}: no {args.benchmark!r} under 'benchmarks'")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    import torch

    from vlm4vla_core.provenance import provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = config["benchmarks"][args.benchmark]
    chunk, family = bench["chunk"], None
    if args.policy == ZERO:
        from vlm4vla_core.benchmarks.metaworld.rollout import zero_policy

        policy_fn, modes, rule = zero_policy(chunk), ["full"], "full"
    else:
        from vlm4vla_core.policy import load_policy

        policy = load_policy(args.policy, device="cuda" if torch.cuda.is_available() else "cpu")
        if policy.cfg.chunk != chunk:
            print(f"error: {args.policy}: chunk {policy.cfg.chunk} differs from benchmarks.{args.benchmark}.chunk={chunk}",
                  file=sys.stderr)
            return 1
        policy_fn, family = policy.predict, policy.cfg.family
        modes, rule = config["evaluation"]["modes"], config["evaluation"]["mode_selection"]
    results = evaluate(config, args.benchmark, args.seed, policy_fn, chunk, modes)
    record = dict(
        study=config["study"],
        backbone=args.backbone,
        family=family,
        benchmark=args.benchmark,
        ablation=args.ablation,
        seed=args.seed,
        metric="success_rate",
        checkpoint=args.policy,
        modes=results,
        mode_selection=rule,
        reported_mode=select_mode(results, rule),
        provenance=provenance(config),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out)
    return 0
