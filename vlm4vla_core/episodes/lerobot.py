"""LeRobot datasets on disk: a writer (v2.1, PNG frames inside Parquet) and a reader (v2.0, v2.1, v3.0).

Writer: ``LeRobotWriter(root, fps, action_dim)``, then ``add_episode(images, actions, task)`` per
episode and ``close()``. Everything goes into a temporary sibling folder that replaces ``root`` in
one rename on close, so a reader never sees a half-written dataset.

Reader: ``LeRobotDataset(root)`` keeps only the episode index in memory (lengths, which file and row
or video timestamp each episode starts at). Frames come from Parquet row groups (PNG/JPEG bytes in
an HF ``Image`` struct) or from MP4 files (PyAV: seek to the keyframe before the timestamp, decode
forward), through per-process LRU caches: decoded frames up to ``frame_cache_mb``, the row groups
read (as Python lists, each read once) up to as many frames as that, the actions of every episode
(4 bytes x action_dim per frame), ``cache_size`` open files. Global frame ``i`` counts frames over
the episodes in ``episode_index`` order. Pickling keeps only the root and keys: a worker process
reopens it.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlm4vla_core.io import atomic_dir, clean, read_json, write_json, write_text

VERSIONS = ("v2.0", "v2.1", "v3.0")
CHUNKS_SIZE = 1000  # episodes per chunk folder (v2.x), files per chunk folder (v3.0)
ROW_GROUP = 32  # frames per Parquet row group written: one random read decodes at most this many rows
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V3_EPISODES = "meta/episodes"
STAT_KEYS = ("q01", "q99", "min", "max", "mean", "std")
CACHES = ("files", "groups", "actions", "videos")  # per process; sizes in LeRobotDataset._cache_slots
FRAMES = "frames"  # decoded frames, per process, at most frame_cache_mb of them
INDEX_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets' Image storage
_INHERITED = []  # caches a forked process inherited from its parent: kept, never freed


def _stats(x: np.ndarray) -> dict:
    """min/max/mean/std/count over the rows of ``x`` [N, D]."""
    x = x.astype(np.float64)
    return dict(min=x.min(0), max=x.max(0), mean=x.mean(0), std=x.std(0), count=np.array([len(x)]))


def _aggregate(per_episode: list[dict]) -> dict:
    """Dataset stats from per-episode stats: count-weighted means, pooled variances."""
    out = {}
    for key in per_episode[0]:
        s = [e[key] for e in per_episode]
        n = np.array([e["count"][0] for e in s], dtype=np.float64)
        mean = np.stack([e["mean"] for e in s])
        w = n.reshape(-1, *[1] * (mean.ndim - 1)) / n.sum()
        mu = (w * mean).sum(0)
        var = (w * (np.stack([e["std"] for e in s]) ** 2 + (mean - mu) ** 2)).sum(0)
        out[key] = dict(min=np.min([e["min"] for e in s], 0), max=np.max([e["max"] for e in s], 0),
                        mean=mu, std=np.sqrt(var), count=np.array([int(n.sum())]))
    return out


def action_summary(actions: np.ndarray) -> dict:
    """Per-dimension q01/q99/min/max/mean/std of actions [N, A] (float64)."""
    a = np.asarray(actions, dtype=np.float64)
    q01, q99 = np.quantile(a, [0.01, 0.99], axis=0)
    return dict(q01=q01, q99=q99, min=a.min(0), max=a.max(0), mean=a.mean(0), std=a.std(0))


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)  # lossless; level 1 writes fast
    return buf.getvalue()


def _jsonl(path: Path, rows) -> None:
    write_text(path, "".join(json.dumps(clean(r), allow_nan=False) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise ValueError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON lines ({err})") from None


class LRU(OrderedDict):
    """At most ``size`` entries; the least recently used is dropped (and closed) first."""

    def __init__(self, size: int):
        super().__init__()
        self.size = max(1, int(size))

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            old = self.popitem(last=False)[1]
            if hasattr(old, "close"):
                old.close()
        return value


# -- writer --------------------------------------------------------------------
class LeRobotWriter:
    """Write a LeRobot v2.1 dataset, one episode at a time (frames stream to Parquet row groups)."""

    def __init__(self, root, fps: int, action_dim: int, image_key: str = "observation.image",
                 image_shape: tuple[int, int, int] | None = None, robot_type: str | None = None):
        self.root, self.fps, self.action_dim, self.image_key = Path(root), int(fps), int(action_dim), image_key
        self.image_shape, self.robot_type = tuple(image_shape) if image_shape else None, robot_type
        self.lengths, self.episode_tasks, self.task_ids, self.actions, self.episode_stats = [], [], {}, [], []
        hf = {self.image_key: {"_type": "Image"},
              "action": {"feature": {"dtype": "float32", "_type": "Value"}, "length": self.action_dim,
                         "_type": "Sequence"},
              **{k: {"dtype": f["dtype"], "_type": "Value"} for k, f in INDEX_FEATURES.items()}}
        self.schema = pa.schema(
            [(self.image_key, IMAGE_STRUCT), ("action", pa.list_(pa.float32(), self.action_dim))]
            + [(k, pa.float32() if f["dtype"] == "float32" else pa.int64()) for k, f in INDEX_FEATURES.items()],
            metadata={"huggingface": json.dumps({"info": {"features": hf}})})
        self._dir = atomic_dir(self.root)
        self.tmp = self._dir.__enter__()
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is None:
            self.close()
        else:
            self.abort()

    def _check_image(self, image, episode: int, t: int) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"episode {episode} frame {t}: image must be HxWx3 uint8, got {image.dtype} {image.shape}")
        self.image_shape = self.image_shape or image.shape
        if image.shape != self.image_shape:
            raise ValueError(f"episode {episode} frame {t}: image shape {image.shape} != {self.image_shape}")
        return image

    def add_episode(self, images, actions, task: str) -> None:
        """images: a sequence or iterator of HxWx3 uint8 frames; actions: [T, action_dim]; one task string."""
        if self.closed:
            raise ValueError(f"{self.root}: writer is closed")
        actions = np.asarray(actions, dtype=np.float32)
        ep, T, first = len(self.lengths), len(actions), sum(self.lengths)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or T == 0:
            raise ValueError(f"episode {ep}: actions must be [T>0, {self.action_dim}], got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError(f"episode {ep}: actions hold non-finite values")
        task_index = self.task_ids.get(task, len(self.task_ids))
        path = self.tmp / V21_DATA.format(episode_chunk=ep // CHUNKS_SIZE, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        pix = np.zeros((4, 3))  # per channel: sum, sum of squares, min, max (of values in [0, 1])
        pix[2], t, batch = np.inf, 0, []

        def flush():
            nonlocal t
            n, frames = len(batch), np.stack(batch)
            px = frames.reshape(-1, 3) / 255.0
            pix[0] += px.sum(0)
            pix[1] += (px**2).sum(0)
            pix[2], pix[3] = np.minimum(pix[2], px.min(0)), np.maximum(pix[3], px.max(0))
            frame = np.arange(t, t + n)
            cols = [pa.array([{"bytes": _png(f), "path": None} for f in frames], IMAGE_STRUCT),
                    pa.FixedSizeListArray.from_arrays(pa.array(actions[t:t + n].ravel()), self.action_dim),
                    pa.array(frame / self.fps, pa.float32()), pa.array(frame), pa.array(np.full(n, ep)),
                    pa.array(first + frame), pa.array(np.full(n, task_index))]
            out.write_table(pa.Table.from_arrays(cols, schema=self.schema), row_group_size=ROW_GROUP)
            t += n
            batch.clear()

        try:
            with pq.ParquetWriter(path, self.schema) as out:
                for image in images:
                    if t + len(batch) >= T:
                        raise ValueError(f"episode {ep}: more images than its {T} actions")
                    batch.append(self._check_image(image, ep, t + len(batch)))
                    if len(batch) == ROW_GROUP:
                        flush()
                if batch:
                    flush()
            if t != T:
                raise ValueError(f"episode {ep}: {t} images for {T} actions")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self.task_ids[task] = task_index
        mean = pix[0] / (T * self.image_shape[0] * self.image_shape[1])
        std = np.sqrt(np.maximum(pix[1] / (T * self.image_shape[0] * self.image_shape[1]) - mean**2, 0))
        frame = np.arange(T)[:, None]
        self.episode_stats.append({
            self.image_key: {k: v.reshape(3, 1, 1) for k, v in dict(min=pix[2], max=pix[3], mean=mean, std=std).items()}
            | {"count": np.array([T])},
            "action": _stats(actions),
            "timestamp": _stats(frame / self.fps), "frame_index": _stats(frame),
            "episode_index": _stats(frame * 0 + ep), "index": _stats(first + frame),
            "task_index": _stats(frame * 0 + task_index)})
        self.lengths.append(T)
        self.episode_tasks.append(task)
        self.actions.append(actions)

    def close(self) -> dict:
        """Write the metadata and move the dataset into place; returns meta/info.json's content."""
        if self.closed:
            raise ValueError(f"{self.root}: writer is closed")
        if not self.lengths:
            self.abort()
            raise ValueError(f"{self.root}: no episodes were added")
        E, N = len(self.lengths), sum(self.lengths)
        features = {
            self.image_key: {"dtype": "image", "shape": list(self.image_shape),
                             "names": ["height", "width", "channels"]},
            "action": {"dtype": "float32", "shape": [self.action_dim],
                       "names": [f"a{i}" for i in range(self.action_dim)]},
            **INDEX_FEATURES}
        info = dict(codebase_version="v2.1", robot_type=self.robot_type, total_episodes=E, total_frames=N,
                    total_tasks=len(self.task_ids), total_videos=0, total_chunks=(E - 1) // CHUNKS_SIZE + 1,
                    chunks_size=CHUNKS_SIZE, fps=self.fps, splits={"train": f"0:{E}"}, data_path=V21_DATA,
                    video_path=None, features=features)
        meta = self.tmp / "meta"
        write_json(meta / "info.json", info, indent=4)
        _jsonl(meta / "episodes.jsonl", ({"episode_index": i, "tasks": [task], "length": n}
                                         for i, (task, n) in enumerate(zip(self.episode_tasks, self.lengths))))
        _jsonl(meta / "tasks.jsonl", ({"task_index": i, "task": task} for task, i in self.task_ids.items()))
        _jsonl(meta / "episodes_stats.jsonl",
               ({"episode_index": i, "stats": s} for i, s in enumerate(self.episode_stats)))
        stats = _aggregate(self.episode_stats)
        stats["action"].update(action_summary(np.concatenate(self.actions)))
        write_json(meta / "stats.json", stats, indent=4)
        self.closed = True
        self._dir.__exit__(None, None, None)
        return info

    def abort(self) -> None:
        """Drop everything written so far; ``root`` is left as it was."""
        if not self.closed:
            self.closed = True
            self._dir.__exit__(RuntimeError, RuntimeError("aborted"), None)


