"""Training steps/s of the VLA training stage on the demo's backbones, this tree against a baseline revision.

    python tools/bench_train_step.py [--baseline REV] [--repeats 2] [--steps 40] [--families qwen2_5_vl paligemma]

Builds what a demo training job reads: tiny random-weight backbones (``make_tiny``, 112 px) and a LeRobot
v2.1 training set of 112 px frames (``bench_loader.write``: rendered-looking frames, 4-D actions, three
tasks; default 60 episodes of 80 frames, the size of the demo's Meta-World set), or ``--data FOLDER``, a
training-set folder the data stage wrote. The baseline (default: ``git merge-base HEAD main``) is exported
with ``git archive``; each run is a fresh process with one tree's package on PYTHONPATH that calls
``vlm4vla_core.train.train`` (DeepSpeed engine, ZeRO 1, fp32, micro-batch 32, one thread, the demo's
settings) for ``--steps`` steps. Steps/s is taken from the run's own ``elapsed_s`` at its last step (the
loop alone: no imports, no model loading, no export). Runs of the two trees alternate; the script prints
the median steps/s of each tree, the ratio, and whether both trees ended with bit-identical weights.
A tree cannot share a process with another version of itself, so the ratio is taken within one
invocation, over alternating runs. ``--breakdown`` instead times the parts of a step in this tree
(batch, of which pixel tensors; the image processor on the same frames; forward; backward; AdamW).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 112


def export(rev: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def prepare(tmp: Path, families: list[str], episodes: int, length: int, data: str | None) -> Path:
    """Tiny backbones under tmp/<family> and the training set (tmp/data, or ``data`` as it is)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_loader import write

    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.episodes.source import write_training_set

    for family in families:
        get_adapter(family).make_tiny(tmp / family, image_size=SIZE)
    if data:
        return Path(data)
    write(tmp / "data", episodes, length)
    write_training_set(tmp / "data", ".")
    return tmp / "data"


