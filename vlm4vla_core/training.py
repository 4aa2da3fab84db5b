"""The machinery of a training run, separate from what it trains: a DeepSpeed engine,
checkpoints with a fingerprint, exact resume, preemption and metrics.

``TrainingRun(model, settings, run_dir, mark)`` wraps any ``nn.Module``; ``fit(batches, loss_fn)``
trains it from the step its latest checkpoint holds. ``batches(micro_step)`` must be a pure
function of the micro-step so that a resumed run continues exactly where it stopped. The training
stages reach it through one skeleton, ``vlm4vla_core.recipe``.

- Checkpoints: ``run_dir/checkpoints/step<N>`` (DeepSpeed's own format; the latest is kept)
  with a ``fingerprint`` of what decides the weights. A run whose fingerprint differs (its
  settings or data changed) starts over instead of resuming.
- Preemption: SIGTERM (Slurm's signal) or SIGUSR1 (``--signal=USR1@T``) make all ranks agree to
  stop at the same step, write a checkpoint and return; the caller exits with ``PREEMPTED`` (75)
  so that the scheduler retries and the run resumes.
- Metrics: ``run_dir/metrics.jsonl`` (trimmed back to the checkpoint on resume) and TensorBoard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from vlm4vla_core.io import write_text
from vlm4vla_core.progress import progress

CHECKPOINTS, METRICS, FINGERPRINT = "checkpoints", "metrics.jsonl", "fingerprint"
PREEMPTED = 75  # exit status of a run stopped by SIGTERM/SIGUSR1 after its checkpoint (EX_TEMPFAIL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_rank_env(env=os.environ) -> dict:
    """RANK / WORLD_SIZE / LOCAL_RANK of a task that ``srun`` started (one task per GPU), from Slurm's
    variables; MASTER_ADDR and MASTER_PORT come from the launcher (``vlm4vla_core.launch``), which
    takes them from the allocation. Empty outside an ``srun`` step of more than zero tasks."""
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env or "RANK" in env:
        return {}
    return dict(RANK=env["SLURM_PROCID"], WORLD_SIZE=env["SLURM_NTASKS"],
                LOCAL_RANK=env.get("SLURM_LOCALID", env["SLURM_PROCID"]))


def init_distributed_env() -> None:
    """A lone process gets the variables a launcher would set; a task of ``srun`` takes them from Slurm;
    no GPU means DeepSpeed's CPU accelerator (gloo). Initialises torch.distributed, which ZeRO-3 needs
    before the model is built."""
    os.environ.update(slurm_rank_env())
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if os.environ["WORLD_SIZE"] == "1":  # a lone process (plain python, or the batch step of a Slurm job)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not os.environ.get("DS_ACCELERATOR"):
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else None)


def deepspeed_config(s, world_size: int) -> dict:
    ds_config = {
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
        ds_config["bf16"] = {"enabled": True}
    elif s.precision == "fp16":
        ds_config["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return ds_config


_STOP: list[int] = []  # signals received (SIGTERM, SIGUSR1) since install_stop_signals()


def install_stop_signals() -> None:
    """From here on SIGTERM / SIGUSR1 (Slurm's preemption and pre-timeout signals) only ask the run to
    stop at its next step with a checkpoint. Installed as early as possible: a signal during start-up
    (imports, model loading) must not kill the process before it can checkpoint."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda num, _frame: _STOP.append(num))


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stops, its last good checkpoint is kept."""


def _trim_metrics(path: Path, upto: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run starts from."""
    if path.exists():
        keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= upto]
        path.write_text("".join(k + "\n" for k in keep))


