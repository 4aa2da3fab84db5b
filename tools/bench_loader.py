"""Training input throughput against what a training step consumes, on a synthetic LeRobot dataset.

Run: ``python tools/bench_loader.py [--episodes 30] [--length 100] [--micro-batch 32]``.
Writes a LeRobot v2.1 dataset of 112 px frames to a temporary folder, then times in the same process
(a) TrainStream (PNG decode + action chunks + the tiny Qwen2.5-VL processor as ``encode_fn``) with
0 and 2 workers, (b) the same batches taken from frames decoded into memory up front (the way a
dataset small enough for RAM would be read; the stream's decoded-frame cache gets there after one
pass) and (c) training steps (forward, backward, AdamW step) of a tiny VLAPolicy on the
same micro-batches. A ratio above 1 means the loader outpaces training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import torch

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter, TrainStream, batch_indices
from vlm4vla_core.policy import PolicyConfig, VLAPolicy

SIZE, CHUNK, ACTION_DIM = 112, 4, 4
TASKS = ["press the button from the top", "open the drawer", "open the window by sliding it"]


def frames(rng, n: int):
    """Rendered-looking frames: a gradient scene, a moving square, a little sensor noise."""
    y, x = np.mgrid[:SIZE, :SIZE]
    scene = np.stack([x, y, (x + y) // 2], -1).astype(np.int16) + rng.integers(0, 60, 3)
    for t in range(n):
        img = scene + rng.integers(0, 6, scene.shape)
        c = 10 + (t * 3) % (SIZE - 30)
        img[c:c + 20, 40:60] = (200, 40, 40)
        yield np.clip(img, 0, 255).astype(np.uint8)


def write(root: Path, episodes: int, length: int) -> float:
    rng, t = np.random.default_rng(0), time.perf_counter()
    with LeRobotWriter(root, fps=10, action_dim=ACTION_DIM) as w:
        for e in range(episodes):
            actions = np.c_[rng.normal(0, 0.3, (length, ACTION_DIM - 1)), np.sign(rng.normal(size=(length, 1)))]
            w.add_episode(frames(rng, length), actions, TASKS[e % len(TASKS)])
    return time.perf_counter() - t


def loader_rate(data, encode, micro: int, steps: int, workers: int) -> float:
    """Samples/s of the stream after two warm-up batches (worker start-up excluded)."""
    stream = TrainStream(data, CHUNK, micro, seed=0, rank=0, start_step=0, total_steps=steps + 2,
                         encode_fn=encode, num_workers=workers)
    batches = iter(stream)
    for _ in range(2):
        next(batches)
    t = time.perf_counter()
    for _ in batches:
        pass
    return steps * micro / (time.perf_counter() - t)


def ram_rate(data, encode, micro: int, steps: int) -> float:
    """Samples/s of the same batches from frames decoded into memory beforehand (no decoding per step)."""
    frames = [data.frame(i) for i in range(data.num_frames)]
    t = time.perf_counter()
    for step in range(2, steps + 2):
        idx = batch_indices(data.num_frames, 0, step, 0, micro)
        encode([frames[i][0] for i in idx], [frames[i][1] for i in idx])
        torch.from_numpy(np.stack([data.action_chunk(int(i), CHUNK) for i in idx]))
    return steps * micro / (time.perf_counter() - t)


def train_rate(policy, data, micro: int, steps: int) -> float:
    """Samples/s of forward + backward + optimizer step, on micro-batches loaded beforehand."""
    stream = TrainStream(data, CHUNK, micro, seed=0, rank=0, start_step=0, total_steps=steps + 1,
                         encode_fn=policy.encode)
    batches = list(stream)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    policy.train()
    for i, (inputs, actions) in enumerate(batches):
        if i == 1:
            t = time.perf_counter()  # the first step is a warm-up
        loss, _ = policy.loss(inputs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * micro / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--loader-steps", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=4)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        get_adapter("qwen2_5_vl").make_tiny(tmp / "backbone", image_size=SIZE)
        secs = write(tmp / "data", args.episodes, args.length)
        data = LeRobotDataset(tmp / "data")
        size = sum(f.stat().st_size for f in (tmp / "data").rglob("*.parquet")) / 2**20
        print(f"dataset: {data.num_frames} frames of {SIZE} px in {data.num_episodes} episodes, "
              f"{size:.1f} MiB of Parquet, written in {secs:.1f} s; micro-batch {args.micro_batch}, "
              f"chunk {CHUNK}, torch threads {torch.get_num_threads()}")
        stats = data.action_stats()
        cfg = PolicyConfig(family="qwen2_5_vl", source=str(tmp / "backbone"), chunk=CHUNK, action_dim=ACTION_DIM,
                           image_size=SIZE, head_hidden=256, arm_low=tuple(stats["q01"][:-1]),
                           arm_high=tuple(stats["q99"][:-1]))
        policy = VLAPolicy(cfg)
        rates = {f"loader, {w} workers": loader_rate(LeRobotDataset(tmp / "data"), policy.encode, args.micro_batch,
                                                     args.loader_steps, w) for w in (0, 2)}
        rates["frames in memory, 0 workers"] = ram_rate(LeRobotDataset(tmp / "data"), policy.encode,
                                                        args.micro_batch, args.loader_steps)
        consume = train_rate(policy, data, args.micro_batch, args.train_steps)
    print(f"{'':28} {'samples/s':>10} {'loader / training':>18}")
    for name, rate in rates.items():
        print(f"{name:28} {rate:>10.1f} {rate / consume:>18.2f}")
    print(f"{'training step (fwd+bwd+opt)':28} {consume:>10.1f}")


if __name__ == "__main__":
    main()
