"""Tiny LeRobot datasets in the native layouts (v2.1 video, v3.0 with Parquet images or video).

Written here with pyarrow/pandas/PyAV as LeRobot lays them out, independently of the project's
writer, so the reader is tested against the format rather than against itself.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE_KEY = "observation.images.image"
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def synthetic_episodes(lengths, size=32, action_dim=4, seed=0, tasks=("pick the cube", "open the drawer")):
    """[(frames uint8 [T, H, W, 3], actions float32 [T, A], task)]. Each frame has its own brightness
    (steps of 5 levels over the whole dataset), so a decoded video frame can be matched to its source."""
    rng, out, g = np.random.default_rng(seed), [], 0
    x = np.linspace(0, 60, size)[None, :, None]
    for e, n in enumerate(lengths):
        level = 20 + (5 * (g + np.arange(n))) % 200
        frames = np.zeros((n, size, size, 3))
        frames[..., 0] = level[:, None, None]
        frames[..., 1] = 255 - level[:, None, None]
        frames[..., 2] = 100 + x[..., 0]
        actions = rng.normal(size=(n, action_dim)).astype(np.float32)
        out.append((frames.astype(np.uint8), actions, tasks[e % len(tasks)]))
        g += n
    return out


def write_mp4(path: Path, frames, fps: int, codec: str = "libx264") -> None:
    """H.264 (or mpeg4) yuv420p with a keyframe every 4 frames, so reads exercise seeking."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.gop_size = 4
        stream.options = {"crf": "12"} if codec == "libx264" else {}
        if codec != "libx264":
            stream.bit_rate = 4_000_000
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _png(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _frame_table(frames, actions, episode: int, first: int, task_index: int, fps: int, image_key: str | None):
    n = len(actions)
    cols = {}
    if image_key is not None:
        cols[image_key] = pa.array([{"bytes": _png(f), "path": None} for f in frames], IMAGE_STRUCT)
    cols.update(action=pa.FixedSizeListArray.from_arrays(pa.array(actions.ravel()), actions.shape[1]),
                timestamp=pa.array(np.arange(n) / fps, pa.float32()), frame_index=pa.array(np.arange(n)),
                episode_index=pa.array(np.full(n, episode)), index=pa.array(first + np.arange(n)),
                task_index=pa.array(np.full(n, task_index)))
    return pa.table(cols)


def _features(episodes, image_key: str, video: bool, fps: int) -> dict:
    h, w = episodes[0][0].shape[1:3]
    image = {"dtype": "video" if video else "image", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    if video:
        image["info"] = {"video.fps": float(fps), "video.codec": "h264", "video.pix_fmt": "yuv420p"}
    return {image_key: image,
            "action": {"dtype": "float32", "shape": [episodes[0][1].shape[1]], "names": None},
            **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
               [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
                ("task_index", "int64")]}}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


def write_v21_video(root: Path, episodes, fps: int = 10, image_key: str = IMAGE_KEY) -> Path:
    """LeRobot v2.1 with one MP4 per episode: videos/chunk-000/<key>/episode_XXXXXX.mp4."""
    root = Path(root)
    tasks = list(dict.fromkeys(t for _, _, t in episodes))
    first = 0
    for e, (frames, actions, task) in enumerate(episodes):
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_frame_table(frames, actions, e, first, tasks.index(task), fps, None), path)
        write_mp4(root / f"videos/chunk-000/{image_key}/episode_{e:06d}.mp4", frames, fps)
        first += len(actions)
    _write_json(root / "meta/info.json", dict(
        codebase_version="v2.1", robot_type="panda", total_episodes=len(episodes), total_frames=first,
        total_tasks=len(tasks), total_videos=len(episodes), total_chunks=1, chunks_size=1000, fps=fps,
        splits={"train": f"0:{len(episodes)}"},
        data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        features=_features(episodes, image_key, True, fps)))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [t], "length": len(a)}) + "\n"
        for e, (_, a, t) in enumerate(episodes)))
    (root / "meta/tasks.jsonl").write_text("".join(
        json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))
    return root


def write_v30(root: Path, episodes, fps: int = 10, video: bool = False, image_key: str = IMAGE_KEY,
              episodes_per_file: int = 2) -> Path:
    """LeRobot v3.0: several episodes per data/chunk-000/file-XXX.parquet (and per video file),
    meta/episodes/chunk-000/file-000.parquet, meta/tasks.parquet, meta/stats.json without quantiles."""
    root = Path(root)
    tasks = list(dict.fromkeys(t for _, _, t in episodes))
    rows, first = [], 0
    for f in range(0, len(episodes), episodes_per_file):
        group, tables, t0 = episodes[f:f + episodes_per_file], [], 0.0
        file_index = f // episodes_per_file
        for j, (frames, actions, task) in enumerate(group):
            e, n = f + j, len(actions)
            tables.append(_frame_table(frames, actions, e, first, tasks.index(task), fps, None if video else image_key))
            row = {"episode_index": e, "tasks": [task], "length": n,
                   "data/chunk_index": 0, "data/file_index": file_index,
                   "dataset_from_index": first, "dataset_to_index": first + n,
                   "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            if video:
                row.update({f"videos/{image_key}/chunk_index": 0, f"videos/{image_key}/file_index": file_index,
                            f"videos/{image_key}/from_timestamp": t0, f"videos/{image_key}/to_timestamp": t0 + n / fps})
            rows.append(row)
            first, t0 = first + n, t0 + n / fps
        path = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), path, row_group_size=16)
        if video:
            write_mp4(root / f"videos/{image_key}/chunk-000/file-{file_index:03d}.mp4",
                      np.concatenate([fr for fr, _, _ in group]), fps)
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    pd.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(root / "meta/tasks.parquet")
    acts = np.concatenate([a for _, a, _ in episodes]).astype(np.float64)
    _write_json(root / "meta/stats.json", {"action": dict(min=acts.min(0).tolist(), max=acts.max(0).tolist(),
                                                          mean=acts.mean(0).tolist(), std=acts.std(0).tolist(),
                                                          count=[len(acts)])})
    _write_json(root / "meta/info.json", dict(
        codebase_version="v3.0", robot_type="panda", total_episodes=len(episodes), total_frames=first,
        total_tasks=len(tasks), chunks_size=1000, data_files_size_in_mb=100, video_files_size_in_mb=200, fps=fps,
        splits={"train": f"0:{len(episodes)}"},
        data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if video else None,
        features=_features(episodes, image_key, video, fps)))
    return root
