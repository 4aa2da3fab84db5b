"""A tiny model under TrainingRun, for the kill/resume and non-finite-loss tests.

python tests/helpers/tiny_run.py RUN_DIR [--max-steps N] [--checkpoint-every K] [--nan-at STEP] [--step-sleep S]
Batches are a pure function of the micro-step; the final weights go to RUN_DIR/final.pt.
Exit 0 finished, 75 stopped by a signal with a checkpoint, 1 non-finite loss.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from vlm4vla_core.config import TrainSettings
from vlm4vla_core.training import PREEMPTED, NonFiniteLoss, TrainingRun, install_stop_signals


def main() -> int:
    install_stop_signals()
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--nan-at", type=int, default=0)
    p.add_argument("--step-sleep", type=float, default=0.0)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    settings = TrainSettings(zero_stage=1, precision="fp32", micro_batch=4, grad_accum=1, grad_clip=1.0, lr=1e-2,
                             warmup_steps=2, max_steps=a.max_steps, checkpoint_every=a.checkpoint_every, log_every=1,
                             num_threads=1)
    run = TrainingRun(model, settings, Path(a.run_dir), mark="tiny-v1")

    def batches(first):
        for micro in range(first, a.max_steps):
            g = torch.Generator().manual_seed(micro)
            yield torch.randn(4, 8, generator=g), torch.randn(4, 2, generator=g), micro

    def loss_fn(module, batch):
        x, y, micro = batch
        if a.step_sleep:
            time.sleep(a.step_sleep)
        loss = torch.nn.functional.mse_loss(module(x), y)
        if a.nan_at and micro + 1 == a.nan_at:
            loss = loss * float("nan")
        return loss, {"loss": float(loss)}

    try:
        finished = run.fit(batches, loss_fn)
    except NonFiniteLoss as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    if not finished:
        return PREEMPTED
    torch.save(run.full_state_dict(), Path(a.run_dir) / "final.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
