"""Scripted-expert demonstrations on Meta-World, stored as one Parquet file per task.

``python -m vlm4vla_core collect-data --tasks drawer-open-v3 ... --episodes-per-task 20 --out DIR``

Episode seeds start at ``--seed-offset`` and stay below ``EVAL_SEED_START``. Only
successful episodes are kept; a failed seed is dropped (and listed in stats.json)
and the next unused seed is tried, so every task gets exactly N episodes. Rows
hold the frame observed *before* each action. ``DIR/stats.json`` holds per-dimension
action statistics over all steps of all tasks, and the collection metadata.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mujoco
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from .env import (
    DEFAULT_CAMERA,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_STEPS,
    EVAL_SEED_START,
    METAWORLD_VERSION,
    MetaWorldEnv,
    check_task,
)
from .instructions import instruction

COLUMNS = ("task", "episode", "episode_seed", "step", "instruction", "image", "action")
SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("episode", pa.int32()),
        ("episode_seed", pa.int64()),
        ("step", pa.int32()),
        ("instruction", pa.string()),
        ("image", pa.binary()),
        ("action", pa.list_(pa.float32())),
    ]
)


def expert_episode(env: MetaWorldEnv, seed: int) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """Roll the scripted expert from seed; returns frames (one per action), actions [T, 4], success."""
    env.reset(seed)
    frames, actions = [], []
    while not env.success and env.steps < env.max_steps:
        frames.append(env.render())
        action = env.expert_action()
        actions.append(action)
        env.step(action)
    return frames, np.asarray(actions, dtype=np.float32).reshape(-1, 4), env.success


def encode_png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


_ENVS: dict[tuple, MetaWorldEnv] = {}  # one env per task and worker process


def _episode_job(job: tuple[str, int, int, str, int]) -> tuple[str, int, bool, list[bytes], np.ndarray]:
    task, seed, image_size, camera, max_steps = job
    key = (task, image_size, camera, max_steps)
    if key not in _ENVS:
        _ENVS[key] = MetaWorldEnv(task, image_size, camera, max_steps)
    frames, actions, success = expert_episode(_ENVS[key], seed)
    return task, seed, success, [encode_png(f) for f in frames] if success else [], actions


def collect(
    tasks: list[str],
    episodes_per_task: int,
    out: Path,
    image_size: int = DEFAULT_IMAGE_SIZE,
    camera: str = DEFAULT_CAMERA,
    max_steps: int = DEFAULT_MAX_STEPS,
    seed_offset: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Collect ``episodes_per_task`` successful expert episodes per task into ``out``; returns stats."""
    for task in tasks:
        check_task(task)
        instruction(task)
    if len(set(tasks)) != len(tasks) or not tasks:
        raise ValueError(f"--tasks must be a non-empty list without repeats, got {tasks}")
    if episodes_per_task < 1:
        raise ValueError(f"--episodes-per-task must be >= 1, got {episodes_per_task}")
    MetaWorldEnv(tasks[0], image_size, camera, max_steps).close()  # validate camera/size/steps early
    max_attempts = 2 * episodes_per_task + 10
    if seed_offset < 0 or seed_offset + max_attempts > EVAL_SEED_START:
        raise ValueError(f"--seed-offset must keep demo seeds in [0, {EVAL_SEED_START}), got {seed_offset}")

    kept: dict[str, dict[int, tuple[list[bytes], np.ndarray]]] = {t: {} for t in tasks}
    dropped: dict[str, list[int]] = {t: [] for t in tasks}
    next_seed = {t: seed_offset for t in tasks}
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="collect", unit="ep", disable=not progress, mininterval=2)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
    try:
        while True:
            jobs = []
            for t in tasks:
                need = episodes_per_task - len(kept[t])
                if need and next_seed[t] - seed_offset + need > max_attempts:
                    raise RuntimeError(
                        f"expert of {t} failed on {len(dropped[t])} seeds {dropped[t]} within max_steps={max_steps}; "
                        "raise --max-steps or drop the task"
                    )
                jobs += [(t, s, image_size, camera, max_steps) for s in range(next_seed[t], next_seed[t] + need)]
                next_seed[t] += need
            if not jobs:
                break
            results = pool.map(_episode_job, jobs) if pool else map(_episode_job, jobs)
            for task, seed, success, pngs, actions in results:
                if success:
                    kept[task][seed] = (pngs, actions)
                    bar.update(1)
                else:
                    dropped[task].append(seed)
                    bar.set_postfix(dropped=sum(map(len, dropped.values())))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - t0

    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        all_actions, counts, files = [], {}, {}
        for task in tasks:
            rows: dict[str, list] = {c: [] for c in COLUMNS}
            seeds = sorted(kept[task])
            for ep, seed in enumerate(seeds):
                pngs, actions = kept[task][seed]
                text = instruction(task, seed)
                for step, (png, action) in enumerate(zip(pngs, actions, strict=True)):
                    for col, val in zip(COLUMNS, (task, ep, seed, step, text, png, action.tolist()), strict=True):
                        rows[col].append(val)
                all_actions.append(actions)
            files[task] = f"{task}.parquet"
            pq.write_table(pa.table(rows, schema=SCHEMA), tmp / files[task])
            lengths = [len(kept[task][s][1]) for s in seeds]
            counts[task] = dict(episodes=len(seeds), steps=int(sum(lengths)), mean_length=float(np.mean(lengths)),
                                max_length=int(max(lengths)), seeds=seeds, dropped_seeds=sorted(dropped[task]))
        acts = np.concatenate(all_actions)
        stats = dict(
            action=dict(
                min=acts.min(0).tolist(), max=acts.max(0).tolist(), mean=acts.mean(0).tolist(),
                std=acts.std(0).tolist(), q01=np.quantile(acts, 0.01, axis=0).tolist(),
                q99=np.quantile(acts, 0.99, axis=0).tolist(),
            ),
            tasks=list(tasks), files=files, counts=counts, episodes_per_task=episodes_per_task,
            total_steps=int(len(acts)), dropped=int(sum(map(len, dropped.values()))),
            image_size=image_size, camera=camera, max_steps=max_steps, seed_offset=seed_offset,
            eval_seed_start=EVAL_SEED_START, metaworld_version=METAWORLD_VERSION,
            mujoco_version=mujoco.__version__, collect_seconds=round(seconds, 2), workers=workers,
        )
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def load_episodes(directory: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    """Load a collect-data directory.

    Returns frames uint8 [N, H, W, 3], actions float32 [N, 4], instructions (N), episode_index
    int64 [N] (global episode id, contiguous, in file order) and the task of each row (N).
    """
    directory = Path(directory)
    stats_path = directory / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
        tasks, files, size = stats["tasks"], stats["files"], int(stats["image_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{stats_path}: not a valid collect-data stats file ({e})") from e
    frames, actions, texts, episode_index, row_tasks = [], [], [], [], []
    offset = 0
    for task in tasks:
        path = directory / files.get(task, f"{task}.parquet")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{path}: cannot read Parquet ({e})") from e
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        df = table.select(list(COLUMNS)).to_pandas()
        if len(df) == 0 or set(df["task"]) != {task}:
            raise ValueError(f"{path}: expected rows of task {task!r}, found {sorted(set(df['task']))}")
        act = np.stack(df["action"].to_numpy()) if len(df) else np.zeros((0, 4))
        if act.ndim != 2 or act.shape[1] != 4 or not np.isfinite(act).all():
            raise ValueError(f"{path}: column 'action' must hold 4 finite floats per row")
        episodes = df["episode"].to_numpy()
        for ep in np.unique(episodes):
            steps = df["step"].to_numpy()[episodes == ep]
            if not np.array_equal(steps, np.arange(len(steps))):
                raise ValueError(f"{path}: episode {ep} has steps out of order or missing")
        try:
            imgs = np.stack([decode_png(b) for b in df["image"]])
        except Exception as e:
            raise ValueError(f"{path}: column 'image' does not hold PNG images ({e})") from e
        if imgs.shape[1:] != (size, size, 3):
            raise ValueError(f"{path}: images are {imgs.shape[1:]}, stats.json says {size}x{size}x3")
        _, ep_ids = np.unique(episodes, return_inverse=True)
        frames.append(imgs)
        actions.append(act.astype(np.float32))
        texts += df["instruction"].tolist()
        episode_index.append(ep_ids.astype(np.int64) + offset)
        row_tasks += [task] * len(df)
        offset += int(ep_ids.max()) + 1
    return np.concatenate(frames), np.concatenate(actions), texts, np.concatenate(episode_index), row_tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core collect-data", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True, help="Meta-World v3 task names")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--camera", default=DEFAULT_CAMERA)
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    p.add_argument("--seed-offset", type=int, default=0, help=f"first demo seed (demo seeds < {EVAL_SEED_START})")
    p.add_argument("--workers", type=int, default=1, help="processes (episodes are spread over them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    stats = collect(args.tasks, args.episodes_per_task, args.out, args.image_size, args.camera, args.max_steps,
                    args.seed_offset, args.workers, not args.no_progress)
    print(f"wrote {args.out}: {len(args.tasks)} tasks x {args.episodes_per_task} episodes, "
          f"{stats['total_steps']} steps, dropped {stats['dropped']} failed episodes, "
          f"{stats['collect_seconds']} s ({stats['total_steps'] / max(stats['collect_seconds'], 1e-9):.0f} frames/s)")
    return 0
