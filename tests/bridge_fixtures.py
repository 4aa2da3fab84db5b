"""Tiny Bridge V2 datasets in the native layouts: a LeRobot v2.0 copy with one MP4 per camera and
episode (as the bridge_orig LeRobot conversions), and the RLDS/TFDS original written by a TFDS builder
with the RAIL builder's features (needs TensorFlow, so it runs in the Python given)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lerobot_fixtures import write_mp4

FPS = 5
NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]


def trajectories(lengths, unlabeled=(), size=16, seed=0):
    """[dict(image_0, image_1 [T, H, W, 3] uint8, state [T, 7], action [T, 7], task)]. Frame t of
    trajectory e has flat colour (level, 255 - level, 40 * camera) with level = 10 + 7 * (global step
    % 34), so a frame read back (from video or JPEG) names its step. Actions: all zeros at step 0 and at
    the last step (as the RAIL builder appends), gripper 1 / 0 with an in-between value at step 2."""
    rng, out, g = np.random.default_rng(seed), [], 0
    for e, n in enumerate(lengths):
        level = 10 + 7 * ((g + np.arange(n)) % 34)
        cams = {}
        for c in (0, 1):
            frames = np.zeros((n, size, size, 3), np.uint8)
            frames[..., 0], frames[..., 1], frames[..., 2] = level[:, None, None], 255 - level[:, None, None], 40 * c
            cams[f"image_{c}"] = frames
        state = np.cumsum(rng.normal(scale=0.01, size=(n, 7)), axis=0).astype(np.float32)
        state[:, 6] = rng.uniform(size=n)
        action = rng.normal(scale=0.01, size=(n, 7)).astype(np.float32)
        action[:, 6] = (np.arange(n) < n // 2).astype(np.float32)  # open, then closed
        if n > 3:
            action[2, 6] = 0.5  # in between: takes the next settled value
        action[0], action[-1] = 0, 0
        task = "" if e in unlabeled else ("put the spoon on the towel" if e % 2 else "put carrot on plate")
        out.append(dict(**cams, state=state, action=action, task=task))
        g += n
    return out


def write_lerobot_v20(root: Path, trajs, state_dim: int = 7) -> Path:
    """LeRobot v2.0 as the Bridge conversions lay it out: videos observation.images.image_0/1, observation.state,
    action, one Parquet and one MP4 per camera per episode. ``state_dim`` 8 inserts a pad before the gripper."""
    root = Path(root)
    tasks = list(dict.fromkeys(t["task"] for t in trajs))
    first = 0
    for e, t in enumerate(trajs):
        n = len(t["action"])
        state = t["state"] if state_dim == 7 else np.insert(t["state"], 6, 0.0, axis=1)
        table = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), state_dim),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(t["action"].ravel()), 7),
            "timestamp": pa.array(np.arange(n) / FPS, pa.float32()), "frame_index": pa.array(np.arange(n)),
            "episode_index": pa.array(np.full(n, e)), "index": pa.array(first + np.arange(n)),
            "task_index": pa.array(np.full(n, tasks.index(t["task"])))})
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        for c in ("image_0", "image_1"):
            write_mp4(root / f"videos/chunk-000/observation.images.{c}/episode_{e:06d}.mp4", t[c], FPS)
        first += n
    h, w = trajs[0]["image_0"].shape[1:3]
    video = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channel"],
             "info": {"video.fps": float(FPS), "video.codec": "h264", "video.pix_fmt": "yuv420p"}}
    features = {"observation.images.image_0": video, "observation.images.image_1": video,
                "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
                "action": {"dtype": "float32", "shape": [7], "names": NAMES},
                **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
                   [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                    ("index", "int64"), ("task_index", "int64")]}}
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(dict(
        codebase_version="v2.0", robot_type="widowx", total_episodes=len(trajs), total_frames=first,
        total_tasks=len(tasks), total_videos=2 * len(trajs), total_chunks=1, chunks_size=1000, fps=FPS,
        splits={"train": f"0:{len(trajs)}"},
        data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        features=features), indent=4))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [t["task"]], "length": len(t["action"])}) + "\n"
        for e, t in enumerate(trajs)))
    (root / "meta/tasks.jsonl").write_text("".join(
        json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))
    return root


_BUILDER = '''
import sys
import numpy as np
import tensorflow_datasets as tfds

data = np.load(sys.argv[1], allow_pickle=False)
count, size = int(data["count"]), int(data["size"])
image = lambda: tfds.features.Image(shape=(size, size, 3), dtype=np.uint8, encoding_format="jpeg")


class BridgeDataset(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": tfds.features.FeaturesDict({
                    "image_0": image(), "image_1": image(),
                    "state": tfds.features.Tensor(shape=(7,), dtype=np.float32)}),
                "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                "discount": tfds.features.Scalar(dtype=np.float32),
                "reward": tfds.features.Scalar(dtype=np.float32),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                "language_instruction": tfds.features.Text()}),
            "episode_metadata": tfds.features.FeaturesDict({
                "file_path": tfds.features.Text(),
                "has_language": tfds.features.Scalar(dtype=np.bool_)})}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(count))}

    def _generate_examples(self, episodes):
        for e in episodes:
            n, task = len(data[f"action{e}"]), str(data[f"task{e}"])
            steps = [dict(observation=dict(image_0=data[f"image_0_{e}"][i], image_1=data[f"image_1_{e}"][i],
                                           state=data[f"state{e}"][i]),
                          action=data[f"action{e}"][i], discount=1.0, reward=float(i == n - 1), is_first=i == 0,
                          is_last=i == n - 1, is_terminal=i == n - 1, language_instruction=task)
                     for i in range(n)]
            yield f"{e:05d}", dict(steps=steps, episode_metadata=dict(file_path=f"raw/traj{e}", has_language=bool(task)))


BridgeDataset(data_dir=sys.argv[2]).download_and_prepare()
'''


def write_rlds(python: str, root: Path, trajs) -> Path:
    """The TFDS dataset ``bridge_dataset/1.0.0`` under ``root`` (written with ``python``, which has TensorFlow)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = dict(count=len(trajs), size=trajs[0]["image_0"].shape[1])
    for e, t in enumerate(trajs):
        arrays.update({f"image_0_{e}": t["image_0"], f"image_1_{e}": t["image_1"], f"state{e}": t["state"],
                       f"action{e}": t["action"], f"task{e}": np.array(t["task"])})
    np.savez(root / "trajs.npz", **arrays)
    (root / "builder.py").write_text(textwrap.dedent(_BUILDER))
    res = subprocess.run([*python.split(), str(root / "builder.py"), str(root / "trajs.npz"), str(root / "tfds")],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"writing the RLDS fixture failed:\n{res.stderr[-3000:]}")
    return root / "tfds" / "bridge_dataset" / "1.0.0"


def tf_python() -> str | None:
    """A Python with tensorflow-datasets for the RLDS importer tests: VLM4VLA_TF_PYTHON, or this one if it has it."""
    python = os.environ.get("VLM4VLA_TF_PYTHON")
    if python:
        return python
    probe = subprocess.run([sys.executable, "-c", "import tensorflow_datasets"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None
