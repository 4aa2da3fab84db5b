"""Bridge V2 training data, standardised as the official code trains on it (see ``convert.py``).

Two sources (``data_path``):

- **A LeRobot copy** (a folder with ``meta/info.json``, v2.0/v2.1/v3.0; e.g. IPEC-COMMUNITY's
  ``bridge_orig_lerobot``: videos ``observation.images.image_0..3``, ``observation.state``, ``action``).
  The frames are read in place from the primary camera (``image_key``, default ``image_0``). The
  standardised actions are computed from the copy's state and action columns (no video is decoded)
  and stored beside the manifest (``actions.npy``), which selects for each kept episode its raw
  frames 1 .. T-2 (``frames``).
- **The RLDS/TFDS original** (``bridge_dataset`` / ``bridge_orig``: a folder with ``dataset_info.json``
  and TFRecord shards, or a parent of one). ``rlds.py`` first converts it, in a Python with TensorFlow
  and tensorflow-datasets (``rlds_python``), into a LeRobot v2.1 copy with the same keys (primary
  camera only, its encoded JPEG bytes kept as they are); that copy then goes the first way and ends up
  in the data stage's folder (``lerobot/``).

Kept trajectories: those with a language instruction (``skip_unlabeled``, as VLM4VLA's loader) and at
least 3 steps (fewer leave no frame after dropping the first and the last). The counts of skipped
trajectories, and of kept ones whose first action is not all zeros (a copy that already dropped it
would be cut twice), are in ``stats.json``.

Streamed and resumable: the work goes on in ``<out>.work/`` beside the output (the RLDS conversion
episode by episode with a journal; the standardisation into a memory-mapped ``actions.npy`` with a
progress marker every ``FLUSH_EVERY`` trajectories), so an interrupted data stage continues where it
stopped; memory holds one trajectory's columns plus the episode index. The output folder appears in
one rename at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.rlds import find_tfds
from vlm4vla_core.benchmarks.simpler_bridge.convert import standardize_trajectory
from vlm4vla_core.config import ConfigError
from vlm4vla_core.episodes import LeRobotDataset
from vlm4vla_core.episodes.source import write_training_set
from vlm4vla_core.io import atomic_dir, read_json, write_json
from vlm4vla_core.progress import progress as counter

FPS = 5
FLUSH_EVERY = 500
ACTIONS = "actions.npy"
RLDS_COPY = "rlds-lerobot"


def import_bridge(entry: dict, out: Path) -> dict:
    src = Path(entry["data_path"])
    if not src.exists():
        raise ConfigError(f"benchmarks.simpler_bridge.data_path: {src} does not exist")
    work = out.with_name(out.name + ".work")
    if (src / "meta" / "info.json").is_file():
        return _standardize(entry, src, work, out, copy_in_out=False, source_format="lerobot")
    tfds_dir = find_tfds(src)
    if tfds_dir is None:
        raise ConfigError(f"benchmarks.simpler_bridge.data_path: {src} holds neither a LeRobot copy (meta/info.json) "
                          "nor an RLDS/TFDS dataset (dataset_info.json)")
    copy = work / RLDS_COPY
    if not (copy / "meta" / "info.json").is_file():
        convert_rlds(entry, tfds_dir, copy)
    return _standardize(entry, copy, work, out, copy_in_out=True, source_format=f"rlds {tfds_dir}")


def convert_rlds(entry: dict, tfds_dir: Path, copy: Path) -> None:
    """Run ``rlds.py`` in the TensorFlow environment (resumable: it continues a partial ``copy``)."""
    python = entry.get("rlds_python") or sys.executable
    cmd = [*python.split(), "-m", "vlm4vla_core.benchmarks.simpler_bridge.rlds", "--src", str(tfds_dir),
           "--out", str(copy), "--split", entry["split"]]
    here = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"the RLDS conversion failed ({' '.join(cmd)}, exit {res.returncode}); it needs TensorFlow "
                           "and tensorflow-datasets: set benchmarks.simpler_bridge.rlds_python to the Python of "
                           "envs/simpler-data.yaml. A rerun continues where it stopped")


def _fingerprint(data: LeRobotDataset, entry: dict) -> str:
    h = hashlib.sha256(json.dumps([str(data.root.resolve()), data.image_key, entry["state_key"], data.action_key,
                                   data.episode_lengths.tolist(), data.tasks]).encode())
    return h.hexdigest()[:16]


def _standardize(entry: dict, root: Path, work: Path, out: Path, copy_in_out: bool, source_format: str) -> dict:
    data = LeRobotDataset(root, entry["image_key"], entry["action_key"])
    state = LeRobotDataset(root, entry["image_key"], entry["state_key"])  # its "actions" are the state column
    if data.action_dim != 7:
        raise ValueError(f"{root}: {data.action_key!r} has {data.action_dim} dimensions, Bridge actions have 7")
    if state.action_dim < 6:
        raise ValueError(f"{root}: {state.action_key!r} has {state.action_dim} dimensions, need xyz and rpy first")
    lengths = data.episode_lengths
    labelled = np.array([bool(t.strip()) for t in data.tasks])
    kept = np.flatnonzero(labelled & (lengths >= 3))
    if not len(kept):
        raise ValueError(f"{root}: no trajectory has a language instruction and at least 3 steps")
    out_len = lengths[kept] - 2
    total, starts = int(out_len.sum()), np.r_[0, np.cumsum(lengths)[:-1]]
    offsets = np.r_[0, np.cumsum(out_len)[:-1]]

    work.mkdir(parents=True, exist_ok=True)
    progress_file, actions_file = work / "progress.json", work / ACTIONS
    key = _fingerprint(data, entry)
    progress = read_json(progress_file) if progress_file.is_file() else {}
    if progress.get("key") == key and actions_file.is_file():
        actions = np.lib.format.open_memmap(actions_file, mode="r+")
        done, nonzero_first = int(progress["done"]), int(progress["nonzero_first"])
        print(f"resuming: {done} of {len(kept)} trajectories already standardised", flush=True)
    else:
        actions = np.lib.format.open_memmap(actions_file, mode="w+", dtype=np.float32, shape=(total, 7))
        done, nonzero_first = 0, 0
    for j in counter(range(done, len(kept)), initial=done, total=len(kept), desc="bridge import",
                      unit="trajectories"):
        e = int(kept[j])
        raw = data.action_chunk(int(starts[e]), int(lengths[e]))
        actions[offsets[j]:offsets[j] + out_len[j]] = standardize_trajectory(
            state.action_chunk(int(starts[e]), int(lengths[e])), raw)
        nonzero_first += bool(np.any(raw[0] != 0))
        if (j + 1) % FLUSH_EVERY == 0 or j + 1 == len(kept):
            actions.flush()
            write_json(progress_file, dict(key=key, done=j + 1, nonzero_first=nonzero_first))
    del actions

    info = dict(source=str(entry["data_path"]), source_format=source_format, lerobot_copy=f"{data.version}",
                trajectories=int(len(lengths)), kept=int(len(kept)), skipped_unlabeled=int((~labelled).sum()),
                skipped_short=int((labelled & (lengths < 3)).sum()), kept_first_action_not_zero=nonzero_first,
                standardization="drop step 0; gripper binarized (>0.95 open, <0.05 closed, in-between -> next "
                                "settled); arm = state[t+1,:6]-state[t,:6]; drop the last step; gripper +1 closed",
                state_key=state.action_key, fps=data.fps)
    frames = [[1, int(n) - 1] for n in lengths[kept]]
    with atomic_dir(out) as tmp:
        os.replace(actions_file, tmp / ACTIONS)
        moved = None
        if copy_in_out:
            moved = tmp / "lerobot"
            os.replace(root, moved)
        try:
            stats = write_training_set(tmp, "lerobot" if copy_in_out else str(root.resolve()), data.image_key,
                                       data.action_key, kept.tolist(), frames=frames, actions=ACTIONS, **info)
        except BaseException:
            os.replace(tmp / ACTIONS, actions_file)  # keep the finished work for a rerun
            if moved is not None:
                os.replace(moved, root)
            raise
    shutil.rmtree(work, ignore_errors=True)
    return stats
