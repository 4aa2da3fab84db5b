"""LIBERO-10 training data: the official HDF5 demos converted or replayed, OpenVLA's regenerated RLDS set,
or a LeRobot copy read in place. ``docs/libero-data.md`` compares the sources.

HDF5 (``<task>_demo.hdf5``, one file per task, 50 demos each): ``data/demo_N/obs/agentview_rgb``
(T, H, W, 3) uint8 stored upside-down (OpenGL convention) and rotated 180 degrees here so that it
matches the evaluator's frames and the OpenVLA/openpi copies; ``data/demo_N/actions`` (T, 7), already
canonical (gripper -1 open / +1 close); ``data/demo_N/states`` (the simulator states, the first one
replayed from); the instruction is ``problem_info["language_instruction"]``. Files of other suites are
skipped; all 10 tasks must be present.

- ``regenerate: false``: the files' own frames (128 px) and every demo; with ``skip_noops`` the no-op
  actions are dropped by OpenVLA's rule (``replay.is_noop``). Demos are converted one at a time.
- ``regenerate: true``: the set the paper trained on, rebuilt: each demo replayed in the LIBERO simulator
  (``replay.py``, run by ``simulator_python``) at ``camera_size`` px, no-ops removed, the demos whose
  replay does not end with the task done dropped and counted (printed and kept in ``stats.json``).

RLDS (a TFDS folder with ``dataset_info.json``, or a parent of one): OpenVLA's ``libero_10_no_noops``,
converted by ``rlds.py`` in a Python with TensorFlow (``rlds_python``) into a LeRobot copy that ends up
in the data stage's folder (``lerobot/``).

LeRobot (a folder with ``meta/info.json``): the episodes whose task string is one of the 10
LIBERO-10 instructions are selected (openpi's conversion merges four suites into one set); images
and actions are read in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.libero10 import INSTRUCTIONS
from vlm4vla_core.benchmarks.libero10.replay import SETTLE_STEPS, noop_mask, write_npz
from vlm4vla_core.benchmarks.rlds import find_tfds
from vlm4vla_core.config import ConfigError
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter
from vlm4vla_core.episodes.source import write_training_set
from vlm4vla_core.io import atomic_dir, write_text
from vlm4vla_core.progress import progress

FPS = 20  # LIBERO's control frequency
RLDS_COPY = "rlds-lerobot"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().rstrip("."))


TASK_OF = {_norm(t): i for i, t in enumerate(INSTRUCTIONS)}


def import_libero(entry: dict, out: Path, workers: int = 1) -> dict:
    src = Path(entry["data_path"])
    if not src.exists():
        raise ConfigError(f"benchmarks.libero10.data_path: {src} does not exist")
    if (src / "meta" / "info.json").is_file():
        return _from_lerobot(entry, src, out)
    files = sorted(src.glob("*.hdf5"))
    if files:
        return _regenerate(entry, files, out, workers) if entry["regenerate"] else _from_hdf5(entry, files, out)
    tfds_dir = find_tfds(src)
    if tfds_dir is None:
        raise ConfigError(f"benchmarks.libero10.data_path: {src} holds neither a LeRobot dataset (meta/info.json), "
                          "LIBERO *.hdf5 demo files nor an RLDS/TFDS dataset (dataset_info.json)")
    return _from_rlds(entry, tfds_dir, out)


def _subprocess_env() -> dict:
    """The environment of a helper Python: this project found first on its path."""
    here = str(Path(__file__).resolve().parents[3])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))


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


def demo_files(files: list[Path]):
    """``{task: path}`` of the LIBERO-10 demo files (one per task), and the names of the other suites' files."""
    import h5py

    found, skipped = {}, []
    for path in files:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ValueError(f"{path}: no 'data' group (not a LIBERO demo file)")
            task = TASK_OF.get(_norm(_instruction(f, path)))
        if task is None:
            skipped.append(path.name)
        elif task in found:
            raise ValueError(f"{path} and {found[task]}: two demo files of LIBERO-10 task {task} "
                             f"({INSTRUCTIONS[task]})")
        else:
            found[task] = path
    return found, skipped


def replay_requests(found: dict[int, Path]) -> list[dict]:
    """One request per demo, tasks in order and each file's demos in order (demo_0, demo_1, ...): the task,
    the reset index (the demo's position in its file), the demo's first simulator state and its actions."""
    import h5py

    requests = []
    for task, path in sorted(found.items()):
        with h5py.File(path, "r") as f:
            for k, name in enumerate(sorted(f["data"], key=lambda n: int(n.split("_")[-1]))):
                demo = f["data"][name]
                try:
                    actions, state = np.asarray(demo["actions"], np.float64), np.asarray(demo["states"][0], np.float64)
                except KeyError as err:
                    raise ValueError(f"{path}: data/{name} lacks {err.args[0]!r} (states and actions are needed "
                                     "to replay a demo)") from None
                if actions.ndim != 2 or actions.shape[1] != 7 or not len(actions):
                    raise ValueError(f"{path}: data/{name}: actions of shape {actions.shape}, expected [T>0, 7]")
                requests.append(dict(task=task, reset=k, state=state, actions=actions, file=path.name, demo=name))
    return requests


