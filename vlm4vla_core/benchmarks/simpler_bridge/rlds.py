"""Bridge V2 RLDS/TFDS original -> a raw LeRobot v2.1 copy (primary camera, state, action, instruction).

``python -m vlm4vla_core.benchmarks.simpler_bridge.rlds --src TFDS_VERSION_DIR --out COPY [--split train]``

Runs in a Python with TensorFlow and tensorflow-datasets (``envs/simpler-data.yaml``), imports numpy,
pyarrow, TensorFlow and tqdm (a tensorflow-datasets dependency) only (no torch). Reads the RAIL
builder's layout (``bridge_dataset`` 1.0.0, placed as ``bridge_orig`` by OpenVLA):
``steps/observation/image_0`` (the fixed camera), ``steps/observation/state`` (xyz, rpy, gripper),
``steps/action`` (xyz and rpy deltas, gripper 1 = open), ``steps/language_instruction``.
Nothing is standardised here: the copy holds every step of every trajectory of the split, in the split's
order, as a LeRobot copy converted from RLDS would; ``data.py`` standardises it as it does any copy.

The images are copied as the encoded bytes the TFRecords hold (JPEG), never decoded and re-encoded.
Episode by episode: each episode's Parquet file lands by rename, then one line in ``meta/journal.jsonl``;
a rerun continues after the last journalled episode (``split[n:]``). ``meta/info.json`` is written last.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlm4vla_core.progress import progress

IMAGE = "observation.images.image_0"
STATE = "observation.state"
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
CHUNKS_SIZE = 1000
FPS = 5
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


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


def _builder(src: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    return tfds.builder_from_directory(str(src))


def _episodes(src: Path, split: str, start: int):
    """(image bytes [T], state [T, S], action [T, 7], instruction, file_path) per trajectory from ``start`` on."""
    import tensorflow_datasets as tfds

    builder = _builder(src)
    decoders = {"steps": {"observation": {"image_0": tfds.decode.SkipDecoding()}}}
    ds = builder.as_dataset(split=f"{split}[{start}:]", decoders=decoders, shuffle_files=False)
    for episode in ds:
        steps = next(iter(episode["steps"].batch(1 << 20)))
        texts = [t.decode() for t in steps["language_instruction"].numpy()]
        meta = episode.get("episode_metadata", {})
        file_path = meta["file_path"].numpy().decode() if "file_path" in meta else ""
        yield (list(steps["observation"]["image_0"].numpy()), steps["observation"]["state"].numpy(),
               steps["action"].numpy(), next((t for t in texts if t.strip()), ""), file_path)


def _image_shape(data: bytes) -> list[int]:
    import tensorflow as tf

    return list(tf.io.decode_image(data, channels=3).shape)


def convert(src: Path, out: Path, split: str = "train") -> dict:
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
    first, shape, state_dim = sum(r["length"] for r in rows), None, None
    if rows:
        shape, state_dim = rows[0]["image_shape"], rows[0]["state_dim"]
        print(f"resuming after {len(rows)} trajectories ({first} steps)", flush=True)
    start = rows[-1]["source_index"] + 1 if rows else 0
    total = _builder(src).info.splits[split].num_examples  # trajectories of the split, from its metadata
    episodes = progress(enumerate(_episodes(src, split, start), start), total=total, initial=start,
                        desc="bridge rlds", unit="trajectories")
    with journal_path.open("a") as journal:
        for source, (images, state, action, text, file_path) in episodes:
            n, e = len(action), len(rows)
            if n == 0:
                continue  # nothing to keep (LeRobot has no empty episodes)
            if action.shape[1] != 7:
                raise ValueError(f"{src}: trajectory {e} has {action.shape[1]}-D actions, Bridge has 7")
            shape = shape or _image_shape(images[0])
            state_dim = state_dim or int(state.shape[1])
            task = tasks.setdefault(text, len(tasks))
            frame = np.arange(n)
            table = pa.table({
                IMAGE: pa.array([{"bytes": bytes(b), "path": None} for b in images], IMAGE_STRUCT),
                STATE: pa.FixedSizeListArray.from_arrays(pa.array(state.astype(np.float32).ravel()), state_dim),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(action.astype(np.float32).ravel()), 7),
                "timestamp": pa.array(frame / FPS, pa.float32()), "frame_index": pa.array(frame),
                "episode_index": pa.array(np.full(n, e)), "index": pa.array(first + frame),
                "task_index": pa.array(np.full(n, task))})
            path = out / DATA_PATH.format(episode_chunk=e // CHUNKS_SIZE, episode_index=e)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            pq.write_table(table, tmp, row_group_size=32)
            os.replace(tmp, path)
            row = dict(episode_index=e, source_index=source, length=n, task=text, file_path=file_path, image_shape=shape,
                       state_dim=state_dim)
            journal.write(json.dumps(row) + "\n")
            journal.flush()
            rows.append(row)
            first += n
    if not rows:
        raise ValueError(f"{src}: split {split!r} has no trajectory")
    E = len(rows)
    (meta / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": r["episode_index"], "tasks": [r["task"]], "length": r["length"]}) + "\n"
        for r in rows))
    (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks.items()))
    scalar = {"dtype": "float32", "shape": [1], "names": None}
    features = {
        IMAGE: {"dtype": "image", "shape": shape, "names": ["height", "width", "channels"]},
        STATE: {"dtype": "float32", "shape": [state_dim], "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
                if state_dim == 7 else None},
        "action": {"dtype": "float32", "shape": [7], "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]},
        "timestamp": scalar, **{k: {**scalar, "dtype": "int64"} for k in
                                ("frame_index", "episode_index", "index", "task_index")}}
    info = dict(codebase_version="v2.1", robot_type="widowx", total_episodes=E, total_frames=first,
                total_tasks=len(tasks), total_videos=0, total_chunks=(E - 1) // CHUNKS_SIZE + 1,
                chunks_size=CHUNKS_SIZE, fps=FPS, splits={"train": f"0:{E}"}, data_path=DATA_PATH, video_path=None,
                features=features, source=dict(format="rlds", path=str(src), split=split))
    _write_json(meta / "info.json", info, indent=4)
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.simpler_bridge.rlds", description=__doc__)
    p.add_argument("--src", required=True, help="TFDS version folder (holds dataset_info.json)")
    p.add_argument("--out", required=True, help="LeRobot copy to write (a partial one is continued)")
    p.add_argument("--split", default="train")
    args = p.parse_args(argv)
    try:
        import tensorflow_datasets  # noqa: F401
    except ModuleNotFoundError as err:
        print(f"error: {err.name} is not installed in {sys.executable}: the RLDS original needs TensorFlow and "
              "tensorflow-datasets (envs/simpler-data.yaml)", file=sys.stderr)
        return 1
    info = convert(Path(args.src), Path(args.out), args.split)
    print(f"wrote {args.out}: {info['total_episodes']} trajectories, {info['total_frames']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
