"""LIBERO-10 training data: the official HDF5 demos converted, or a LeRobot copy read in place.

HDF5 (``<task>_demo.hdf5``, one file per task, 50 demos each): ``data/demo_N/obs/agentview_rgb``
(T, H, W, 3) uint8 stored upside-down (OpenGL convention) and rotated 180 degrees here so that it
matches the evaluator's frames and the OpenVLA/openpi copies; ``data/demo_N/actions`` (T, 7), already
canonical (gripper -1 open / +1 close); the instruction is ``problem_info["language_instruction"]``.
With ``skip_noops`` the no-op actions are dropped as OpenVLA's regeneration drops them (arm norm
< 1e-4 and the gripper command unchanged). Files of other suites are skipped; all 10 tasks must
be present. Demos are converted one at a time (memory holds one demo).

LeRobot (a folder with ``meta/info.json``): the episodes whose task string is one of the 10
LIBERO-10 instructions are selected (openpi's conversion merges four suites into one set); images
and actions are read in place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.libero10 import INSTRUCTIONS
from vlm4vla_core.config import ConfigError
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter
from vlm4vla_core.episodes.source import write_training_set
from vlm4vla_core.io import atomic_dir
from vlm4vla_core.progress import progress

FPS = 20  # LIBERO's control frequency


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().rstrip("."))


TASK_OF = {_norm(t): i for i, t in enumerate(INSTRUCTIONS)}


def noop_mask(actions: np.ndarray) -> np.ndarray:
    """True for the steps OpenVLA's regeneration drops: arm norm < 1e-4 and the gripper as the step before."""
    arm_still = np.linalg.norm(actions[:, :6], axis=1) < 1e-4
    same_grip = np.r_[False, actions[1:, 6] == actions[:-1, 6]]
    return arm_still & same_grip


def import_libero(entry: dict, out: Path) -> dict:
    src = Path(entry["data_path"])
    if not src.exists():
        raise ConfigError(f"benchmarks.libero10.data_path: {src} does not exist")
    if (src / "meta" / "info.json").is_file():
        return _from_lerobot(entry, src, out)
    files = sorted(src.glob("*.hdf5"))
    if not files:
        raise ConfigError(f"benchmarks.libero10.data_path: {src} holds neither a LeRobot dataset (meta/info.json) "
                          "nor LIBERO *.hdf5 demo files")
    return _from_hdf5(entry, files, out)


def _instruction(f, path: Path) -> str:
    try:
        return json.loads(f["data"].attrs["problem_info"])["language_instruction"]
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: data.attrs['problem_info'] has no language_instruction ({err})") from None


def _from_hdf5(entry: dict, files: list[Path], out: Path) -> dict:
    import h5py

    found, skipped, frames, dropped = {}, [], 0, 0
    with atomic_dir(out) as tmp:
        with LeRobotWriter(tmp / "lerobot", fps=FPS, action_dim=7, robot_type="panda") as writer:
            for path in progress(files, desc="libero import", unit="files"):
                with h5py.File(path, "r") as f:
                    if "data" not in f:
                        raise ValueError(f"{path}: no 'data' group (not a LIBERO demo file)")
                    text = _instruction(f, path)
                    task = TASK_OF.get(_norm(text))
                    if task is None:
                        skipped.append(path.name)
                        continue
                    found[task] = path.name
                    demos = sorted(f["data"], key=lambda k: int(k.split("_")[-1]))
                    for name in demos:
                        demo = f["data"][name]
                        try:
                            images, actions = demo["obs"]["agentview_rgb"], np.asarray(demo["actions"], np.float32)
                        except KeyError as err:
                            raise ValueError(f"{path}: data/{name} lacks {err.args[0]!r} "
                                             "(obs/agentview_rgb and actions are needed)") from None
                        if actions.ndim != 2 or actions.shape[1] != 7 or len(actions) != len(images):
                            raise ValueError(f"{path}: data/{name}: actions {actions.shape} do not match "
                                             f"{len(images)} agentview frames of 7-D actions")
                        keep = ~noop_mask(actions) if entry["skip_noops"] else np.ones(len(actions), bool)
                        dropped += int((~keep).sum())
                        rgb = np.asarray(images)[keep][:, ::-1, ::-1]  # upside-down in the file: rotate 180 degrees
                        writer.add_episode(list(rgb), actions[keep], INSTRUCTIONS[task])
                        frames += int(keep.sum())
        missing = sorted(set(range(len(INSTRUCTIONS))) - set(found))
        if missing:
            raise ValueError(f"{files[0].parent}: no demo file for LIBERO-10 task(s) {missing} "
                             f"({', '.join(INSTRUCTIONS[i] for i in missing)})")
        return write_training_set(tmp, "lerobot", source=str(files[0].parent), source_format="libero_hdf5",
                                  files={INSTRUCTIONS[t]: n for t, n in sorted(found.items())}, skipped_files=skipped,
                                  skip_noops=entry["skip_noops"], noops_dropped=dropped)


def _from_lerobot(entry: dict, src: Path, out: Path) -> dict:
    data = LeRobotDataset(src, entry.get("image_key"), entry.get("action_key"))
    if data.action_dim != 7:
        raise ValueError(f"{src}: {data.action_key!r} has {data.action_dim} dimensions, LIBERO actions have 7")
    chosen = [e for e, task in enumerate(data.tasks) if _norm(task) in TASK_OF]
    if not chosen:
        raise ValueError(f"{src}: no episode has a LIBERO-10 instruction as its task")
    with atomic_dir(out) as tmp:
        return write_training_set(tmp, str(src.resolve()), data.image_key, data.action_key, chosen,
                                  source=str(src), source_format=f"lerobot {data.version}",
                                  tasks_found=sorted({data.tasks[e] for e in chosen}))
