"""Training input as a pure function of (seed, step, rank).

Micro-batch ``step`` of ``rank`` holds the frames ``batch_indices(num_frames, seed, step, rank, size)``.
``TrainStream`` loads and encodes them in DataLoader workers; a DataLoader returns batches in the
order its sampler lists them, so the stream yields steps start_step, start_step + 1, ... whatever
the number of workers, and a run resumed at step s sees the batches an uninterrupted run saw from s on.
"""

from __future__ import annotations

import numpy as np


def batch_indices(num_frames: int, seed: int, step: int, rank: int, size: int) -> np.ndarray:
    """The frames of micro-batch ``step`` on ``rank`` (with replacement only when the data has fewer frames)."""
    rng = np.random.default_rng([seed, step, rank])
    return rng.choice(num_frames, size=size, replace=num_frames < size)


class StepSampler:
    """Batch sampler: the indices of steps start_step .. total_steps - 1, in order."""

    def __init__(self, num_frames: int, seed: int, rank: int, size: int, start_step: int, total_steps: int,
                 world: int | None = None):
        self.num_frames, self.seed, self.rank, self.size = num_frames, seed, rank, size
        self.start_step, self.total_steps, self.world = start_step, total_steps, world

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            if self.world:  # the global micro-batch step * world + rank: the same samples at any process count
                yield batch_indices(self.num_frames, self.seed, step * self.world + self.rank, 0, self.size).tolist()
            else:
                yield batch_indices(self.num_frames, self.seed, step, self.rank, self.size).tolist()


class _Frames:
    """Map-style dataset of frame indices: the collate function does the loading."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class ChunkCollate:
    """Picklable collate: frames, instructions and action chunks of a batch of indices, encoded in the worker.

    ``source`` is a dataset (pickled as its root and keys) or a zero-argument factory of one; each
    process opens its own on first use.
    """

    def __init__(self, source, chunk: int, encode_fn):
        self.source, self.chunk, self.encode_fn, self._data = source, chunk, encode_fn, None

    def __getstate__(self):
        return dict(self.__dict__, _data=None)

    def data(self):
        if self._data is None:
            self._data = self.source if hasattr(self.source, "frame") else self.source()
        return self._data

    def __call__(self, indices: list[int]):
        import torch

        data = self.data()
        frames = [data.frame(i) for i in indices]
        actions = np.stack([data.action_chunk(i, self.chunk) for i in indices])
        return self.encode_fn([f[0] for f in frames], [f[1] for f in frames]), torch.from_numpy(actions)


class TrainStream:
    """Yields (encoded inputs dict, actions float32 [B, K, A]) for steps start_step .. total_steps - 1.

    ``data``: a dataset (``num_frames``, ``frame(i)``, ``action_chunk(i, k)``) or a factory of one.
    ``encode_fn(images, instructions)`` (the backbone's processor) runs inside the workers.
    A step here is one micro-batch: with gradient accumulation, pass step * grad_accum + micro_step.
    """

    def __init__(self, data, chunk: int, micro_batch: int, seed: int, rank: int, start_step: int, total_steps: int,
                 encode_fn, num_workers: int = 0, prefetch_factor: int = 2, world: int | None = None):
        from torch.utils.data import DataLoader

        opened = data if hasattr(data, "frame") else data()
        self.num_frames = opened.num_frames
        self.collate = ChunkCollate(opened if num_workers == 0 else data, chunk, encode_fn)
        self.sampler = StepSampler(self.num_frames, seed, rank, micro_batch, start_step, total_steps, world)
        self.loader = DataLoader(_Frames(self.num_frames), batch_sampler=self.sampler, collate_fn=self.collate,
                                 num_workers=num_workers, prefetch_factor=prefetch_factor if num_workers else None,
                                 persistent_workers=num_workers > 0)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return iter(self.loader)