# -- reader --------------------------------------------------------------------
class _Parquet:
    """An open Parquet file with the first row of each row group."""

    def __init__(self, path: Path, rows_needed: int):
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as err:
            raise ValueError(f"{path}: cannot read Parquet ({err})") from None
        meta = self.file.metadata
        self.offsets = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        if self.offsets[-1] < rows_needed:
            raise ValueError(f"{path}: {self.offsets[-1]} rows, the episode index needs {rows_needed}")

    def close(self):
        self.file.close()


class _Video:
    """An open video file; reads the frame at a timestamp by decoding forward from the last frame read
    when that is just behind it, otherwise from a seek to the keyframe at or before it."""

    def __init__(self, path: Path):
        import av

        try:
            self.container = av.open(str(path))
            self.stream = self.container.streams.video[0]
        except (av.FFmpegError, IndexError) as err:
            raise ValueError(f"{path}: cannot open video ({err})") from None
        self.path, self.frames, self.last = path, None, None

    def frame(self, t: float, tol: float) -> np.ndarray:
        import av

        if self.last is not None and abs(self.last.time - t) <= tol:
            return self.last.to_ndarray(format="rgb24")
        try:
            if self.last is None or not self.last.time < t <= self.last.time + 1.0:
                self.container.seek(max(0, int(t / self.stream.time_base)), stream=self.stream, backward=True)
                self.frames = self.container.decode(self.stream)
            for frame in self.frames:
                self.last = frame
                if frame.time >= t - tol:
                    if frame.time > t + tol:
                        break
                    return frame.to_ndarray(format="rgb24")
        except av.FFmpegError as err:
            self.last = None
            raise ValueError(f"{self.path}: cannot decode the frame at {t:.4f}s ({err})") from None
        self.last = None
        raise ValueError(f"{self.path}: no frame at {t:.4f}s")

    def close(self):
        self.container.close()


