"""LIBERO-10 (LIBERO-Long): 10 long-horizon tasks x 50 fixed initial states.

The protocol, point by point, its data sources and where it differs from the official evaluator:
docs/benchmarks/libero10.md (each constant's official file and line is pinned in
tests/test_protocol_pins.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlm4vla_core.benchmarks.base import Benchmark, Episode, Obs
from vlm4vla_core.config import ConfigError

#: the suite's tasks in order (task_order_index 0): the instruction is the task's language
INSTRUCTIONS = (
    "put both the alphabet soup and the tomato sauce in the basket",
    "put both the cream cheese box and the butter in the basket",
    "turn on the stove and put the moka pot on it",
    "put the black bowl in the bottom drawer of the cabinet and close it",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate",
    "put both the alphabet soup and the cream cheese box in the basket",
    "put both moka pots on the stove",
    "put the yellow and white mug in the microwave and close it",
)
INIT_STATES = 50
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


class Libero10Benchmark(Benchmark):
    kind = "libero10"
    action_dim = 7
    keys = {
        "tasks": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": len(INSTRUCTIONS) - 1},
                  "minItems": 1, "uniqueItems": True, "description": "task indices (default: all 10)"},
        "episodes_per_task": {"type": "integer", "minimum": 1, "maximum": INIT_STATES},
        "max_steps": {"type": "integer", "minimum": 1},
        "wait_steps": {"type": "integer", "minimum": 0},
        "camera_size": {"type": "integer", "minimum": 32},
        "env_seed": {"type": "integer", "minimum": 0},
        "center_crop": {"type": ["number", "boolean"], "description": "area fraction of the centre crop, or false"},
        "image_key": {"type": "string", "description": "image feature of a LeRobot copy"},
        "action_key": {"type": "string", "description": "action feature of a LeRobot copy"},
        "skip_noops": {"type": "boolean", "description": "drop no-op actions (OpenVLA's rule) when converting HDF5 "
                       "demos as they are (a regeneration always drops them)"},
        "regenerate": {"type": "boolean", "description": "replay the HDF5 demos in the simulator (simulator_python) "
                       "as OpenVLA's regenerated set: camera_size px, no-ops removed, failed replays dropped"},
        "rlds_python": {"type": "string", "description": "Python with TensorFlow and tensorflow-datasets, for an "
                        "RLDS data_path (OpenVLA's libero_10_no_noops)"},
        "norm_stats": {"type": "string",
                       "description": "arm q01/q99 from: official (the published file, the paper's), data (the imported "
                                      "copy's), or the path of a stats file with action.q01/q99"},
    }
    required = ("data_path",)
    defaults = {"tasks": list(range(len(INSTRUCTIONS))), "episodes_per_task": INIT_STATES, "max_steps": 520,
                "wait_steps": 10, "camera_size": 256, "env_seed": 0, "center_crop": False, "skip_noops": True,
                "norm_stats": "official", "regenerate": False, "image_size": 224}
    #: VLM4VLA runs two modes: 4 and 2 of the 4-step chunk (eval/libero/eval_ckpts_libero.py: ``execute_step = [4, 2]``)
    official_modes = ("whole_chunk", "half_chunk")
    data_env = "vlm4vla.yaml"
    sim_env = "libero.yaml"
    #: the official LIBERO-10 statistics (VLM4VLA configs/data/oxe_dataset_stats/dataset_statistics_libero_10.json:
    #: OpenVLA's regenerated libero_10_no_noops, 379 trajectories), shipped with their source
    official_stats = Path(__file__).parent / "official" / "official_stats.json"

    def check_values(self, name: str, entry: dict) -> None:
        crop = entry["center_crop"]
        if crop is True or (crop is not False and not 0 < crop <= 1):
            raise ConfigError(f"key 'benchmarks.{name}.center_crop': {crop!r} is not false or an area fraction in (0, 1]")

    def build_data(self, entry: dict, out: Path, workers: int = 1) -> None:
        from vlm4vla_core.benchmarks.libero10.importer import import_libero

        import_libero(entry, Path(out), workers=workers)

    def write_fixture(self, entry: dict, out: Path, frame_size: int | None = None) -> None:
        """Two 20-step demos per task in the HDF5 layout (vlm4vla_core.testing.libero)."""
        from vlm4vla_core.testing.libero import write_libero_hdf5

        write_libero_hdf5(Path(out), demos=2, length=20, size=frame_size or 64)

    def episodes(self, entry: dict, seed: int) -> list[Episode]:
        pairs = [(t, i) for t in entry["tasks"] for i in range(entry["episodes_per_task"])]
        return [Episode(n, f"task{t}", INSTRUCTIONS[t], {"task_id": t, "init_state": i})
                for n, (t, i) in enumerate(pairs)]

    def simulator(self, entry: dict):
        from vlm4vla_core.benchmarks.libero10.sim import LiberoSim

        return LiberoSim(camera_size=entry["camera_size"], env_seed=entry["env_seed"], wrist=False)

    def run_episode(self, sim, episode: Episode, entry: dict):
        obs = sim.reset(episode.params["task_id"], episode.params["init_state"])
        for _ in range(entry["wait_steps"]):
            obs, _ = sim.step(NOOP)  # objects settle; a done here is ignored, as in OpenVLA and openpi
        for step in range(entry["max_steps"]):
            action = yield Obs(episode.instruction, lambda o=obs: o, reset=step == 0)
            obs, done = sim.step(action)
            if done:
                return dict(success=True, steps=step + 1, wait_steps=entry["wait_steps"])
        return dict(success=False, steps=entry["max_steps"], wait_steps=entry["wait_steps"])

    def step_budget(self, entry: dict, episode: Episode) -> dict:
        return dict(env_steps=entry["wait_steps"] + entry["max_steps"], policy_steps=entry["max_steps"], segments=1)

    def image_transform(self, entry: dict):
        return lambda obs: libero_image(obs["agentview"], entry["center_crop"])


def libero_image(agentview: np.ndarray, center_crop: float | bool = False) -> np.ndarray:
    """The policy's frame from LIBERO's agentview render: rotated 180 degrees, then optionally
    the central square box of ``center_crop`` of the area (the policy resizes it afterwards)."""
    image = np.asarray(agentview)[::-1, ::-1]
    if center_crop:
        h, w = image.shape[:2]
        side = np.sqrt(float(center_crop))
        ch, cw = int(round(h * side)), int(round(w * side))
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[top : top + ch, left : left + cw]
    return np.ascontiguousarray(image)


BENCHMARK = Libero10Benchmark()
