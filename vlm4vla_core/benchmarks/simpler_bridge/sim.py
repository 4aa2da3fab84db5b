"""SimplerEnv-Bridge simulator side: the WidowX visual-matching envs of ManiSkill2_real2sim, and the
Vulkan check.

Runs inside the simulator environment (``envs/simpler.yaml`` or ``envs/setup-simpler-venv.sh``:
Python 3.10, SimplerEnv, ManiSkill2_real2sim, sapien 2.2.2, numpy < 2) and imports only numpy and
that stack (never torch, never other vlm4vla_core modules), so it also works as a loose file.

Envs are built as SimplerEnv's ``build_maniskill2_env`` builds them for VLM4VLA's scripts/bridge.bash:
``gym.make(env_id, obs_mode="rgbd", robot, sim_freq=500, control_mode=<widowx>, control_freq=5,
max_episode_steps, scene_name, camera_cfgs={"add_segmentation": True}, rgb_overlay_path,
rgb_overlay_cameras=["3rd_view_camera"])`` (no ray tracing), and reset with
``options={"robot_init_options": {"init_xy", "init_rot_quat"}, "obj_init_options": {"episode_id"}}``.
The overlay images are looked up in ``<ASSET_DIR>/real_inpainting/`` (ManiSkill2_real2sim's asset
folder, or ``$MS2_REAL2SIM_ASSET_DIR``), so no symlink into the working directory is needed.

``python -m vlm4vla_core.benchmarks.simpler_bridge.sim --check-vulkan`` exits non-zero, with a message
that says what to install, when no usable Vulkan device is found (SAPIEN has no CPU renderer).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from functools import cache

import numpy as np

CONTROL_FREQ, SIM_FREQ = 5, 500
CONTROL_MODE = "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
CAMERA = "3rd_view_camera"
ROBOT_INIT_QUAT = np.array([0.0, 0.0, 0.0, 1.0])

_SETUP = ("set up the simulator environment with `envs/setup-simpler-venv.sh VENV_DIR` (or the conda "
          "environment envs/simpler.yaml) and run the simulator with its Python (the benchmark's "
          "`simulator_python`)")
_VULKAN_HELP = (
    "SAPIEN renders through Vulkan only (no CPU renderer): run on a node with an NVIDIA GPU (not a MIG or "
    "virtual-GPU slice), install the Vulkan loader (Debian/Ubuntu: `apt-get install libvulkan1 vulkan-tools`) "
    "and the driver's Vulkan ICD (`libnvidia-gl-<driver version>`, on data-centre GPUs "
    "`libnvidia-gl-<driver version>-server`; it provides /usr/share/vulkan/icd.d/nvidia_icd.json), then check "
    "with `vulkaninfo --summary`; on a headless node run with DISPLAY unset or empty. In containers, start "
    "them with NVIDIA_DRIVER_CAPABILITIES=all (graphics included). Set vulkan_check: false only to skip this check")

# VkInstanceCreateInfo (the loader exports the core entry points used here)
_VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1
_DEVICE_TYPES = {0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"}


class _InstanceInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.c_void_p), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


def vulkan_devices(library: str = "libvulkan.so.1") -> list[tuple[str, str]]:
    """(name, type) of every Vulkan physical device the loader finds; raises RuntimeError when there is
    no loader or no instance can be created."""
    try:
        vk = ctypes.CDLL(library)
    except OSError:
        raise RuntimeError(f"no Vulkan loader ({library} cannot be loaded)") from None
    info = _InstanceInfo(_VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, None, 0, None, 0, None, 0, None)
    instance = ctypes.c_void_p()
    result = vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if result != 0:
        raise RuntimeError(f"vkCreateInstance failed (VkResult {result}): no Vulkan driver (ICD) is installed or usable")
    try:
        count = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * max(count.value, 1))()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        devices = []
        for i in range(count.value):
            props = ctypes.create_string_buffer(4096)  # VkPhysicalDeviceProperties is 824 bytes
            vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(handles[i]), props)
            kind = int.from_bytes(props.raw[16:20], sys.byteorder)
            name = props.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            devices.append((name, _DEVICE_TYPES.get(kind, str(kind))))
        return devices
    finally:
        vk.vkDestroyInstance(instance, None)


_PROBE = """
import sys
from vlm4vla_core.benchmarks.simpler_bridge.sim import vulkan_devices
devices = vulkan_devices()
gpus = [d for d in devices if d[1] != "CPU"]
print("vulkan devices:", devices, flush=True)
if not gpus:
    sys.exit("no Vulkan GPU device (found: %s)" % (devices or "none"))