def _requests_key(requests: list[dict], camera_size: int, env_seed: int, settle_steps: int) -> str:
    h = hashlib.sha256(json.dumps([camera_size, env_seed, settle_steps]).encode())
    for r in requests:
        h.update(json.dumps([r["task"], r["reset"], r["file"], r["demo"]]).encode())
        h.update(np.ascontiguousarray(r["state"], np.float64).tobytes())
        h.update(np.ascontiguousarray(r["actions"], np.float64).tobytes())
    return h.hexdigest()[:16]


def _replayed(work: Path, key: str) -> list[dict]:
    """The demos a stopped regeneration of the same requests already took, in order (their kept results
    are in ``work/kept``); an empty list when ``work`` holds another run's or nothing."""
    marker = work / "requests.key"
    if not marker.is_file() or marker.read_text() != key:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        write_text(marker, key)
        return []
    rows = []
    for line in (work / "journal.jsonl").read_text().splitlines() if (work / "journal.jsonl").is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # the line a stopped process was writing
        if row.get("k") != len(rows) or not {"kept", "noops", "file", "demo"} <= row.keys():
            break
        if row["kept"] and not (work / "kept" / f"{len(rows)}.npz").is_file():
            break
        rows.append(row)
    write_text(work / "journal.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def regenerate(requests: list[dict], out: Path, python: str, camera_size: int = 256, env_seed: int = 0,
               settle_steps: int = SETTLE_STEPS, workers: int = 1, **info) -> dict:
    """Replay ``requests`` (``replay_requests``) in ``workers`` simulator processes run by ``python`` and write
    the kept demos, in request order, as the training set ``out`` (frames rotated 180 degrees); ``info``
    goes into stats.json. Prints one line per demo and the count of dropped replays.

    Resumable: each replay taken is journalled in ``<out>.work/`` (a kept one's result moves to
    ``kept/``), so a rerun with the same requests and settings replays only the demos after the last one
    journalled. The LeRobot dataset is written from the kept results at the end.
    """
    work = out.with_name(out.name + ".work")
    rows = _replayed(work, _requests_key(requests, camera_size, env_seed, settle_steps))
    first, R = len(rows), len(requests)
    if first:
        print(f"resuming: {first} of {R} demos already replayed", flush=True)
    (work / "kept").mkdir(exist_ok=True)
    started, procs, cmds = time.time(), [], []
    if first < R:
        arrays = dict(count=R, camera_size=camera_size, env_seed=env_seed, settle_steps=settle_steps)
        for k, r in enumerate(requests):
            arrays.update({f"task_{k}": r["task"], f"reset_{k}": r["reset"], f"state_{k}": r["state"],
                           f"actions_{k}": r["actions"]})
        write_npz(work / "requests.npz", **arrays)
        workers = max(1, min(int(workers), R - first))
        for w in range(workers):
            shutil.rmtree(work / str(w), ignore_errors=True)  # a stopped run's results not taken
        cmds = [[*python.split(), "-m", "vlm4vla_core.benchmarks.libero10.replay", "--requests",
                 str(work / "requests.npz"), "--out", str(work / str(w)), "--worker", str(w), "--workers", str(workers),
                 "--first", str(first)] for w in range(workers)]
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd, env=_subprocess_env()))
        with (work / "journal.jsonl").open("a") as journal:
            for k in range(first, R):
                r, w = requests[k], k % len(procs)
                path, proc = work / str(w) / f"{k}.npz", procs[w]
                while not path.is_file():
                    if proc.poll() is not None and not path.is_file():
                        raise RuntimeError(
                            f"the LIBERO replay stopped before demo {k + 1} of {R} (exit {proc.returncode}, "
                            f"{' '.join(cmds[w])}); it runs in the LIBERO simulator environment: set "
                            "benchmarks.libero10.simulator_python to its Python (envs/setup-libero-venv.sh). "
                            "A rerun continues after the demos already replayed")
                    time.sleep(0.05)
                with np.load(path) as replay:
                    row = dict(k=k, kept=bool(replay["success"]) and len(replay["actions"]) > 0,
                               noops=int(replay["noops"]), file=r["file"], demo=r["demo"])
                if row["kept"]:
                    os.replace(path, work / "kept" / f"{k}.npz")
                else:
                    os.remove(path)
                journal.write(json.dumps(row) + "\n")
                journal.flush()
                rows.append(row)
                print(f"replayed {k + 1}/{R} ({r['file']} {r['demo']}): "
                      f"{'kept' if row['kept'] else 'dropped, task not done at the end'}", flush=True)
        for proc, cmd in zip(procs, cmds):
            if proc.wait() != 0:
                raise RuntimeError(f"the LIBERO replay exited with {proc.returncode} ({' '.join(cmd)})")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.time() - started
    dropped = [f"{row['file']}:{row['demo']}" for row in rows if not row["kept"]]
    noops = sum(row["noops"] for row in rows)
    if len(dropped) == R:
        raise ValueError(f"every one of the {R} replays failed (no demo ends with its task done): no training data")
    print(f"LIBERO-10 regenerated: {R - len(dropped)} of {R} demos kept, {len(dropped)} replays dropped (task not "
          f"done at the end), {noops} no-op steps removed, {seconds:.1f} s with {len(procs)} simulator process(es)",
          flush=True)
    with atomic_dir(out) as tmp:
        with LeRobotWriter(tmp / "lerobot", fps=FPS, action_dim=7, robot_type="panda") as writer:
            for row in rows:
                if row["kept"]:
                    with np.load(work / "kept" / f"{row['k']}.npz") as replay:
                        frames, actions = replay["frames"], replay["actions"]
                    writer.add_episode(list(frames[:, ::-1, ::-1]), actions, INSTRUCTIONS[requests[row["k"]]["task"]])
        stats = write_training_set(tmp, "lerobot", replays=R, replays_dropped=len(dropped), dropped_demos=dropped,
                                   noops_dropped=noops, camera_size=camera_size, env_seed=env_seed,
                                   settle_steps=settle_steps, replay_seconds=round(seconds, 1),
                                   replay_workers=len(procs), resumed_after=first, **info)
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _regenerate(entry: dict, files: list[Path], out: Path, workers: int = 1) -> dict:
    found, skipped = demo_files(files)
    missing = sorted(set(range(len(INSTRUCTIONS))) - set(found))
    if missing:
        raise ValueError(f"{files[0].parent}: no demo file for LIBERO-10 task(s) {missing} "
                         f"({', '.join(INSTRUCTIONS[i] for i in missing)})")
    return regenerate(replay_requests(found), out, entry.get("simulator_python") or sys.executable,
                      entry["camera_size"], entry["env_seed"], workers=workers, source=str(files[0].parent),
                      source_format="libero_hdf5 regenerated", skipped_files=skipped,
                      files={INSTRUCTIONS[t]: p.name for t, p in sorted(found.items())})


