"""Training stage: one (backbone, benchmark, ablation, seed) job under DeepSpeed.

Runs as one process (``python -m vlm4vla_core train ...``) or N processes under
a standard launcher (``torchrun --nproc_per_node N -m vlm4vla_core train ...``
or ``deepspeed``); on CPU with ``DS_ACCELERATOR=cpu`` (gloo), on GPUs unchanged.

Batches are a pure function of (seed, step, rank), so a run restarted from its
latest DeepSpeed checkpoint continues exactly where it stopped. SIGTERM (Slurm's
preemption signal) and SIGUSR1 (``--signal=USR1@T``) make all ranks stop at the
same step, write a checkpoint and exit 75. Checkpoints carry a fingerprint of
the settings and data that decide the weights; a run whose fingerprint differs
starts over instead of resuming.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

CHECKPOINTS, METRICS, POLICY_DIR = "checkpoints", "metrics.jsonl", "policy"
FINGERPRINT = "fingerprint"
PREEMPTED = 75  # exit status of a run stopped by SIGTERM/SIGUSR1 after its checkpoint (EX_TEMPFAIL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_distributed_env() -> None:
    """A lone process gets the variables a launcher would set."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not os.environ.get("DS_ACCELERATOR"):
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


class ChunkDataset:
    """Frames with the K-step action chunk that starts at each frame (last action repeated past an episode's end)."""

    def __init__(self, frames: np.ndarray, actions: np.ndarray, instructions: list[str], episodes: np.ndarray, chunk: int):
        self.frames, self.instructions = frames, instructions
        n = len(frames)
        idx = np.arange(n)[:, None] + np.arange(chunk)[None, :]
        idx = np.minimum(idx, n - 1)
        # stay inside the episode: clamp to the episode's last frame
        last = np.zeros(n, dtype=np.int64)
        ends = np.flatnonzero(np.r_[episodes[1:] != episodes[:-1], True])
        starts = np.r_[0, ends[:-1] + 1]
        for s, e in zip(starts, ends):
            last[s : e + 1] = e
        self.chunks = actions[np.minimum(idx, last[:, None])].astype(np.float32)

    def __len__(self) -> int:
        return len(self.frames)

    def batch_indices(self, seed: int, step: int, rank: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, rank])
        return rng.choice(len(self), size=size, replace=len(self) < size)


