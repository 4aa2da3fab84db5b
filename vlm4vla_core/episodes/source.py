"""A benchmark's training set: the data stage's output folder.

The folder holds ``dataset.json`` (which LeRobot dataset, which keys, which of its episodes)
and ``stats.json`` (the action statistics of those episodes, which set the policy's action
normalisation). The LeRobot dataset is the folder itself when the data stage wrote it
(generated or converted data), or a LeRobot copy elsewhere that is read in place.

Two optional manifest keys serve importers that standardise a copy read in place: ``frames``
(per selected episode, the ``[start, stop)`` range of its frames that is used) and ``actions``
(a ``.npy`` file in the folder: the actions of the used frames in training-set order, replacing
the copy's own action column).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlm4vla_core.episodes.lerobot import LeRobotDataset, action_summary
from vlm4vla_core.io import read_json, write_json

MANIFEST, STATS = "dataset.json", "stats.json"


class TrainingSet:
    """The selected episodes of a LeRobot dataset, indexed by frame (``num_frames``, ``frame(i)``,
    ``action_chunk(i, k)``). Pickles as its folder: each DataLoader worker reopens it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = read_json(self.folder / MANIFEST, "training-set manifest")
        root = Path(manifest.get("root", "."))
        self.root = root if root.is_absolute() else self.folder / root
        self.data = LeRobotDataset(self.root, manifest.get("image_key"), manifest.get("action_key"))
        chosen = manifest.get("episodes")
        self.episodes = np.arange(self.data.num_episodes) if chosen is None else np.asarray(chosen, dtype=np.int64)
        if len(self.episodes) == 0 or self.episodes.min() < 0 or self.episodes.max() >= self.data.num_episodes:
            raise ValueError(f"{self.folder / MANIFEST}: 'episodes' must name episodes of {self.root} "
                             f"(0..{self.data.num_episodes - 1})")
        lengths = self.data.episode_lengths[self.episodes]
        first = np.zeros(len(self.episodes), dtype=np.int64)
        if manifest.get("frames") is not None:
            span = np.asarray(manifest["frames"], dtype=np.int64).reshape(-1, 2)
            if len(span) != len(self.episodes) or (span[:, 0] < 0).any() or (span[:, 1] > lengths).any() \
                    or (span[:, 1] <= span[:, 0]).any():
                raise ValueError(f"{self.folder / MANIFEST}: 'frames' must hold one non-empty [start, stop) range "
                                 "inside each selected episode")
            first, lengths = span[:, 0], span[:, 1] - span[:, 0]
        self.lengths = lengths
        self.num_frames = int(lengths.sum())
        self._ends = np.cumsum(lengths)
        self._data_starts = np.r_[0, np.cumsum(self.data.episode_lengths)[:-1]][self.episodes] + first
        self.action_dim = self.data.action_dim
        self._actions = None
        if manifest.get("actions"):
            self._actions = np.load(self.folder / manifest["actions"], mmap_mode="r")
            if self._actions.ndim != 2 or len(self._actions) != self.num_frames:
                raise ValueError(f"{self.folder / manifest['actions']}: shape {self._actions.shape}, "
                                 f"expected [{self.num_frames}, action_dim]")
            self.action_dim = self._actions.shape[1]
        self._whole = self._actions is None and manifest.get("frames") is None  # whole episodes, their own actions

    def __getstate__(self):
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])

    def _global(self, i: int) -> int:
        k = int(np.searchsorted(self._ends, i, "right"))
        return int(self._data_starts[k] + i - (self._ends[k] - self.lengths[k]))

    def frame(self, i: int):
        return self.data.frame(self._global(i))

    def action_chunk(self, i: int, k: int) -> np.ndarray:
        """Actions of frames i..i+k-1; past the (used part of the) episode its last action repeats."""
        if self._whole:
            return self.data.action_chunk(self._global(i), k)
        e = int(np.searchsorted(self._ends, i, "right"))
        t = i - int(self._ends[e] - self.lengths[e])
        return self.episode_actions(e)[np.minimum(np.arange(t, t + k), self.lengths[e] - 1)]

    def episode_actions(self, k: int) -> np.ndarray:
        """All actions of the k-th selected episode (its used frames)."""
        if self._actions is not None:
            end = int(self._ends[k])
            return np.asarray(self._actions[end - int(self.lengths[k]):end], dtype=np.float32)
        return self.data.action_chunk(int(self._data_starts[k]), int(self.lengths[k]))


def write_training_set(folder: str | Path, root: str | Path = ".", image_key: str | None = None,
                       action_key: str | None = None, episodes: list[int] | None = None,
                       frames: list[list[int]] | None = None, actions: str | None = None, **info) -> dict:
    """Write ``dataset.json`` and ``stats.json`` into ``folder`` for a LeRobot dataset at ``root``
    (relative to ``folder``, or absolute) and returns the statistics. ``info`` is kept in stats.json.
    ``frames`` and ``actions``: see the module docstring (``actions`` names a file in ``folder``)."""
    folder = Path(folder)
    manifest = dict(format="lerobot", root=str(root), image_key=image_key, action_key=action_key, episodes=episodes)
    if frames is not None:
        manifest["frames"] = frames
    if actions is not None:
        manifest["actions"] = actions
    write_json(folder / MANIFEST, manifest)
    data = TrainingSet(folder)
    if actions is not None:
        action = action_summary(np.asarray(data._actions, dtype=np.float64))
    elif episodes is None and frames is None:
        action = data.data.action_stats()
    else:
        action = action_summary(np.concatenate([data.episode_actions(k) for k in range(len(data.episodes))]))
    stats = dict(action={k: np.asarray(v).tolist() for k, v in action.items()}, frames=data.num_frames,
                 episodes=len(data.episodes), image_key=data.data.image_key, action_key=data.data.action_key,
                 lerobot_version=data.data.version, **info)
    write_json(folder / STATS, stats)
    return stats
