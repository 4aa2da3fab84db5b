"""An RLDS/TFDS dataset -> a raw LeRobot v2.1 copy (one camera, state, action, instruction).

Shared by the benchmarks whose official training data is an RLDS release; each plug-in's ``rlds.py``
names its ``Layout`` (which camera, which state, the control rate) and calls ``main``. Runs in a Python
with TensorFlow and tensorflow-datasets, importing numpy, pyarrow and TensorFlow only (no torch).

Read: ``steps/observation/<image>``, ``steps/observation/<state>``, ``steps/action``,
``steps/language_instruction`` (the first non-empty one of a trajectory) and
``episode_metadata/file_path`` when present. Nothing is standardised: the copy holds every step of
every trajectory of the split, in the split's order. The images are copied as the encoded bytes the
TFRecords hold (JPEG), never decoded and re-encoded (every image feature is read undecoded).
Episode by episode: each episode's Parquet file lands by rename, then one line in
``meta/journal.jsonl``; a rerun continues after the last journalled episode (``split[n:]``).
``meta/info.json`` is written last.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
CHUNKS_SIZE = 1000
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
STATE = "observation.state"


@dataclass(frozen=True)
class Layout:
    """What a benchmark's RLDS release holds: the camera and state features kept, the action size,
    the control rate written as the copy's fps, the robot and the names of the state's dimensions."""

    name: str
    image: str
    state: str
    fps: int
    robot_type: str
    action_dim: int = 7
    state_names: tuple[str, ...] | None = None

    @property
    def image_key(self) -> str:
        return f"observation.images.{self.image}"


def find_tfds(src: Path) -> Path | None:
    """The TFDS version folder (holding dataset_info.json) at ``src`` or up to two levels below it."""
    for depth in range(3):
        hits = sorted(Path(src).glob("/".join(["*"] * depth + ["dataset_info.json"])))
        if hits:
            return hits[-1].parent  # the highest version when several are there
    return None


def _write_json(path: Path, obj, indent=None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    os.replace(tmp, path)


def _journal(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # the line a stopped process was writing
            if row.get("episode_index") != len(rows):
                break
            rows.append(row)
    return rows


def _episodes(src: Path, split: str, start: int, layout: Layout):
    """(image bytes [T], state [T, S], action [T, A], instruction, file_path) per trajectory from ``start`` on."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    builder = tfds.builder_from_directory(str(src))
    observation = builder.info.features["steps"]["observation"]
    for key in (layout.image, layout.state):
        if key not in observation:
            raise ValueError(f"{src}: steps/observation has no {key!r} (it has {', '.join(observation.keys())}); "
                             f"not a {layout.name} RLDS release")
    images = [k for k, f in observation.items() if isinstance(f, tfds.features.Image)]
    decoders = {"steps": {"observation": {k: tfds.decode.SkipDecoding() for k in images}}}
    ds = builder.as_dataset(split=f"{split}[{start}:]", decoders=decoders, shuffle_files=False)
    for episode in ds:
        steps = next(iter(episode["steps"].batch(1 << 20)))
        texts = [t.decode() for t in steps["language_instruction"].numpy()]
        meta = episode.get("episode_metadata", {})
        file_path = meta["file_path"].numpy().decode() if "file_path" in meta else ""
        yield (list(steps["observation"][layout.image].numpy()), steps["observation"][layout.state].numpy(),
               steps["action"].numpy(), next((t for t in texts if t.strip()), ""), file_path)


def _image_shape(data: bytes) -> list[int]:
    import tensorflow as tf

    return list(tf.io.decode_image(data, channels=3).shape)