def deepspeed_config(s, world_size: int) -> dict:
    cfg = {
        "train_micro_batch_size_per_gpu": s.micro_batch,
        "gradient_accumulation_steps": s.grad_accum,
        "train_batch_size": s.micro_batch * s.grad_accum * world_size,
        "gradient_clipping": s.grad_clip,
        "zero_optimization": {"stage": s.zero_stage},
        "scheduler": {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": s.lr, "warmup_num_steps": max(1, s.warmup_steps), "warmup_type": "linear"},
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if s.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif s.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return cfg


def fingerprint(policy_cfg, settings, data_dir: Path, seed: int, world: int) -> str:
    """Hash of everything that decides a run's weights at a given step (not its length or logging)."""
    keep = {k: v for k, v in settings.as_dict().items()
            if k not in ("max_steps", "checkpoint_every", "log_every", "num_threads", "gradient_checkpointing")}
    stats = (data_dir / "stats.json").read_bytes()
    blob = json.dumps([asdict(policy_cfg), keep, seed, world, hashlib.sha256(stats).hexdigest()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _trim_metrics(path: Path, upto: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run starts from."""
    if path.exists():
        keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= upto]
        path.write_text("".join(k + "\n" for k in keep))


def _prune(ckpt_dir: Path, keep: str) -> None:
    for tag in ckpt_dir.iterdir():
        if tag.is_dir() and tag.name.startswith("step") and tag.name != keep:
            shutil.rmtree(tag, ignore_errors=True)


def train(
    policy_cfg,
    settings,
    data_dir: Path,
    run_dir: Path,
    seed: int,
    vlm=None,
    processor=None,
    stop_after: int | None = None,
) -> Path | None:
    """Train and export ``run_dir/policy``. Returns its path (None when stopped early for preemption)."""
    _init_distributed_env()
    import deepspeed
    import torch
    from tqdm import tqdm

    from vlm4vla_core.benchmarks.metaworld.collect import load_episodes
    from vlm4vla_core.policy import VLAPolicy, save_policy

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    deepspeed.init_distributed(dist_backend="gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    frames, actions, instructions, episodes, _tasks = load_episodes(data_dir)
    data = ChunkDataset(frames, actions, instructions, np.asarray(episodes), policy_cfg.chunk)

    torch.manual_seed(seed)
    ds_config = deepspeed_config(settings, world)
    if settings.zero_stage == 3:  # every rank reads only its own shard of the weights (zero.Init)
        from transformers.integrations import HfDeepSpeedConfig

        _keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841  (transformers reads it while loading)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision, torch.float32)
    policy = VLAPolicy(policy_cfg, vlm=vlm, processor=processor, dtype=dtype)
    if settings.gradient_checkpointing:
        policy.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = policy.parameter_counts()
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        print(
            f"parameters: total {counts['total']:,}, trainable {counts['trainable']:,}, "
            f"added {counts['added']:,} ({100 * counts['added_share']:.3f}% of the backbone)",
            flush=True,
        )
        (run_dir / "parameters.json").write_text(json.dumps(counts, indent=2))

    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=policy, optimizer=optimizer, config=ds_config)

    ckpt_dir = run_dir / CHECKPOINTS
    mark = fingerprint(policy_cfg, settings, data_dir, seed, world)
    if rank == 0 and (ckpt_dir / "latest").is_file():
        old = (ckpt_dir / FINGERPRINT).read_text().strip() if (ckpt_dir / FINGERPRINT).is_file() else "none"
        if old != mark:  # the job re-runs because its settings changed: these weights are not its own
            print(f"{ckpt_dir}: checkpoints were written under other settings ({old} != {mark}); starting over",
                  flush=True)
            shutil.rmtree(ckpt_dir)
    if world > 1:
        torch.distributed.barrier()
    step = 0
    if (ckpt_dir / "latest").is_file():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is None:
            raise RuntimeError(f"{ckpt_dir}: 'latest' names a checkpoint that cannot be loaded")
        step = int(client["step"])
        if rank == 0:
            print(f"resumed from {path} at step {step}", flush=True)
    metrics_path = run_dir / METRICS
    if rank == 0:
        _trim_metrics(metrics_path, step)

    def save(at: int) -> None:
        tag = f"step{at}"
        if rank == 0:  # before 'latest' exists: a run killed in between still resumes
            from vlm4vla_core.io import write_text

            write_text(ckpt_dir / FINGERPRINT, mark + "\n")
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": at})
        if rank == 0:
            _prune(ckpt_dir, keep=tag)

    def should_stop() -> bool:
        """One decision for all ranks: a signal reaches them at different moments."""
        stop = torch.tensor([float(bool(preempted) or (stop_after is not None and step >= stop_after))])
        if world > 1:
            stop = stop.to(device)
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        return bool(stop.item())

    preempted = []
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda *_: preempted.append(True))

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step)
    device = engine.device
    micro = settings.micro_batch
    bar = tqdm(total=settings.max_steps, initial=step, desc=f"train {run_dir.name}", disable=rank != 0, mininterval=5)
    started = time.time()
    with metrics_path.open("a") if rank == 0 else open(os.devnull, "w") as log:
        while step < settings.max_steps:
            stats = []
            for micro_step in range(settings.grad_accum):
                idx = data.batch_indices(seed, step * settings.grad_accum + micro_step, rank, micro)
                inputs = policy.encode([frames[i] for i in idx], [instructions[i] for i in idx])
                inputs = {k: v.to(device) for k, v in inputs.items()}
                if engine.bfloat16_enabled() or engine.fp16_enabled():
                    half = torch.bfloat16 if engine.bfloat16_enabled() else torch.float16
                    inputs = {k: v.to(half) if v.is_floating_point() else v for k, v in inputs.items()}
                loss, info = engine.module.loss(inputs, torch.from_numpy(data.chunks[idx]).to(device))
                engine.backward(loss)
                engine.step()
                stats.append(info)
            step += 1
            bar.update(1)
            if rank == 0 and (step % settings.log_every == 0 or step == settings.max_steps):
                row = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
                row.update(step=step, lr=engine.get_lr()[0], elapsed_s=round(time.time() - started, 2))
                log.write(json.dumps(row) + "\n")
                log.flush()
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if step % settings.checkpoint_every == 0 or step == settings.max_steps:
                save(step)
            if should_stop():
                if step % settings.checkpoint_every:
                    save(step)
                bar.close()
                if rank == 0:
                    print(f"stopped at step {step} with a checkpoint; run again to resume", flush=True)
                return None
    bar.close()
    if writer:
        writer.close()

    if settings.zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=f"step{step}") if rank == 0 else None
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if state is not None:  # bf16 where trained in bf16; fp32 otherwise (fp16 training keeps fp32 master weights)
        keep = torch.bfloat16 if settings.precision == "bf16" else torch.float32
        state = {k: v.to(keep) if v.is_floating_point() else v for k, v in state.items()}
    out = run_dir / POLICY_DIR
    if rank == 0:
        from vlm4vla_core.provenance import provenance

        save_policy(policy, out, state_dict=state, extra=dict(
            steps=step, seed=seed, training=settings.as_dict(), data=str(data_dir),
            provenance=provenance(dict(policy=asdict(policy_cfg), training=settings.as_dict()))))
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:  # the exported policy holds the weights: the optimizer state is no longer needed
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out


def policy_config_for(config: dict, backbone: str, benchmark: str, ablation: str, seed: int, source: str, data_dir: Path):
    """The PolicyConfig of one job, from the study config and the data's action statistics."""
    from vlm4vla_core.policy import PolicyConfig

    stats_file = data_dir / "stats.json"
    if not stats_file.is_file():
        raise FileNotFoundError(f"dataset has no statistics: {stats_file} is missing")
    stats = json.loads(stats_file.read_text())
    try:
        low, high = stats["action"]["q01"], stats["action"]["q99"]
    except KeyError as err:
        raise ValueError(f"{stats_file}: missing key action.{err.args[0]}") from None
    bench, pol = config["benchmarks"][benchmark], config["policy"]
    return PolicyConfig(
        family=config["backbones"][backbone]["family"],
        source=source,
        chunk=bench["chunk"],
        action_dim=len(low),
        image_size=bench.get("image_size", 224),
        head_hidden=pol["head_hidden"],
        head_layers=pol.get("head_layers", 2),
        loss=pol["loss"],
        gripper_weight=pol["gripper_weight"],
        arm_norm=pol["arm_norm"],
        ablation=ablation,
        init_seed=seed,
        arm_low=tuple(low[:-1]),
        arm_high=tuple(high[:-1]),
    )


def main(argv: list[str]) -> int:
    from vlm4vla_core.config import ConfigError, load_config, train_settings

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core train", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--backbone", required=True, help="key under backbones:")
    p.add_argument("--benchmark", required=True, help="key under benchmarks:")
    p.add_argument("--ablation", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--source", help="backbone checkpoint (default: the backbone's source in the config)")
    p.add_argument("--data", required=True, help="dataset folder of the benchmark")
    p.add_argument("--run-dir", required=True, help="checkpoints, metrics and the exported policy/ go here")
    p.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps (resume later)")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
        for key, val in (("backbones", args.backbone), ("benchmarks", args.benchmark)):
            if val not in config[key]:
                raise ConfigError(f"{args.config}: no {val!r} under {key!r}")
        if args.ablation not in config["ablations"]:
            raise ConfigError(f"{args.config}: ablation {args.ablation!r} is not listed under 'ablations'")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    source = args.source or config["backbones"][args.backbone]["source"]
    data_dir = Path(args.data)
    try:
        policy_cfg = policy_config_for(config, args.backbone, args.benchmark, args.ablation, args.seed, source, data_dir)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    settings = train_settings(config, args.backbone, args.benchmark)
    out = train(policy_cfg, settings, data_dir, Path(args.run_dir), args.seed, stop_after=args.stop_after)
    if out is None and args.stop_after is None:
        return PREEMPTED  # stopped by a signal: non-zero, so the scheduler retries and the run resumes
    return 0