def _from_rlds(entry: dict, tfds_dir: Path, out: Path) -> dict:
    """OpenVLA's regenerated RLDS set: converted by ``rlds.py`` in the TensorFlow environment (resumable),
    then its LIBERO-10 episodes selected by instruction; the copy moves into ``out`` as ``lerobot/``."""
    work = out.with_name(out.name + ".work")
    copy = work / RLDS_COPY
    if not (copy / "meta" / "info.json").is_file():
        python = entry.get("rlds_python") or sys.executable
        cmd = [*python.split(), "-m", "vlm4vla_core.benchmarks.libero10.rlds", "--src", str(tfds_dir),
               "--out", str(copy)]
        if subprocess.run(cmd, env=_subprocess_env()).returncode != 0:
            raise RuntimeError(f"the RLDS conversion failed ({' '.join(cmd)}); it needs TensorFlow and "
                               "tensorflow-datasets: set benchmarks.libero10.rlds_python to the Python of "
                               "envs/simpler-data.yaml. A rerun continues where it stopped")
    data = LeRobotDataset(copy, entry.get("image_key"), entry.get("action_key"))
    chosen = [e for e, task in enumerate(data.tasks) if _norm(task) in TASK_OF]
    if not chosen:
        raise ValueError(f"{tfds_dir}: no trajectory has a LIBERO-10 instruction")
    with atomic_dir(out) as tmp:
        os.replace(copy, tmp / "lerobot")
        try:
            stats = write_training_set(tmp, "lerobot", data.image_key, data.action_key, chosen, source=str(tfds_dir),
                                       source_format=f"rlds {tfds_dir}", trajectories=data.num_episodes,
                                       tasks_found=sorted({data.tasks[e] for e in chosen}))
        except BaseException:
            os.replace(tmp / "lerobot", copy)  # keep the finished conversion for a rerun
            raise
    shutil.rmtree(work, ignore_errors=True)
    return stats