class TrainingRun:
    """One model under DeepSpeed with resumable checkpoints (see the module docstring)."""

    def __init__(self, model, settings, run_dir: Path, mark: str, stop_after: int | None = None):
        install_stop_signals()
        init_distributed_env()
        import deepspeed
        import torch

        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.settings, self.run_dir, self.mark, self.stop_after = settings, Path(run_dir), mark, stop_after
        self.run_dir.mkdir(parents=True, exist_ok=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                     config=deepspeed_config(settings, self.world))
        self.device = self.engine.device
        self.ckpt_dir = self.run_dir / CHECKPOINTS
        self.step = self._resume()
        self._preempted = _STOP

    # -- checkpoints ---------------------------------------------------------
    def _resume(self) -> int:
        import torch

        ckpt = self.ckpt_dir
        if self.rank == 0 and (ckpt / "latest").is_file():
            old = (ckpt / FINGERPRINT).read_text().strip() if (ckpt / FINGERPRINT).is_file() else "none"
            if old != self.mark:  # the job re-runs because its settings changed: these weights are not its own
                print(f"{ckpt}: checkpoints were written under other settings ({old} != {self.mark}); starting over",
                      flush=True)
                shutil.rmtree(ckpt)
        if self.world > 1:
            torch.distributed.barrier()
        step = 0
        if (ckpt / "latest").is_file():
            tag = (ckpt / "latest").read_text().strip()
            try:
                path, client = self.engine.load_checkpoint(str(ckpt))
            except Exception as err:  # a truncated or garbled file of the checkpoint
                raise RuntimeError(f"{ckpt / tag}: checkpoint cannot be read ({type(err).__name__}: {err}); "
                                   f"remove {ckpt} to start over") from None
            if path is None:
                raise RuntimeError(f"{ckpt}: 'latest' names a checkpoint that cannot be loaded")
            step = int(client["step"])
            if self.rank == 0:
                print(f"resumed from {path} at step {step}", flush=True)
        if self.rank == 0:
            _trim_metrics(self.run_dir / METRICS, step)
        return step

    def save(self, at: int) -> None:
        tag = f"step{at}"
        if self.rank == 0:  # before 'latest' exists: a run killed in between still resumes
            write_text(self.ckpt_dir / FINGERPRINT, self.mark + "\n")
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state={"step": at})
        if self.rank == 0:
            for old in self.ckpt_dir.iterdir():
                if old.is_dir() and old.name.startswith("step") and old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)

    def _flags(self, loss_ok: bool) -> tuple[bool, bool]:
        """One decision for all ranks, (stop, non-finite loss): a signal reaches them at different moments."""
        import torch

        stop = bool(self._preempted) or (self.stop_after is not None and self.step >= self.stop_after)
        flags = torch.tensor([float(stop), float(not loss_ok)])
        if self.world > 1:
            flags = flags.to(self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())

    def _mean_over_ranks(self, row: dict) -> dict:
        """Logged values averaged over the ranks: the loss of the global batch, whatever the process count."""
        if self.world == 1:
            return row
        import torch

        keys = sorted(row)
        t = torch.tensor([float(row[k]) for k in keys], dtype=torch.float64).to(self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return {k: float(v) / self.world for k, v in zip(keys, t.cpu().tolist())}

    # -- the loop ------------------------------------------------------------
    def fit(self, batches: Callable[[int], Iterator], loss_fn: Callable, desc: str = "train") -> bool:
        """Train to ``settings.max_steps``. ``batches(first_micro_step)`` yields the inputs of micro-steps
        first, first + 1, ...; ``loss_fn(module, inputs) -> (loss, info dict of floats)``. Returns
        True when finished, False when stopped early with a checkpoint (signal or ``stop_after``)."""
        import torch
        s, rank = self.settings, self.rank
        install_stop_signals()
        writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
        bar = progress(total=s.max_steps, initial=self.step, desc=desc, unit="steps", disable=rank != 0,
                       mininterval=5)
        started = time.time()
        stream = batches(self.step * s.grad_accum) if self.step < s.max_steps else iter(())
        try:
            with (self.run_dir / METRICS).open("a") if rank == 0 else open(os.devnull, "w") as log:
                while self.step < s.max_steps:
                    stats, finite = [], True
                    for _ in range(s.grad_accum):
                        loss, info = loss_fn(self.engine.module, next(stream))
                        finite = finite and bool(torch.isfinite(loss.detach()).all())
                        self.engine.backward(loss)
                        self.engine.step()
                        stats.append(info)
                    self.step += 1
                    bar.update(1)
                    stop, bad = self._flags(finite)
                    if bad:  # before any checkpoint of this step: the last one written holds good weights
                        last = (self.ckpt_dir / "latest").read_text().strip() if (self.ckpt_dir / "latest").is_file() \
                            else "none"
                        raise NonFiniteLoss(f"non-finite loss (NaN or inf) at step {self.step}: training stopped; "
                                            f"the last good checkpoint is kept ({self.ckpt_dir / last})")
                    if self.step % s.log_every == 0 or self.step == s.max_steps:
                        row = self._mean_over_ranks({k: float(np.mean([st[k] for st in stats])) for k in stats[0]})
                        if rank == 0:
                            row.update(step=self.step, lr=self.engine.get_lr()[0],
                                       elapsed_s=round(time.time() - started, 2))
                            log.write(json.dumps(row) + "\n")
                            log.flush()
                            for k, v in row.items():
                                if k != "step":
                                    writer.add_scalar(f"train/{k}", v, self.step)
                            bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if self.step % s.checkpoint_every == 0 or self.step == s.max_steps:
                        self.save(self.step)
                    if stop:
                        if self.step % s.checkpoint_every and self.step != s.max_steps:
                            self.save(self.step)
                        if rank == 0:
                            print(f"stopped at step {self.step} with a checkpoint; run again to resume", flush=True)
                        return False
        finally:
            bar.close()
            if writer:
                writer.close()
            close = getattr(stream, "close", None)
            if close:
                close()
        return True

    def full_state_dict(self) -> dict | None:
        """The trained weights in fp32 on rank 0 (gathered from ZeRO-3 partitions), None elsewhere."""
        if self.settings.zero_stage == 3:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            return get_fp32_state_dict_from_zero_checkpoint(str(self.ckpt_dir), tag=f"step{self.step}") \
                if self.rank == 0 else None
        return {k: v.float() for k, v in self.engine.module.state_dict().items()} if self.rank == 0 else None

    def discard_checkpoints(self) -> None:
        """Remove the checkpoints (optimizer state included) once the trained weights are exported."""
        if self.rank == 0:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    def barrier(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.barrier()
