"""OpenVLA's regenerated LIBERO-10 RLDS set (``libero_10_no_noops``) -> a raw LeRobot v2.1 copy.

``python -m vlm4vla_core.benchmarks.libero10.rlds --src TFDS_VERSION_DIR --out COPY [--split train]``

The set VLM4VLA trains LIBERO-10 on (``modified_libero_rlds``, mix ``libero_10_no_noops``): the HDF5
demos replayed in the simulator at 256 px, no-op steps removed, failed replays dropped, images already
rotated 180 degrees. Layout read: ``steps/observation/image`` (agentview, JPEG), ``steps/observation/state``
(8-D: end-effector xyz and axis-angle, two gripper fingers), ``steps/action`` (7-D, LIBERO's own: gripper
-1 open / +1 close, the project's canonical LIBERO action, kept as it is), ``steps/language_instruction``.
The wrist camera is not copied (VLM4VLA trains LIBERO-10 without it). Runs in a Python with TensorFlow
and tensorflow-datasets (``envs/simpler-data.yaml``); the conversion is ``benchmarks/rlds.py``.
"""

from __future__ import annotations

import sys

from vlm4vla_core.benchmarks.rlds import Layout, main as convert_main

LAYOUT = Layout(name="LIBERO", image="image", state="state", fps=20, robot_type="panda",
                state_names=("x", "y", "z", "ax", "ay", "az", "finger_left", "finger_right"))


def main(argv: list[str] | None = None) -> int:
    return convert_main(LAYOUT, "python -m vlm4vla_core.benchmarks.libero10.rlds", __doc__, "envs/simpler-data.yaml",
                        argv)


if __name__ == "__main__":
    sys.exit(main())