def convert(src: Path, out: Path, layout: Layout, split: str = "train") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "meta"
    meta.mkdir(exist_ok=True)
    if (meta / "info.json").is_file():
        return json.loads((meta / "info.json").read_text())
    journal_path = meta / "journal.jsonl"
    rows = _journal(journal_path)
    journal_path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # drop a torn last line
    tasks = {}
    for r in rows:
        tasks.setdefault(r["task"], len(tasks))
    first, shape, state_dim, A = sum(r["length"] for r in rows), None, None, layout.action_dim
    if rows:
        shape, state_dim = rows[0]["image_shape"], rows[0]["state_dim"]
        print(f"resuming after {len(rows)} trajectories ({first} steps)", flush=True)
    start = rows[-1]["source_index"] + 1 if rows else 0
    with journal_path.open("a") as journal:
        for source, (images, state, action, text, file_path) in enumerate(_episodes(src, split, start, layout), start):
            n, e = len(action), len(rows)
            if n == 0:
                continue  # nothing to keep (LeRobot has no empty episodes)
            if action.shape[1] != A:
                raise ValueError(f"{src}: trajectory {e} has {action.shape[1]}-D actions, {layout.name} has {A}")
            shape = shape or _image_shape(images[0])
            state_dim = state_dim or int(state.shape[1])
            task = tasks.setdefault(text, len(tasks))
            frame = np.arange(n)
            table = pa.table({
                layout.image_key: pa.array([{"bytes": bytes(b), "path": None} for b in images], IMAGE_STRUCT),
                STATE: pa.FixedSizeListArray.from_arrays(pa.array(state.astype(np.float32).ravel()), state_dim),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(action.astype(np.float32).ravel()), A),
                "timestamp": pa.array(frame / layout.fps, pa.float32()), "frame_index": pa.array(frame),
                "episode_index": pa.array(np.full(n, e)), "index": pa.array(first + frame),
                "task_index": pa.array(np.full(n, task))})
            path = out / DATA_PATH.format(episode_chunk=e // CHUNKS_SIZE, episode_index=e)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            pq.write_table(table, tmp, row_group_size=32)
            os.replace(tmp, path)
            row = dict(episode_index=e, source_index=source, length=n, task=text, file_path=file_path,
                       image_shape=shape, state_dim=state_dim)
            journal.write(json.dumps(row) + "\n")
            journal.flush()
            rows.append(row)
            first += n
            if e % 1000 == 0:
                print(f"{e + 1} trajectories, {first} steps", flush=True)
    if not rows:
        raise ValueError(f"{src}: split {split!r} has no trajectory")
    E = len(rows)
    (meta / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": r["episode_index"], "tasks": [r["task"]], "length": r["length"]}) + "\n"
        for r in rows))
    (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                              for t, i in tasks.items()))
    scalar = {"dtype": "float32", "shape": [1], "names": None}
    names = list(layout.state_names) if layout.state_names and len(layout.state_names) == state_dim else None
    features = {
        layout.image_key: {"dtype": "image", "shape": shape, "names": ["height", "width", "channels"]},
        STATE: {"dtype": "float32", "shape": [state_dim], "names": names},
        "action": {"dtype": "float32", "shape": [A], "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
                   if A == 7 else None},
        "timestamp": scalar, **{k: {**scalar, "dtype": "int64"} for k in
                                ("frame_index", "episode_index", "index", "task_index")}}
    info = dict(codebase_version="v2.1", robot_type=layout.robot_type, total_episodes=E, total_frames=first,
                total_tasks=len(tasks), total_videos=0, total_chunks=(E - 1) // CHUNKS_SIZE + 1,
                chunks_size=CHUNKS_SIZE, fps=layout.fps, splits={"train": f"0:{E}"}, data_path=DATA_PATH,
                video_path=None, features=features, source=dict(format="rlds", path=str(src), split=split))
    _write_json(meta / "info.json", info, indent=4)
    return info


def main(layout: Layout, prog: str, doc: str | None, env_file: str, argv: list[str] | None = None) -> int:
    """The command line of a plug-in's ``rlds.py``: ``--src TFDS_VERSION_DIR --out COPY [--split train]``."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--src", required=True, help="TFDS version folder (holds dataset_info.json)")
    p.add_argument("--out", required=True, help="LeRobot copy to write (a partial one is continued)")
    p.add_argument("--split", default="train")
    args = p.parse_args(argv)
    try:
        import tensorflow_datasets  # noqa: F401
    except ModuleNotFoundError as err:
        print(f"error: {err.name} is not installed in {sys.executable}: the RLDS original needs TensorFlow and "
              f"tensorflow-datasets ({env_file})", file=sys.stderr)
        return 1
    info = convert(Path(args.src), Path(args.out), layout, args.split)
    print(f"wrote {args.out}: {info['total_episodes']} trajectories, {info['total_frames']} steps")
    return 0
