"""Single-task Meta-World (v3) environment with seeded initial conditions and a fast camera.

An initial condition (object and goal positions) is a pure function of
``(task, episode_seed)``: the env's random generator is re-seeded with the
episode seed right before every reset. Demonstrations use seeds in
``[0, EVAL_SEED_START)`` and evaluation episodes use seeds ``>= EVAL_SEED_START``,
so training and evaluation scenes never coincide.

Images are rendered on the CPU (``MUJOCO_GL`` is chosen in the package ``__init__``)
with multisampling, shadows and reflections off, and are always upright: cameras
whose image "up" points downwards in the world (Meta-World's ``corner*`` cameras)
are rolled by 180 degrees in the model.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import warnings

import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import ENV_POLICY_MAP

from vlm4vla_core.benchmarks.metaworld import EVAL_SEED_START

METAWORLD_VERSION = importlib.metadata.version("metaworld")
TASKS: tuple[str, ...] = tuple(ALL_V3_ENVIRONMENTS)
DEFAULT_CAMERA = "corner4"  # front-right, above the table: targets large and in view at 112 px
DEFAULT_IMAGE_SIZE = 112
DEFAULT_MAX_STEPS = 150  # ~1.5x the experts' p95 episode length on the demo tasks


def demo_seeds(n: int, offset: int = 0) -> list[int]:
    """Episode seeds for demonstrations: ``offset .. offset+n-1``, all below ``EVAL_SEED_START``."""
    seeds = list(range(offset, offset + n))
    if offset < 0 or (seeds and seeds[-1] >= EVAL_SEED_START):
        raise ValueError(f"demo seeds must lie in [0, {EVAL_SEED_START}), got {offset}..{offset + n - 1}")
    return seeds


def eval_seeds(n: int, offset: int = 0) -> list[int]:
    """Episode seeds for evaluation: ``EVAL_SEED_START + offset ..``, disjoint from every demo seed."""
    if offset < 0:
        raise ValueError(f"evaluation seed offset must be >= 0, got {offset}")
    return list(range(EVAL_SEED_START + offset, EVAL_SEED_START + offset + n))


def check_task(task: str) -> str:
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown Meta-World task {task!r}; known v3 tasks: {', '.join(TASKS)}")
    return task


def _upright_cameras(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """Roll every camera whose image-up axis points below the horizon by 180 degrees."""
    mujoco.mj_forward(model, data)
    roll = np.array([0.0, 0.0, 0.0, 1.0])  # 180 degrees about the camera's optical axis
    for i in range(model.ncam):
        up_z = data.cam_xmat[i].reshape(3, 3)[2, 1]  # world z of the camera's y (image up) axis
        if up_z < 0:
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, model.cam_quat[i].copy(), roll)
            model.cam_quat[i] = quat
    mujoco.mj_forward(model, data)


def _renderer(model: mujoco.MjModel, image_size: int) -> mujoco.Renderer:
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
    model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
    try:
        return mujoco.Renderer(model, image_size, image_size)
    except mujoco.FatalError as e:
        raise RuntimeError(
            f"no OpenGL context for MuJoCo (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): set MUJOCO_GL=egl or "
            "osmesa before anything imports mujoco, e.g. import vlm4vla_core.benchmarks.metaworld first"
        ) from e


def _fast_renderer(model: mujoco.MjModel, image_size: int) -> mujoco.Renderer:
    """A renderer without multisampling, shadows or reflections (about 9x faster on CPU)."""
    model.vis.quality.offsamples = 0
    renderer = _renderer(model, image_size)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


# One GL context per (task, size, fast) and process: a context costs ~100 MB of textures, while all
# envs of a task share the same static model, so one renderer draws any env's MjData of that task.
_RENDERERS: dict[tuple[str, int, bool], tuple[mujoco.Renderer, object]] = {}


def _shared_renderer(task: str, image_size: int, fast: bool = True) -> mujoco.Renderer:
    key = (task, image_size, fast)
    if key not in _RENDERERS:
        owner = ALL_V3_ENVIRONMENTS[task]()  # keeps the renderer's model alive
        _upright_cameras(owner.model, owner.data)
        if fast:
            renderer = _fast_renderer(owner.model, image_size)
        else:
            renderer = _renderer(owner.model, image_size)
        if not _RENDERERS:  # runs before mujoco's own atexit eglTerminate (registered earlier, run later)
            atexit.register(_close_renderers)
        _RENDERERS[key] = (renderer, owner)
    return _RENDERERS[key][0]


def _close_renderers() -> None:
    while _RENDERERS:
        _RENDERERS.popitem()[1][0].close()


class MetaWorldEnv:
    """One Meta-World task; ``reset(seed)`` -> state, ``step(action)`` -> (state, success), ``render()`` -> image.

    Actions are 4-D in [-1, 1]: xyz end-effector delta (1 unit = 1 cm per step) and gripper
    effort (+1 close, -1 open). The state vector (39-D, goal visible) serves the scripted expert only;
    policies see ``render()``.
    """

    def __init__(
        self,
        task: str,
        image_size: int = DEFAULT_IMAGE_SIZE,
        camera: str = DEFAULT_CAMERA,
        max_steps: int = DEFAULT_MAX_STEPS,
        fast_render: bool = True,
    ) -> None:
        self.task = check_task(task)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if not 1 <= max_steps <= 500:
            raise ValueError(f"max_steps must be in [1, 500] (Meta-World's horizon), got {max_steps}")
        self.image_size, self.camera, self.max_steps = image_size, camera, max_steps
        env = ALL_V3_ENVIRONMENTS[task]()
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True  # draw positions from env.np_random, which reset() seeds
        if env._partially_observable:  # the expert needs the goal in the state
            env._partially_observable = False
            del env.sawyer_observation_space  # cached property, recomputed for the full observation
        env.max_path_length = max_steps
        self._env = env
        _upright_cameras(env.model, env.data)
        cameras = [env.model.camera(i).name for i in range(env.model.ncam)]
        if camera not in cameras:
            raise ValueError(f"unknown camera {camera!r} for {task}; available: {', '.join(cameras)}")
        self._renderer = _shared_renderer(task, image_size, fast_render)
        self._expert = ENV_POLICY_MAP[task]()
        self.episode_seed: int | None = None
        self.steps = 0
        self.success = False
        self._obs: np.ndarray | None = None

    def reset(self, episode_seed: int) -> np.ndarray:
        """Start the episode whose initial condition is determined by ``(task, episode_seed)``."""
        self._env._np_random = np.random.Generator(np.random.PCG64(int(episode_seed)))
        obs, _ = self._env.reset()
        self.episode_seed, self.steps, self.success, self._obs = int(episode_seed), 0, False, obs
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """Apply one action (clipped to [-1, 1]); returns the new state and whether ``info["success"]``
        has been true at any step of the episode so far (Meta-World's success criterion)."""
        if self._obs is None:
            raise RuntimeError("call reset(episode_seed) before step()")
        if self.steps >= self.max_steps:
            raise RuntimeError(f"episode of {self.task} already ran max_steps={self.max_steps}")
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        obs, _, _, _, info = self._env.step(action)
        self.steps += 1
        self.success = self.success or bool(info["success"])
        self._obs = obs
        return obs, self.success

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state, clipped to the action space."""
        if self._obs is None:
            raise RuntimeError("call reset(episode_seed) before expert_action()")
        with warnings.catch_warnings():  # the experts warn that their gains exceed the clip range
            warnings.simplefilter("ignore", UserWarning)
            action = self._expert.get_action(self._obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def render(self) -> np.ndarray:
        """Upright ``[image_size, image_size, 3]`` uint8 frame from the fixed camera."""
        self._renderer.update_scene(self._env.data, camera=self.camera)
        return self._renderer.render()

    @property
    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("call reset(episode_seed) first")
        return self._obs

    def close(self) -> None:
        self._env.close()
