"""CALVIN training data: the released task_ABC_D converted, or a LeRobot copy of CALVIN.

Native layout (``data_path`` = the ``task_ABC_D`` folder, ``split`` = ``training``):

- ``episode_<digits>.npz``, one per frame (the digit count is read from the first file found, as
  calvin_agent's ``lookup_naming_pattern`` does): ``rgb_static`` uint8 (200, 200, 3) and
  ``rel_actions`` float (7,); the other keys are never read (``np.load`` of an .npz reads members on
  access).
- ``ep_start_end_ids.npy``: the recording segments [start, end]; every language window must lie in one.
- ``lang_annotations/auto_lang_ann.npy`` (a pickled dict): ``language.ann`` and ``info.indx`` (start,
  end), end inclusive.

Samples as the official loaders build them (VLM4VLA's ``DiskCalvinDataset._build_file_indices_lang``):
one training sample per frame of every annotation window, with that window's instruction, and the
actions of the following frames as its chunk. Each window becomes one LeRobot episode (frames start..end,
its instruction as the task), so overlapping windows repeat frames exactly as the official sample list
does, and a chunk never crosses the window's end (the reader repeats the window's last action there;
the official loader masks those steps instead).

Actions: ``rel_actions`` are already CALVIN's relative actions in world frame: xyz displacement x50 and
Euler-xyz displacement x20, clipped to [-1, 1] (one unit = ``max_rel_pos`` 0.02 m / ``max_rel_orn``
0.05 rad in the env), gripper -1 close / +1 open. They are stored unchanged except the gripper, negated
to the layer's canonical sign (+1 closed / -1 open); ``action_to_env`` negates it back.

The conversion streams: a worker holds one window (65 frames) at a time. Windows are converted in
blocks of ``windows_per_block`` by ``workers`` processes, each block into its own LeRobot dataset under
``<out>.staging/`` (written atomically, so a finished block is complete); a run that was interrupted
converts only the blocks that are missing. The blocks are then joined into ``<out>/lerobot`` by
rewriting their index columns (no image is decoded again), and the staging folder is removed.

LeRobot copy (a folder with ``meta/info.json``): read in place when its gripper is already canonical
(``gripper: canonical``); with CALVIN's sign (``gripper: calvin``, the default) its episodes are
rewritten with the gripper negated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vlm4vla_core.config import ConfigError
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter
from vlm4vla_core.episodes.lerobot import V21_DATA, CHUNKS_SIZE, _aggregate, _jsonl, _read_jsonl, _stats, action_summary
from vlm4vla_core.episodes.source import write_training_set
from vlm4vla_core.io import atomic_dir, read_json, write_json
from vlm4vla_core.progress import progress

FPS = 30  # CALVIN's control frequency
IMAGE_KEY = "rgb_static"


def _canonical(rel_actions: np.ndarray) -> np.ndarray:
    from vlm4vla_core.benchmarks.calvin import calvin_to_canonical

    return calvin_to_canonical(rel_actions)


def import_calvin(entry: dict, out: Path, workers: int = 1) -> dict:
    src = Path(entry["data_path"])
    if not src.exists():
        raise ConfigError(f"benchmarks.calvin.data_path: {src} does not exist")
    if (src / "meta" / "info.json").is_file():
        return _from_lerobot(entry, src, out)
    split = src / entry.get("split", "training")
    if not (split / "ep_start_end_ids.npy").is_file():
        raise ConfigError(f"benchmarks.calvin.data_path: {split} has no ep_start_end_ids.npy (neither a task_ABC_D "
                          "folder nor a LeRobot dataset with meta/info.json)")
    return _from_native(entry, split, out, workers)


# -- native task_ABC_D ----------------------------------------------------------------------------
def frame_digits(folder: Path) -> int:
    """Digits of the frame files' index (``episode_0000123.npz`` -> 7), from the first one found."""
    with os.scandir(folder) as it:
        for item in it:
            name = item.name
            if name.startswith("episode_") and name.endswith(".npz") and name[8:-4].isdigit():
                return len(name) - 12
    raise ValueError(f"{folder}: no episode_<digits>.npz frame files")


