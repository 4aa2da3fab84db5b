"""LIBERO's official demo files in their native HDF5 layout, small and synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.libero10 import INSTRUCTIONS


def write_libero_hdf5(folder: Path, demos: int = 2, length: int = 6, size: int = 16, tasks=range(10)) -> Path:
    """LIBERO's *_demo.hdf5 layout: data/demo_N/{obs/agentview_rgb, actions}, problem_info in data.attrs;
    images upside-down, the first two steps of every demo no-ops, one file of another suite; ``states``
    are random (only a replay reads them)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texts = [INSTRUCTIONS[t] for t in tasks] + ["pick up the alphabet soup and place it in the basket"]
    for t, text in enumerate(texts):
        with h5py.File(folder / f"SCENE{t}_{text.replace(' ', '_')}_demo.hdf5", "w") as f:
            data = f.create_group("data")
            data.attrs["problem_info"] = json.dumps({"language_instruction": text, "problem_name": "libero"})
            for d in range(demos):
                g = data.create_group(f"demo_{d}")
                img = np.zeros((length, size, size, 3), np.uint8)
                img[:, 0, 0, 0] = 200  # one marked corner: the top-left pixel of the stored (upside-down) image is red
                img[:, :, :, 1] = np.arange(length)[:, None, None] * 10 + t
                actions = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
                actions[:, 6] = -1
                actions[:2, :6] = 0  # two no-ops (gripper unchanged after the first)
                g.create_dataset("obs/agentview_rgb", data=img)
                g.create_dataset("actions", data=actions)
                g.create_dataset("states", data=rng.normal(size=(length, 9)))  # the simulator states
    return folder