def worker(args) -> None:
    """One training run of ``--steps`` steps in this process; prints a JSON line."""
    import numpy as np
    import torch

    from vlm4vla_core.config import TrainSettings
    from vlm4vla_core.policy import PolicyConfig
    from vlm4vla_core.train import train

    stats = json.loads((Path(args.data) / "stats.json").read_text())["action"]
    dim = len(stats["q01"])
    cfg = PolicyConfig(family=args.family, source=args.source, chunk=4, action_dim=dim, image_size=SIZE,
                       head_hidden=256, arm_low=tuple(stats["q01"][:-1]), arm_high=tuple(stats["q99"][:-1]))
    settings = TrainSettings(zero_stage=1, precision="fp32", micro_batch=32, grad_accum=1, grad_clip=1.0, lr=1e-3,
                             warmup_steps=50, max_steps=args.steps, checkpoint_every=10**6, log_every=args.steps,
                             num_threads=1)
    out = train(cfg, settings, Path(args.data), Path(args.run_dir), seed=0)
    row = json.loads((Path(args.run_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    from safetensors.torch import load_file

    state = load_file(out / "policy.safetensors")
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:16]
    print(json.dumps(dict(steps_per_s=args.steps / row["elapsed_s"], loss=row["loss"], weights=digest,
                          threads=torch.get_num_threads(), numpy=np.__version__)), flush=True)


def breakdown(tmp: Path, families: list[str], data: Path, steps: int) -> None:
    """This tree, in this process: milliseconds per step of each part of a training step (plain AdamW,
    no DeepSpeed engine), on the batches of a first pass over the data (a cold frame cache)."""
    import time

    import torch

    from vlm4vla_core.backbones.base import resize_square
    from vlm4vla_core.episodes import TrainStream
    from vlm4vla_core.episodes.source import TrainingSet
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy

    torch.set_num_threads(1)
    stats = json.loads((data / "stats.json").read_text())["action"]
    print(f"{'ms per step':12} {'batch':>7} {'of which pixels':>16} {'processor pixels':>17} {'forward':>8} "
          f"{'backward':>9} {'AdamW':>6}")
    for family in families:
        cfg = PolicyConfig(family=family, source=str(tmp / family), chunk=4, action_dim=len(stats["q01"]),
                           image_size=SIZE, head_hidden=256, arm_low=tuple(stats["q01"][:-1]),
                           arm_high=tuple(stats["q99"][:-1]))
        torch.manual_seed(0)
        policy = VLAPolicy(cfg)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
        source = TrainingSet(data)
        stream = iter(TrainStream(source, 4, 32, 0, 0, 0, steps, policy.encode))
        t = dict(batch=0.0, pixels=0.0, processor=0.0, forward=0.0, backward=0.0, adamw=0.0)
        for step in range(steps):
            a = time.perf_counter()
            inputs, actions = next(stream)
            b = time.perf_counter()
            loss, _ = policy.loss(inputs, actions)
            c = time.perf_counter()
            optimizer.zero_grad()
            loss.backward()
            d = time.perf_counter()
            optimizer.step()
            e = time.perf_counter()
            frames = [source.frame(i)[0] for i in range(step * 32, step * 32 + 32)]  # decoded: cached now
            f = time.perf_counter()
            policy.adapter.table_pixel_inputs(policy.processor, frames)
            g = time.perf_counter()
            policy.adapter.pixel_inputs(policy.processor, resize_square(frames, SIZE))
            h = time.perf_counter()
            if step:  # the first step is a warm-up
                for key, dt in zip(t, (b - a, g - f, h - g, c - b, d - c, e - d)):
                    t[key] += dt
        ms = {k: 1e3 * v / (steps - 1) for k, v in t.items()}
        print(f"{family:12} {ms['batch']:>7.1f} {ms['pixels']:>16.1f} {ms['processor']:>17.1f} "
              f"{ms['forward']:>8.1f} {ms['backward']:>9.1f} {ms['adamw']:>6.1f}", flush=True)


def run(tree: Path, family: str, source: Path, data: Path, steps: int, run_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--family", family, "--source", str(source),
           "--data", str(data), "--steps", str(steps), "--run-dir", str(run_dir)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise SystemExit(f"training run failed in {tree}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="git revision to compare with (default: git merge-base HEAD main)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--families", nargs="+", default=["qwen2_5_vl", "paligemma"])
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--length", type=int, default=80)
    p.add_argument("--data", help="a training-set folder (dataset.json, stats.json) instead of synthetic frames")
    p.add_argument("--breakdown", action="store_true",
                   help="only this tree, in this process: milliseconds per step of each part of a step")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--family", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.breakdown:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = prepare(tmp, args.families, args.episodes, args.length, args.data)
            print(f"{args.steps} steps of micro-batch 32, one thread; data {data}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            breakdown(tmp, args.families, data, args.steps)
        return 0
    rev = args.baseline or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True,
                                          text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "baseline").mkdir()
        export(rev, tmp / "baseline")
        data = prepare(tmp, args.families, args.episodes, args.length, args.data)
        trees = {"baseline": tmp / "baseline", "this tree": ROOT}
        print(f"baseline {rev[:10]}; {args.steps} steps of micro-batch 32 per run, {args.repeats} runs per tree; "
              f"data {data}; load average {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{'family':12} {'baseline steps/s':>17} {'this tree steps/s':>18} {'ratio':>6}  weights")
        for family in args.families:
            results = {name: [] for name in trees}
            for r in range(args.repeats):
                for name, tree in trees.items():
                    results[name].append(run(tree, family, tmp / family, data, args.steps,
                                             tmp / "runs" / f"{family}-{name.replace(' ', '_')}-{r}"))
            rate = {name: statistics.median(x["steps_per_s"] for x in rows) for name, rows in results.items()}
            same = len({x["weights"] for rows in results.values() for x in rows}) == 1
            each = " / ".join(", ".join(f"{x['steps_per_s']:.2f}" for x in rows) for rows in results.values())
            print(f"{family:12} {rate['baseline']:>17.2f} {rate['this tree']:>18.2f} "
                  f"{rate['this tree'] / rate['baseline']:>5.2f}x  {'bit-identical' if same else 'DIFFER'} "
                  f"(runs: {each})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
