"""CALVIN simulator side: scene D of calvin_env and its task oracle.

Runs inside the CALVIN simulator environment (``envs/setup-calvin-venv.sh VENV_DIR CALVIN_ENV_SRC`` or
``envs/calvin.yaml``) and imports numpy, calvin_env, hydra/omegaconf and the protocol module only
(never torch).

The scene is built the official way when the dataset is there: ``PlayTableSimEnv`` instantiated from
``<task_ABC_D>/validation/.hydra/merged_config.yaml`` as ``calvin_env.envs.play_table_env.get_env``
does (scene D, the robot, cameras and rates the validation data was rendered with). Without the dataset
the same env is composed from calvin_env's own conf, as CALVIN's RL notebook does:
``config_data_collection`` with ``cameras=static_and_gripper`` and its default ``scene=calvin_scene_D``,
no GUI, no VR, scene info on. ``scene_source`` records which; ``tools/calvin_scene_diff.py``
compares the two configurations.

Either way only the static camera is kept (``get_env``'s ``obs_space`` does the same; the policy sees
``rgb_static`` alone, and the gripper and tactile cameras cost render time and, with tacto, can blank
the EGL images). Rendering is lazy: ``step`` runs the env's own ``step`` with the camera list emptied,
and ``render()`` draws the static camera of the current state only when the policy re-plans. Rendering
reads the state and does not change it, so the rollout is the same as rendering every step.

EGL: ``egl_device`` (or ``EGL_VISIBLE_DEVICES`` if already set) picks the device pybullet's EGL plugin
renders on; ``"auto"`` maps the first entry of ``CUDA_VISIBLE_DEVICES`` (each evaluation shard is a job
with its own GPU) and otherwise leaves the plugin's default (device 0, or Mesa on a CPU machine).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlm4vla_core.benchmarks.calvin.protocol import task_definitions

ACTION_DIM = 7
COMPOSED = "calvin_env conf: config_data_collection, cameras=static_and_gripper, scene=calvin_scene_D"
_SETUP = ("set up the CALVIN simulator environment with `envs/setup-calvin-venv.sh VENV_DIR CALVIN_ENV_SRC` "
          "(or envs/calvin.yaml) and point the benchmark's simulator_python at its Python")


def set_egl_device(choice: Any = "auto") -> str | None:
    """Set EGL_VISIBLE_DEVICES for pybullet's EGL plugin before the env connects; returns the value used."""
    if choice not in (None, "auto"):
        os.environ["EGL_VISIBLE_DEVICES"] = str(int(choice))
    elif "EGL_VISIBLE_DEVICES" not in os.environ:
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if first.isdigit():
            os.environ["EGL_VISIBLE_DEVICES"] = first
    return os.environ.get("EGL_VISIBLE_DEVICES")


def calvin_env_conf_dir() -> Path:
    """calvin_env's own ``conf`` folder (next to the package in a source checkout or editable install)."""
    try:
        import calvin_env
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"calvin_env is not installed in this Python: {_SETUP}") from None
    if getattr(calvin_env, "__file__", None) is None:  # a folder named calvin_env on sys.path shadows the package
        raise ModuleNotFoundError(f"calvin_env resolves to a namespace folder {list(calvin_env.__path__)}, not the "
                                  "installed package: run from another directory")
    conf = Path(calvin_env.__file__).resolve().parents[1] / "conf"
    if not (conf / "config_data_collection.yaml").is_file():
        raise FileNotFoundError(f"{conf}: no config_data_collection.yaml; install calvin_env from a source copy "
                                "(`pip install -e`), whose conf/ folder the composed scene needs")
    return conf


def composed_config():
    """The env config composed from calvin_env's conf (no dataset needed); an OmegaConf DictConfig."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(calvin_env_conf_dir()), version_base=None):
        cfg = compose(config_name="config_data_collection", overrides=["cameras=static_and_gripper"])
    return cfg


def dataset_config(validation: str | Path):
    """The dataset's own rendering config (``validation/.hydra/merged_config.yaml``)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(Path(validation) / ".hydra" / "merged_config.yaml")