def windows(split: Path, lang_folder: str = "lang_annotations") -> list[tuple[int, int, str]]:
    """The language windows (start, end inclusive, instruction) in annotation order, each checked to lie in
    one recording segment of ep_start_end_ids.npy."""
    path = split / lang_folder / "auto_lang_ann.npy"
    if not path.is_file():
        raise ValueError(f"{path}: missing (the language annotations)")
    ann = np.load(path, allow_pickle=True).item()
    try:
        texts, indx = list(ann["language"]["ann"]), [tuple(map(int, w)) for w in ann["info"]["indx"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: no language.ann / info.indx ({err})") from None
    if len(texts) != len(indx) or not indx:
        raise ValueError(f"{path}: {len(texts)} instructions for {len(indx)} windows")
    segments = np.asarray(np.load(split / "ep_start_end_ids.npy"), dtype=np.int64).reshape(-1, 2)
    for (start, end), text in zip(indx, texts):
        if end < start or not ((segments[:, 0] <= start) & (end <= segments[:, 1])).any():
            raise ValueError(f"{path}: window ({start}, {end}) '{text}' is not inside one segment of ep_start_end_ids.npy")
    return [(s, e, t) for (s, e), t in zip(indx, texts)]


def _read_window(split: Path, digits: int, start: int, end: int) -> tuple[list[np.ndarray], np.ndarray]:
    images, actions = [], []
    for i in range(start, end + 1):
        path = split / f"episode_{i:0{digits}d}.npz"
        try:
            with np.load(path) as frame:
                images.append(np.asarray(frame["rgb_static"], dtype=np.uint8))
                actions.append(np.asarray(frame["rel_actions"], dtype=np.float32))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: cannot read rgb_static / rel_actions ({err})") from None
    actions = np.stack(actions)
    if actions.shape[1] != 7 or not np.isin(actions[:, 6], (-1.0, 1.0)).all():
        raise ValueError(f"{split}: frames {start}..{end}: rel_actions must be 7-D with the gripper -1 or +1")
    return images, _canonical(actions)


def _convert_block(args) -> int:
    split, digits, block, items, folder = args
    if (Path(folder) / "meta" / "info.json").is_file():
        return block
    with LeRobotWriter(folder, fps=FPS, action_dim=7, image_key=IMAGE_KEY, robot_type="panda") as writer:
        for start, end, text in items:
            images, actions = _read_window(Path(split), digits, start, end)
            writer.add_episode(images, actions, text)
    return block


def _key(split: Path, wins: list, per_block: int) -> str:
    h = hashlib.sha256(json.dumps([str(split.resolve()), per_block, wins]).encode()).hexdigest()
    return h[:16]


def _from_native(entry: dict, split: Path, out: Path, workers: int) -> dict:
    wins = windows(split, entry.get("lang_folder", "lang_annotations"))
    digits = frame_digits(split)
    per_block = int(entry.get("windows_per_block", 256))
    staging = out.with_name(out.name + ".staging")
    key = _key(split, wins, per_block)
    if staging.exists() and (not (staging / "key").is_file() or (staging / "key").read_text() != key):
        shutil.rmtree(staging)  # another source or block size: not ours
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "key").write_text(key)
    blocks = [(str(split), digits, b, wins[i:i + per_block], str(staging / f"block_{b:05d}"))
              for b, i in enumerate(range(0, len(wins), per_block))]
    todo = [b for b in blocks if not (Path(b[4]) / "meta" / "info.json").is_file()]
    print(f"calvin import: {len(wins)} windows in {len(blocks)} blocks, {len(blocks) - len(todo)} already converted, "
          f"{len(todo)} to convert with {workers} worker(s)", flush=True)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in progress(pool.map(_convert_block, todo), total=len(todo), desc="calvin import",
                              unit="blocks"):
                pass
    else:
        for b in progress(todo, desc="calvin import", unit="blocks"):
            _convert_block(b)
    with atomic_dir(out) as tmp:
        _join([Path(b[4]) for b in blocks], tmp / "lerobot")
        stats = write_training_set(tmp, "lerobot", source=str(split), source_format="calvin task_ABC_D",
                                   windows=len(wins), frame_digits=digits, windows_per_block=per_block,
                                   gripper="canonical (+1 closed): rel_actions gripper negated",
                                   arm="rel_actions unchanged: world frame, xyz x50, euler xyz x20, clipped to [-1, 1]")
    shutil.rmtree(staging)
    return stats


def _join(parts: list[Path], root: Path) -> None:
    """Join LeRobot v2.1 datasets written by LeRobotWriter into one: data files copied with their
    episode_index, index and task_index columns renumbered; metadata and statistics rebuilt."""
    import pyarrow as pa

    root.mkdir(parents=True)
    info = read_json(parts[0] / "meta" / "info.json")
    tasks: dict[str, int] = {}
    episodes, ep_stats, actions = [], [], []
    e = first = 0
    for part in parts:
        part_info = read_json(part / "meta" / "info.json")
        names = {int(t["task_index"]): t["task"] for t in _read_jsonl(part / "meta" / "tasks.jsonl")}
        stats_of = {int(s["episode_index"]): s["stats"] for s in _read_jsonl(part / "meta" / "episodes_stats.jsonl")}
        for ep in sorted(_read_jsonl(part / "meta" / "episodes.jsonl"), key=lambda x: x["episode_index"]):
            local, n = int(ep["episode_index"]), int(ep["length"])
            path = part / part_info["data_path"].format(episode_chunk=local // CHUNKS_SIZE, episode_index=local)
            table = pq.read_table(path)
            text = names[int(table.column("task_index")[0].as_py())]
            task = tasks.setdefault(text, len(tasks))
            frame = np.arange(n)
            table = table.set_column(table.schema.get_field_index("episode_index"), "episode_index", pa.array(np.full(n, e)))
            table = table.set_column(table.schema.get_field_index("index"), "index", pa.array(first + frame))
            table = table.set_column(table.schema.get_field_index("task_index"), "task_index", pa.array(np.full(n, task)))
            dest = root / V21_DATA.format(episode_chunk=e // CHUNKS_SIZE, episode_index=e)
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, dest, row_group_size=pq.ParquetFile(path).metadata.row_group(0).num_rows)
            actions.append(np.asarray(table.column("action").to_pylist(), dtype=np.float32))
            stats = stats_of[local]
            f = frame[:, None]
            stats.update(episode_index=_stats(f * 0 + e), index=_stats(first + f), task_index=_stats(f * 0 + task))
            ep_stats.append({"episode_index": e, "stats": stats})
            episodes.append({"episode_index": e, "tasks": [text], "length": n})
            e, first = e + 1, first + n
    meta = root / "meta"
    info.update(total_episodes=e, total_frames=first, total_tasks=len(tasks), total_chunks=(e - 1) // CHUNKS_SIZE + 1,
                splits={"train": f"0:{e}"})
    write_json(meta / "info.json", info, indent=4)
    _jsonl(meta / "episodes.jsonl", episodes)
    _jsonl(meta / "tasks.jsonl", ({"task_index": i, "task": t} for t, i in tasks.items()))
    _jsonl(meta / "episodes_stats.jsonl", ep_stats)
    arrays = [{k: {s: np.asarray(v) for s, v in d.items()} for k, d in s["stats"].items()} for s in ep_stats]
    total = _aggregate(arrays)
    total["action"].update(action_summary(np.concatenate(actions)))
    write_json(meta / "stats.json", total, indent=4)


# -- LeRobot copy -------------------------------------------------------------------------------------
def _from_lerobot(entry: dict, src: Path, out: Path) -> dict:
    data = LeRobotDataset(src, entry.get("image_key"), entry.get("action_key"))
    if data.action_dim != 7:
        raise ValueError(f"{src}: {data.action_key!r} has {data.action_dim} dimensions, CALVIN actions have 7")
    if entry.get("gripper", "calvin") == "canonical":
        with atomic_dir(out) as tmp:
            return write_training_set(tmp, str(src.resolve()), data.image_key, data.action_key, None,
                                      source=str(src), source_format=f"lerobot {data.version}", gripper="canonical")
    starts = np.r_[0, np.cumsum(data.episode_lengths)[:-1]]
    with atomic_dir(out) as tmp:
        with LeRobotWriter(tmp / "lerobot", fps=data.fps, action_dim=7, image_key=IMAGE_KEY, robot_type="panda") as w:
            for ep, (s, n) in progress(enumerate(zip(starts, data.episode_lengths)), total=len(starts),
                                       desc="calvin import", unit="episodes"):
                acts = data.action_chunk(int(s), int(n))
                if not np.isin(acts[:, 6], (-1.0, 1.0)).all():
                    raise ValueError(f"{src}: episode {ep}: gripper values other than -1/+1 (gripper: calvin expects "
                                     "CALVIN's rel_actions sign)")
                w.add_episode((data.frame(int(s) + t)[0] for t in range(int(n))), _canonical(acts), data.tasks[ep])
        return write_training_set(tmp, "lerobot", source=str(src), source_format=f"lerobot {data.version}",
                                  gripper="canonical (+1 closed): the copy's CALVIN gripper negated")
