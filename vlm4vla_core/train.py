"""Training stage: one (backbone, benchmark, ablation, seed) VLA job under DeepSpeed.

Runs as one process (``python -m vlm4vla_core train ...``) or N processes under
a standard launcher (``torchrun --nproc_per_node N -m vlm4vla_core train ...``
or ``deepspeed``); on CPU with ``DS_ACCELERATOR=cpu`` (gloo), on GPUs unchanged.

The recipe: the benchmark's training set (``vlm4vla_core.episodes``), streamed
through DataLoader workers that decode and encode the frames with the backbone's
processor; the shared VLA policy and its loss; the exported ``policy/`` folder.
The run machinery (resume, preemption, metrics) is ``vlm4vla_core.training``.
Batches are a pure function of (seed, step, rank), so a run restarted from its
latest checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from vlm4vla_core.training import PREEMPTED, NonFiniteLoss, TrainingRun, install_stop_signals

POLICY_DIR = "policy"


def fingerprint(policy_cfg, settings, data_dir: Path, seed: int, world: int) -> str:
    """Hash of everything that decides a run's weights at a given step (not its length or logging)."""
    keep = {k: v for k, v in settings.as_dict().items()
            if k not in ("max_steps", "checkpoint_every", "log_every", "num_threads", "loader_workers",
                         "gradient_checkpointing")}
    stats = (data_dir / "stats.json").read_bytes()
    blob = json.dumps([asdict(policy_cfg), keep, seed, world, hashlib.sha256(stats).hexdigest()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(policy_cfg, settings, data_dir: Path, run_dir: Path, seed: int, vlm=None, processor=None,
          stop_after: int | None = None) -> Path | None:
    """Train and export ``run_dir/policy``. Returns its path (None when stopped early for preemption)."""
    import torch

    from vlm4vla_core.episodes import TrainStream
    from vlm4vla_core.episodes.source import TrainingSet
    from vlm4vla_core.policy import VLAPolicy, save_policy
    from vlm4vla_core.training import init_distributed_env

    from vlm4vla_core.config import resolve_batch

    init_distributed_env()
    world = int(os.environ["WORLD_SIZE"])
    settings = resolve_batch(settings, world)  # the global batch whatever the process count, or a clear error
    data = TrainingSet(data_dir)
    if data.action_dim != policy_cfg.action_dim:
        raise ValueError(f"{data_dir}: actions have {data.action_dim} dimensions, the policy {policy_cfg.action_dim}")
    torch.manual_seed(seed)
    if settings.zero_stage == 3:  # every rank reads only its own shard of the weights (zero.Init)
        from transformers.integrations import HfDeepSpeedConfig

        from vlm4vla_core.training import deepspeed_config

        _keep_alive = HfDeepSpeedConfig(deepspeed_config(settings, world))  # noqa: F841  (read while loading)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision, torch.float32)
    policy = VLAPolicy(policy_cfg, vlm=vlm, processor=processor, dtype=dtype)
    if settings.gradient_checkpointing:
        policy.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    run = TrainingRun(policy, settings, run_dir, fingerprint(policy_cfg, settings, data_dir, seed, world), stop_after)
    counts = policy.parameter_counts()
    if run.rank == 0:
        print(f"parameters: total {counts['total']:,}, trainable {counts['trainable']:,}, "
              f"added {counts['added']:,} ({100 * counts['added_share']:.3f}% of the backbone); "
              f"training set: {data.num_frames:,} frames", flush=True)
        (run_dir / "parameters.json").write_text(json.dumps(counts, indent=2))

    half = torch.bfloat16 if run.engine.bfloat16_enabled() else torch.float16 if run.engine.fp16_enabled() else None

    def batches(first: int):
        stream = TrainStream(data, policy_cfg.chunk, settings.micro_batch, seed, run.rank, first,
                             settings.max_steps * settings.grad_accum, policy.encode,
                             num_workers=settings.loader_workers, world=run.world)
        for inputs, actions in stream:
            inputs = {k: v.to(run.device) for k, v in inputs.items()}
            if half is not None:
                inputs = {k: v.to(half) if v.is_floating_point() else v for k, v in inputs.items()}
            yield inputs, actions.to(run.device)

    finished = run.fit(batches, lambda module, batch: module.loss(*batch), desc=f"train {run_dir.name}")
    if not finished:
        return None
    state = run.full_state_dict()
    if state is not None:  # bf16 where trained in bf16; fp32 otherwise (fp16 training keeps fp32 master weights)
        keep = torch.bfloat16 if settings.precision == "bf16" else torch.float32
        state = {k: v.to(keep) if v.is_floating_point() else v for k, v in state.items()}
    out = run_dir / POLICY_DIR
    if run.rank == 0:
        from vlm4vla_core.provenance import provenance

        save_policy(policy, out, state_dict=state, extra=dict(
            steps=run.step, seed=seed, training=settings.as_dict(), data=str(data_dir),
            provenance=provenance(dict(policy=asdict(policy_cfg), training=settings.as_dict()))))
    run.barrier()
    run.discard_checkpoints()  # the exported policy holds the weights: the optimizer state is no longer needed
    return out


def policy_config_for(config: dict, backbone: str, benchmark: str, ablation: str, seed: int, source: str, data_dir: Path):
    """The PolicyConfig of one job, from the study config and the benchmark's normalisation statistics."""
    from vlm4vla_core import benchmarks
    from vlm4vla_core.policy import PolicyConfig

    stats_file = data_dir / "stats.json"
    if not stats_file.is_file():
        raise FileNotFoundError(f"dataset has no statistics: {stats_file} is missing")
    stats = json.loads(stats_file.read_text())
    bench, entry = benchmarks.of(config, benchmark)
    try:
        low, high = bench.action_bounds(entry, stats)
    except KeyError as err:
        raise ValueError(f"{stats_file}: missing key action.{err.args[0]}") from None
    if len(low) != bench.action_dim - 1:
        raise ValueError(f"{stats_file}: {len(low) + 1}-D actions, benchmark kind {bench.kind} takes {bench.action_dim}")
    pol = config["policy"]
    return PolicyConfig(
        family=config["backbones"][backbone]["family"],
        source=source,
        chunk=entry["chunk"],
        action_dim=bench.action_dim,
        image_size=entry.get("image_size", 224),
        head_hidden=pol["head_hidden"],
        head_layers=pol.get("head_layers", 2),
        loss=pol["loss"],
        gripper_weight=pol["gripper_weight"],
        arm_norm=pol["arm_norm"],
        arm_range=bench.arm_range_of(entry),
        ablation=ablation,
        init_seed=seed,
        arm_low=tuple(low),
        arm_high=tuple(high),
    )


def main(argv: list[str]) -> int:
    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError, train_settings

    install_stop_signals()  # a pre-timeout signal during start-up still ends in a checkpoint and exit 75
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core train", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--backbone", required=True, help="key under backbones:")
    p.add_argument("--benchmark", required=True, help="key under benchmarks:")
    p.add_argument("--ablation", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--source", help="backbone checkpoint (default: the backbone's source in the config)")
    p.add_argument("--data", required=True, help="training-set folder of the benchmark (the data stage's output)")
    p.add_argument("--run-dir", required=True, help="checkpoints, metrics and the exported policy/ go here")
    p.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps (resume later)")
    args = p.parse_args(argv)
    # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    config = study.load(args.config, benchmark=args.benchmark, backbone=args.backbone, ablation=args.ablation)
    source = args.source or config["backbones"][args.backbone]["source"]
    data_dir = Path(args.data)
    try:
        policy_cfg = policy_config_for(config, args.backbone, args.benchmark, args.ablation, args.seed, source, data_dir)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    settings = train_settings(config, args.backbone, args.benchmark)
    try:
        out = train(policy_cfg, settings, data_dir, Path(args.run_dir), args.seed, stop_after=args.stop_after)
    except (ConfigError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    if out is None and args.stop_after is None:
        return PREEMPTED  # stopped by a signal: non-zero, so the scheduler retries and the run resumes
    return 0