def _pick(features: dict, wanted: str | None, kind: str, where: Path) -> str:
    """The image key (kind "image": dtype image/video) or the action key among ``features``."""
    if kind == "image":
        names = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
        if wanted is None and names:
            return names[0]
        hits = [k for k in names if k == wanted] or [k for k in names if k.endswith(f".{wanted}")]  # "image"
        if len(hits) == 1:
            return hits[0]
        raise ValueError(f"{where}: features has no image key {wanted or '(any)'!r} (image/video features: {names})")
    for key in [wanted] if wanted else ["action", "actions"]:
        if key in features:
            return key
    raise ValueError(f"{where}: features has no action key {wanted or 'action'!r} (features: {sorted(features)})")


def _actions(column, dim: int, where: str) -> np.ndarray:
    """A list column (one action per row) as float32 [rows, dim]."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not any(is_list(column.type) for is_list in (pa.types.is_list, pa.types.is_large_list,
                                                     pa.types.is_fixed_size_list)):
        raise ValueError(f"{where}: is {column.type}, not a list of {dim} floats")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if flat.size != len(column) * dim:
        raise ValueError(f"{where}: rows do not hold {dim} values each")
    return flat.astype(np.float32).reshape(-1, dim)


class LeRobotDataset:
    """A local LeRobot v2.0/v2.1/v3.0 dataset, read frame by frame with bounded memory."""

    def __init__(self, root, image_key: str | None = None, action_key: str | None = None, cache_size: int = 8,
                 frame_cache_mb: int = 256):
        self.root, self.cache_size, self.frame_cache_mb = Path(root), int(cache_size), int(frame_cache_mb)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise ValueError(f"{info_path}: not found (not a LeRobot dataset)")
        info = read_json(info_path)
        self.version = info.get("codebase_version")
        if self.version not in VERSIONS:
            raise ValueError(f"{info_path}: codebase_version {self.version!r} is not supported ({', '.join(VERSIONS)})")
        for key in ("fps", "features", "data_path"):
            if key not in info:
                raise ValueError(f"{info_path}: missing key {key!r}")
        self.fps, features = int(info["fps"]), info["features"]
        self.image_key = _pick(features, image_key, "image", info_path)
        self.action_key = _pick(features, action_key, "action", info_path)
        shape = features[self.action_key].get("shape")
        if not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
            raise ValueError(f"{info_path}: features.{self.action_key}.shape is {shape}, not [action_dim]")
        self.action_dim = shape[0]
        self.is_video = features[self.image_key]["dtype"] == "video"
        shape = features[self.image_key].get("shape")
        self._image_shape = tuple(shape) if isinstance(shape, list) and len(shape) == 3 else None
        if self.is_video and not info.get("video_path"):
            raise ValueError(f"{info_path}: {self.image_key!r} is a video feature but 'video_path' is missing")
        (self._index_v3 if self.version == "v3.0" else self._index_v2)(info)
        self.num_episodes, self.num_frames = len(self.episode_lengths), int(self.episode_lengths.sum())
        self._starts = np.r_[0, np.cumsum(self.episode_lengths)[:-1]]
        rows = np.zeros(len(self._files), dtype=np.int64)
        np.maximum.at(rows, self._ep_file, self._ep_row + self.episode_lengths)
        self._rows_needed = rows
        for path in map(self.root.joinpath, self._files):
            if not path.is_file():
                raise ValueError(f"{path}: missing (data file)")
        for path in map(self.root.joinpath, self._videos):
            if not path.is_file():
                raise ValueError(f"{path}: missing (video of {self.image_key!r})")
        self._pid, self._stats, self._group_rows = None, None, ROW_GROUP  # _check_columns reads the group size
        self._check_columns()

    # -- episode index ------------------------------------------------------
    def _index_v2(self, info: dict) -> None:
        meta, size = self.root / "meta", int(info.get("chunks_size", CHUNKS_SIZE))
        episodes = sorted(_read_jsonl(meta / "episodes.jsonl"), key=lambda e: e.get("episode_index", -1))
        try:
            self._task_names = {int(t["task_index"]): t["task"] for t in _read_jsonl(meta / "tasks.jsonl")}
            ids = [int(e["episode_index"]) for e in episodes]
            self.episode_lengths = np.array([int(e["length"]) for e in episodes], dtype=np.int64)
            self.tasks = [e["tasks"][0] if e.get("tasks") else "" for e in episodes]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{meta / 'episodes.jsonl'} or tasks.jsonl: bad or missing key {err}") from None
        if not ids:
            raise ValueError(f"{meta / 'episodes.jsonl'}: no episodes")
        self._files = [info["data_path"].format(episode_chunk=i // size, episode_index=i) for i in ids]
        self._ep_file, self._ep_row = np.arange(len(ids)), np.zeros(len(ids), dtype=np.int64)
        if self.is_video:
            self._videos = [info["video_path"].format(episode_chunk=i // size, video_key=self.image_key,
                                                      episode_index=i) for i in ids]
            self._ep_video, self._ep_t0 = np.arange(len(ids)), np.zeros(len(ids))
        else:
            self._videos = []

    def _index_v3(self, info: dict) -> None:
        folder = self.root / V3_EPISODES
        files = sorted(folder.glob("chunk-*/file-*.parquet"))
        if not files:
            raise ValueError(f"{folder}: no chunk-*/file-*.parquet episode files")
        video = [f"videos/{self.image_key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
        cols = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                "dataset_from_index", "dataset_to_index"] + (video if self.is_video else [])
        parts = []
        for path in files:
            try:
                schema = pq.read_schema(path)
                missing = [c for c in cols if c not in schema.names]
                if missing:
                    raise ValueError(f"{path}: missing column(s) {missing}")
                parts.append(pq.read_table(path, columns=cols).to_pydict())
            except (OSError, pa.ArrowException) as err:
                raise ValueError(f"{path}: cannot read Parquet ({err})") from None
        ep = {c: [v for p in parts for v in p[c]] for c in cols}
        order = np.argsort(ep["episode_index"], kind="stable")
        ep = {c: [v[i] for i in order] for c, v in ep.items()}
        self.episode_lengths = np.array(ep["length"], dtype=np.int64)
        lo, hi = np.array(ep["dataset_from_index"]), np.array(ep["dataset_to_index"])
        if not np.array_equal(hi - lo, self.episode_lengths):
            raise ValueError(f"{folder}: dataset_to_index - dataset_from_index != length")
        self.tasks = [t[0] if t else "" for t in ep["tasks"]]
        names = [info["data_path"].format(chunk_index=c, file_index=f)
                 for c, f in zip(ep["data/chunk_index"], ep["data/file_index"])]
        self._files = list(dict.fromkeys(names))
        where = {n: j for j, n in enumerate(self._files)}
        self._ep_file = np.array([where[n] for n in names])
        first = np.full(len(self._files), np.iinfo(np.int64).max)
        np.minimum.at(first, self._ep_file, lo)
        self._ep_row = lo - first[self._ep_file]  # rows of a file hold its episodes contiguously
        if self.is_video:
            vids = [info["video_path"].format(video_key=self.image_key, chunk_index=c, file_index=f)
                    for c, f in zip(ep[video[0]], ep[video[1]])]
            self._videos = list(dict.fromkeys(vids))
            where = {v: j for j, v in enumerate(self._videos)}
            self._ep_video = np.array([where[v] for v in vids])
            self._ep_t0 = np.array(ep[video[2]], dtype=np.float64)
        else:
            self._videos = []
        tasks = self.root / "meta" / "tasks.parquet"
        try:
            df = pq.read_table(tasks).to_pandas()
            self._task_names = dict(zip(df["task_index"].astype(int), df["task"] if "task" in df else df.index))
        except (OSError, pa.ArrowException, KeyError) as err:
            raise ValueError(f"{tasks}: cannot read task_index/task ({err})") from None

    def _check_columns(self) -> None:
        """The first data file opens and has the columns this reader needs, with actions of action_dim."""
        path = self.root / self._files[0]
        schema = self._parquet(0).file.schema_arrow
        need = [self.action_key, "timestamp" if self.is_video else self.image_key]
        for key in need:
            if key not in schema.names:
                raise ValueError(f"{path}: no column {key!r}")
        kind = schema.field(self.action_key).type
        if pa.types.is_fixed_size_list(kind) and kind.list_size != self.action_dim:
            raise ValueError(f"{path}: column {self.action_key!r} holds {kind.list_size} values per row, "
                             f"meta/info.json says {self.action_dim}")
        self._frame_cols = need[1:] + (["task_index"] if "task_index" in schema.names else [])
        self._group_rows = max(1, int(np.diff(self._parquet(0).offsets).max(initial=1)))
        self._episode_actions(0)
        self._pid, self._caches, self._offsets = None, None, {}  # caches start on first use, in any process

    # -- per-process caches -------------------------------------------------
    def _cache(self, name: str) -> LRU:
        if self._pid != os.getpid():  # first use, or a forked worker: start with empty caches of its own
            if self._pid is not None:  # the parent's decoders hold its threads' locks: freeing them here hangs
                _INHERITED.append(self._caches)
            self._pid, self._caches = os.getpid(), {n: LRU(k) for n, k in self._cache_slots().items()}
            self._offsets = {}  # per file: the first row of each row group (kept; a few integers per file)
        return self._caches[name]

    def _cache_slots(self) -> dict[str, int]:
        """Entries each cache may hold: ``cache_size`` open files and videos; the actions of every episode
        (a random batch touches most episodes; they are 4 bytes x action_dim per frame); row groups for as
        many frames as the decoded-frame cache holds (by the first file's largest group) (compressed, so at most as many bytes) and at least
        ``cache_size``; decoded frames up to ``frame_cache_mb``."""
        frames = self._frame_slots()
        return dict(files=self.cache_size, groups=max(self.cache_size, -(-frames // self._group_rows)),
                    actions=max(self.cache_size, self.num_episodes), videos=self.cache_size, frames=frames)

    def cache_sizes(self) -> dict[str, int]:
        """Entries held per cache: open Parquet files, row groups, episodes' actions, open videos."""
        return {name: len(self._cache(name)) for name in CACHES}

    def _frame_slots(self) -> int:
        """How many decoded frames fit in ``frame_cache_mb`` (a small training set stays decoded, as if in RAM)."""
        shape = self._image_shape if self._image_shape else (256, 256, 3)
        return max(1, self.frame_cache_mb * 2**20 // int(np.prod(shape)))

    def _parquet(self, f: int) -> _Parquet:
        return self._cache("files").get_or(f, lambda: _Parquet(self.root / self._files[f], self._rows_needed[f]))

    def __getstate__(self):
        return dict(root=str(self.root), image_key=self.image_key, action_key=self.action_key,
                    cache_size=self.cache_size, frame_cache_mb=self.frame_cache_mb)

    def __setstate__(self, state):
        self.__init__(**state)

    # -- access -------------------------------------------------------------
    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range (0..{self.num_frames - 1})")
        e = int(np.searchsorted(self._starts, i, side="right")) - 1
        return e, int(i - self._starts[e])

    def _row(self, e: int, t: int) -> dict:
        f, row = int(self._ep_file[e]), int(self._ep_row[e]) + t
        self._cache("files")  # a forked process starts its own caches
        if f not in self._offsets:
            self._offsets[f] = self._parquet(f).offsets
        offsets = self._offsets[f]
        g = int(np.searchsorted(offsets, row, side="right")) - 1

        def read():  # the group's columns as Python lists: converted once, not per row
            try:
                table = self._parquet(f).file.read_row_group(g, columns=self._frame_cols)
            except (OSError, pa.ArrowException, KeyError) as err:
                raise ValueError(f"{self.root / self._files[f]}: cannot read row group {g} ({err})") from None
            return {c: table.column(c).to_pylist() for c in self._frame_cols}

        group = self._cache("groups").get_or((f, g), read)
        return {c: group[c][row - int(offsets[g])] for c in self._frame_cols}

    def _image(self, value: dict | None, e: int) -> np.ndarray:
        data = (value or {}).get("bytes")
        try:
            data = data or (self.root / value["path"]).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, TypeError, KeyError) as err:
            raise ValueError(f"{self.root / self._files[self._ep_file[e]]}: column {self.image_key!r}: "
                             f"cannot decode image ({err})") from None

    def frame(self, i: int) -> tuple[np.ndarray, str]:
        """The image (HxWx3 uint8) and task of global frame ``i``."""
        return self._cache(FRAMES).get_or(int(i), lambda: self._decode(int(i)))

    def _decode(self, i: int) -> tuple[np.ndarray, str]:
        e, t = self._locate(i)
        row = self._row(e, t)
        if self.is_video:
            v = int(self._ep_video[e])
            video = self._cache("videos").get_or(v, lambda: _Video(self.root / self._videos[v]))
            image = video.frame(self._ep_t0[e] + row["timestamp"], 0.5 / self.fps)
        else:
            image = self._image(row[self.image_key], e)
        image.setflags(write=False)  # shared through the cache
        return image, self._task_names.get(row.get("task_index"), self.tasks[e])

    def _episode_actions(self, e: int) -> np.ndarray:
        def read():
            f, lo = int(self._ep_file[e]), int(self._ep_row[e])
            pf, n = self._parquet(f), int(self.episode_lengths[e])
            groups = list(range(int(np.searchsorted(pf.offsets, lo, "right")) - 1,
                                int(np.searchsorted(pf.offsets, lo + n, "left"))))
            where = f"{self.root / self._files[f]}: column {self.action_key!r}"
            try:
                table = pf.file.read_row_groups(groups, columns=[self.action_key])
            except (OSError, pa.ArrowException) as err:
                raise ValueError(f"{where}: cannot read ({err})") from None
            return _actions(table.column(0).slice(lo - int(pf.offsets[groups[0]]), n), self.action_dim, where)

        return self._cache("actions").get_or(e, read)

    def action_chunk(self, i: int, k: int) -> np.ndarray:
        """Actions of frames i..i+k-1 (float32 [k, A]); past the episode's end its last action repeats."""
        e, t = self._locate(i)
        actions = self._episode_actions(e)
        return actions[np.minimum(np.arange(t, t + k), len(actions) - 1)]

    def action_stats(self) -> dict[str, np.ndarray]:
        """Per-dimension q01/q99/min/max/mean/std of the actions: from meta/stats.json when it has the
        quantiles, else from one pass over the action columns (the actions alone are held in memory)."""
        if self._stats is None:
            path = self.root / "meta" / "stats.json"
            saved = read_json(path).get(self.action_key, {}) if path.is_file() else {}
            if all(k in saved for k in STAT_KEYS):
                self._stats = {k: np.asarray(saved[k], dtype=np.float64).reshape(self.action_dim) for k in STAT_KEYS}
            else:
                actions = np.empty((self.num_frames, self.action_dim), dtype=np.float32)
                for f, name in enumerate(self._files):
                    eps = np.flatnonzero(self._ep_file == f)
                    where = f"{self.root / name}: column {self.action_key!r}"
                    try:
                        column = pq.read_table(self.root / name, columns=[self.action_key]).column(0)
                    except (OSError, pa.ArrowException) as err:
                        raise ValueError(f"{where}: cannot read ({err})") from None
                    file_actions = _actions(column, self.action_dim, where)
                    for e in eps:
                        s, n, r = self._starts[e], self.episode_lengths[e], self._ep_row[e]
                        actions[s:s + n] = file_actions[r:r + n]
                    del file_actions
                self._stats = action_summary(actions)
        return self._stats

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"LeRobotDataset({str(self.root)!r}, {self.version}, {self.num_episodes} episodes, "
                f"{self.num_frames} frames, image {self.image_key!r}{' (video)' if self.is_video else ''}, "
                f"action {self.action_key!r} [{self.action_dim}])")
