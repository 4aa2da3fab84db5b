"""The project's one episode format: LeRobot datasets on disk, streamed into training.

The reader is built on pyarrow and PyAV directly, not on the ``lerobot`` package or HF ``datasets``:
``lerobot`` pulls torchvision, which replaces the project's CPU torch 2.13 with a CUDA build, and hub
machinery; ``datasets`` decodes video through torchvision/torchcodec. pyarrow gives random access by
Parquet row group and PyAV frame-accurate seeking in MP4 files, neither of them needing torch.
"""

from vlm4vla_core.episodes.lerobot import LeRobotDataset, LeRobotWriter, action_summary
from vlm4vla_core.episodes.stream import TrainStream, batch_indices

__all__ = ["LeRobotDataset", "LeRobotWriter", "TrainStream", "action_summary", "batch_indices"]
