"""Bridge V2 RLDS/TFDS original -> a raw LeRobot v2.1 copy (primary camera, state, action, instruction).

``python -m vlm4vla_core.benchmarks.simpler_bridge.rlds --src TFDS_VERSION_DIR --out COPY [--split train]``

Runs in a Python with TensorFlow and tensorflow-datasets (``envs/simpler-data.yaml``), imports numpy,
pyarrow, TensorFlow and tqdm (a tensorflow-datasets dependency) only (no torch). Reads the RAIL
builder's layout (``bridge_dataset`` 1.0.0, placed as ``bridge_orig`` by OpenVLA):
``steps/observation/image_0`` (the fixed camera), ``steps/observation/state`` (xyz, rpy, gripper),
``steps/action`` (xyz and rpy deltas, gripper 1 = open), ``steps/language_instruction``.
Nothing is standardised here: the copy holds every step of every trajectory of the split, in the split's
order, as a LeRobot copy converted from RLDS would; ``importer.py`` standardises it as it does any copy.
The conversion itself (encoded JPEG bytes kept, resumable episode by episode) is ``benchmarks/rlds.py``.
"""

from __future__ import annotations

import sys

from vlm4vla_core.benchmarks.rlds import Layout, main as convert_main

FPS = 5
LAYOUT = Layout(name="Bridge V2", image="image_0", state="state", fps=FPS, robot_type="widowx",
                state_names=("x", "y", "z", "roll", "pitch", "yaw", "gripper"))
IMAGE = LAYOUT.image_key


def main(argv: list[str] | None = None) -> int:
    return convert_main(LAYOUT, "python -m vlm4vla_core.benchmarks.simpler_bridge.rlds", __doc__,
                        "envs/simpler-data.yaml", argv)


if __name__ == "__main__":
    sys.exit(main())
