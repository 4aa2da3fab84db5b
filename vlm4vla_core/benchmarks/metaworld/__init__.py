"""Embedded Meta-World benchmark: env wrapper, expert data collection, closed-loop rollouts.

MuJoCo reads ``MUJOCO_GL`` when it is imported, so it is chosen here, before any submodule
imports mujoco: ``egl`` when libEGL is present, else ``osmesa`` (an explicit setting wins).
"""

import ctypes.util
import os

if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