try:
    import sapien.core as sapien
except ImportError:
    print("sapien is not installed here: the device check only", flush=True)
else:
    sapien.SapienRenderer(offscreen_only=True)
    print("sapien renderer: ok", flush=True)
"""


def check_vulkan(timeout: float = 120.0) -> str:
    """A Vulkan GPU device, and (where SAPIEN is installed) SAPIEN's renderer on it, probed in a child
    process with a time limit (a broken driver can hang). Returns the probe's report; raises
    RuntimeError with what to install."""
    env = dict(os.environ)
    if env.get("DISPLAY"):
        env["DISPLAY"] = ""  # SAPIEN 2 on headless nodes (SimplerEnv issues #68, #112)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no usable Vulkan device: the probe hung for {timeout:.0f} s. {_VULKAN_HELP}") from None
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise RuntimeError(f"no usable Vulkan device ({lines[-1] if lines else f'exit {res.returncode}'}). "
                           f"{_VULKAN_HELP}")
    return res.stdout.strip()


@cache
def _checked() -> str:
    return check_vulkan()


@cache
def _stack():
    try:
        import gymnasium as gym
        import mani_skill2_real2sim
        import mani_skill2_real2sim.envs  # noqa: F401  (registers the envs)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{err.name} is not installed in this Python ({sys.executable}): {_SETUP}") from None
    return gym, mani_skill2_real2sim


def overlay_path(name: str) -> str:
    """The overlay image ``name`` in ManiSkill2_real2sim's ``real_inpainting`` asset folder."""
    _, ms2 = _stack()
    path = os.path.join(str(ms2.ASSET_DIR), "real_inpainting", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: overlay image not found; ManiSkill2_real2sim's data/ folder must be "
                                "beside the package (editable install) or named by MS2_REAL2SIM_ASSET_DIR")
    return path


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and np.ndim(value) == 0:
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value


class SimplerSim:
    """A new env for every episode, as SimplerEnv's evaluator builds one per episode
    (``run_maniskill2_eval_single_episode`` calls ``build_maniskill2_env``); the previous one is closed.

    ``reset(env_id, episode_id, setup, max_steps)`` -> (3rd-view RGB frame, instruction);
    ``step(action)`` -> (frame, {success, truncated, instruction, episode_stats}).
    """

    def __init__(self, check_vulkan: bool = True):
        if check_vulkan:
            _checked()
        self._gym, _ = _stack()
        self._env = None

    def _build(self, env_id: str, setup: dict, max_steps: int):
        self.close()
        self._env = self._gym.make(
            env_id, obs_mode="rgbd", robot=setup["robot"], sim_freq=SIM_FREQ, control_mode=CONTROL_MODE,
            control_freq=CONTROL_FREQ, max_episode_steps=max_steps, scene_name=setup["scene_name"],
            camera_cfgs={"add_segmentation": True}, rgb_overlay_path=overlay_path(setup["overlay"]),
            rgb_overlay_cameras=[CAMERA])
        return self._env

    def reset(self, env_id: str, episode_id: int, setup: dict, max_steps: int):
        env = self._build(env_id, setup, max_steps)
        options = {"robot_init_options": {"init_xy": np.array(setup["init_xy"], dtype=np.float64),
                                          "init_rot_quat": ROBOT_INIT_QUAT.copy()},
                   "obj_init_options": {"episode_id": int(episode_id)}}
        obs, _ = env.reset(options=options)
        return self._image(obs), env.get_language_instruction()

    def _image(self, obs) -> np.ndarray:
        return np.ascontiguousarray(obs["image"][CAMERA]["rgb"])

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.isfinite(action).all():
            raise ValueError(f"action must be 7 finite numbers, got {action!r}")
        obs, _, done, truncated, info = self._env.step(action)
        return self._image(obs), dict(success=bool(done), truncated=bool(truncated),
                                      instruction=self._env.get_language_instruction(),
                                      episode_stats=_plain(info.get("episode_stats", {})))

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = None


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.benchmarks.simpler_bridge.sim")
    p.add_argument("--check-vulkan", action="store_true", help="exit non-zero unless a usable Vulkan device is found")
    args = p.parse_args(argv)
    if args.check_vulkan:
        try:
            print(check_vulkan())
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
