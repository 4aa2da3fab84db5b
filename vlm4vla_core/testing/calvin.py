"""A small task_ABC_D in the native layout (one .npz per frame, ep_start_end_ids.npy, the language
annotations), and a fake CALVIN environment with its oracle that records every call."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_image(i: int, size: int = 200) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0], image[..., 1] = i % 256, i // 256
    return image


def rel_action(i: int) -> np.ndarray:
    """Frame i's rel_actions: arm values encode i, gripper open (+1) on even frames, closed (-1) on odd."""
    return np.array([i / 1000, -i / 1000, 0.5, 0.1, -0.2, 0.3, 1.0 if i % 2 == 0 else -1.0], np.float32)


def write_task_abc_d(root: Path, segments=((0, 39), (100, 149)), windows=((0, 9, "open the drawer"),
                     (5, 14, "push the red block left"), (100, 111, "open the drawer"), (130, 149, "turn on the led")),
                     digits: int = 7, size: int = 200) -> Path:
    """task_ABC_D/training with frames of the given segments, and language windows (start, end incl., text)."""
    split = Path(root) / "training"
    (split / "lang_annotations").mkdir(parents=True)
    for start, end in segments:
        for i in range(start, end + 1):
            np.savez_compressed(split / f"episode_{i:0{digits}d}.npz", rgb_static=frame_image(i, size),
                                rgb_gripper=np.zeros((84, 84, 3), np.uint8), rel_actions=rel_action(i),
                                actions=np.zeros(7, np.float32), robot_obs=np.zeros(15, np.float32),
                                scene_obs=np.zeros(24, np.float32))
    np.save(split / "ep_start_end_ids.npy", np.array(segments))
    ann = {"language": {"ann": [w[2] for w in windows], "task": ["t"] * len(windows),
                        "emb": np.zeros((len(windows), 1, 384), np.float32)},
           "info": {"indx": [(w[0], w[1]) for w in windows], "episodes": []}}
    np.save(split / "lang_annotations" / "auto_lang_ann.npy", ann, allow_pickle=True)
    return Path(root)


class FakeCalvin:
    """Records resets, info calls, steps and oracle calls. ``succeed``: {(chain initial led+slider key, subtask
    position): env step within the subtask at which the oracle fires}; by default the oracle fires for a subtask
    at step ``at.get(subtask)`` of it (counted from its start), never if absent."""

    scene_source = "fake"

    def __init__(self, log: list, at: dict | None = None, size: int = 8):
        self.log, self.at, self.size = log, at or {}, size
        self.t = 0

    def _obs(self):
        t = self.t

        def render():
            self.log.append(("render", t))
            return np.full((self.size, self.size, 3), min(t, 255), np.uint8)

        return {"render": render}

    def reset(self, robot_obs, scene_obs):
        self.t = 0
        self.log.append(("reset", np.asarray(robot_obs).tolist(), np.asarray(scene_obs).tolist()))
        return self._obs()

    def info(self):
        self.log.append(("info", self.t))
        return {"t": self.t}

    def step(self, action):
        self.t += 1
        self.log.append(("step", self.t, np.asarray(action, float).tolist()))
        return self._obs(), {"t": self.t}

    def success(self, start_info, info, subtask):
        self.log.append(("oracle", subtask, start_info["t"], info["t"]))
        n = self.at.get(subtask)
        return n is not None and info["t"] - start_info["t"] == n