def scene_config(data_path: str | Path | None, scene: str = "auto"):
    """(config, source): the dataset's merged_config when ``scene`` is "dataset", or "auto" and the file
    exists; calvin_env's composed conf when "calvin_env", or "auto" without it."""
    merged = Path(data_path or "") / "validation" / ".hydra" / "merged_config.yaml"
    if scene == "dataset" or (scene == "auto" and data_path and merged.is_file()):
        if not merged.is_file():
            raise FileNotFoundError(f"{merged} does not exist (scene: dataset needs task_ABC_D/validation)")
        return dataset_config(merged.parents[1]), f"dataset merged_config: {merged}"
    if scene not in ("auto", "calvin_env"):
        raise ValueError(f"scene must be auto, dataset or calvin_env, got {scene!r}")
    return composed_config(), COMPOSED


def make_env(cfg, use_egl: bool = True):
    """PlayTableSimEnv from a full config (``cfg.env`` with its interpolations), static camera only."""
    import hydra
    from omegaconf import OmegaConf, open_dict

    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for name in [k for k in cfg.cameras if k != "static"]:
            del cfg.cameras[name]
        cfg.env.use_egl = use_egl
    env_cfg = OmegaConf.to_container(cfg, resolve=True)["env"]
    return hydra.utils.instantiate(env_cfg, show_gui=False, use_vr=False, use_scene_info=True, _recursive_=False)


class CalvinSim:
    """One CALVIN scene D env and the task oracle, driven by the protocol in the plug-in.

    ``reset(robot_obs, scene_obs)`` -> observation; ``info()`` -> the env info (the oracle's input);
    ``step(action)`` -> (observation, info) for a 7-D CALVIN action (relative, world frame, gripper
    exactly -1 close / +1 open); ``success(start_info, info, subtask)`` -> the oracle's verdict. An
    observation is ``{"render": callable}`` giving the 200x200x3 uint8 ``rgb_static`` of that state.
    """

    def __init__(self, data_path: str | None = None, scene: str = "auto", egl_device: Any = "auto",
                 use_egl: bool = True) -> None:
        self.egl_device = set_egl_device(egl_device) if use_egl else None
        cfg, self.scene_source = scene_config(data_path, scene)
        from hydra.utils import instantiate

        t0 = time.perf_counter()
        self.env = make_env(cfg, use_egl=use_egl)
        self.build_seconds = time.perf_counter() - t0
        self.camera = next(c for c in self.env.cameras if c.name == "static")
        self.tasks = instantiate({"_target_": "calvin_env.envs.tasks.Tasks", "tasks": task_definitions()})
        self.renders = 0
        self.env_steps = 0
        self._state = 0

    def _obs(self) -> dict:
        state = self._state

        def render() -> np.ndarray:
            if state != self._state:
                raise RuntimeError("render() of an observation the env has stepped past")
            self.renders += 1
            rgb, _ = self.camera.render()
            return np.ascontiguousarray(rgb, dtype=np.uint8)

        return {"render": render}

    def reset(self, robot_obs, scene_obs) -> dict:
        self.env.reset(robot_obs=np.asarray(robot_obs, float), scene_obs=np.asarray(scene_obs, float))
        self._state += 1
        return self._obs()

    def info(self) -> dict:
        return self.env.get_info()

    def step(self, action) -> tuple[dict, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,) or not np.isfinite(action).all() or action[-1] not in (-1.0, 1.0):
            raise ValueError(f"action must be 7 finite numbers with the gripper -1 or +1, got {action!r}")
        cameras, self.env.cameras = self.env.cameras, []
        try:
            _, _, _, info = self.env.step(action)
        finally:
            self.env.cameras = cameras
        self._state += 1
        self.env_steps += 1
        return self._obs(), info

    def success(self, start_info: dict, info: dict, subtask: str) -> bool:
        return len(self.tasks.get_task_info_for_set(start_info, info, {subtask})) > 0

    def close(self) -> None:
        env, self.env = getattr(self, "env", None), None
        if env is not None:
            env.close()
            env.p = None  # its __del__ would disconnect a second time

    def __enter__(self) -> CalvinSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
