"""Rollouts to watch: a few successful and failed episodes per task, saved as MP4 videos.

The episode driver (``run_episodes``) keeps the frames the policy saw at each re-plan of an episode
that may still be needed; when the episode ends, ``RolloutVideos.offer`` writes it as an H.264 MP4
(PyAV) if its task still lacks a video of that outcome, with the outcome and the instruction written
above the frame, and records the file's name in the episode record (``video``). At most
``per_task`` successful and ``per_task`` failed episodes of each task are written per evaluation
process (``evaluation.videos_per_task``; 0 writes none).

Frames are the policy's input frames (after the benchmark's image transform), one per policy call,
so a video plays at ``fps`` policy calls per second, each standing for ``execute_steps`` steps.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np

#: frames narrower than this are enlarged (nearest neighbour) so the caption stays readable
MIN_WIDTH = 224
FPS = 4


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "task"


@functools.lru_cache(maxsize=8)
def _band(lines: tuple[str, ...], width: int) -> np.ndarray:
    """A black band ``width`` pixels wide holding ``lines`` of white text, each wrapped to the width (at most
    four lines in all); drawn once per episode."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, width // 26))
    line_h = int(font.size * 1.3) if hasattr(font, "size") else 14
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = []
    for text in lines:  # greedy word wrap to the band's width
        line = ""
        for word in text.split():
            if line and measure.textlength(f"{line} {word}", font=font) > width - 8:
                wrapped.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        wrapped.append(line)
    lines = wrapped[:4]
    band = Image.new("RGB", (width, line_h * len(lines) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((4, 4 + i * line_h), line, fill=(255, 255, 255), font=font)
    return np.asarray(band)


def caption_frame(frame: np.ndarray, lines: list[str], width: int) -> np.ndarray:
    """``frame`` enlarged to at least ``width`` (nearest neighbour) under a black band holding ``lines`` of
    text, cropped to even sides (H.264 4:2:0)."""
    frame = np.asarray(frame, dtype=np.uint8)
    scale = max(1, int(np.ceil(width / frame.shape[1])))
    big = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    out = np.concatenate([_band(tuple(lines), big.shape[1]), big], axis=0)
    return np.ascontiguousarray(out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2])


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """Frames (HxWx3 uint8, equal sizes) -> an H.264 MP4 (yuv420p, plays in browsers), written atomically."""
    import av

    from vlm4vla_core.io import atomic_write

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "28", "preset": "ultrafast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    return atomic_write(path, write)


class RolloutVideos:
    """Decides which episodes are filmed and writes them into ``folder``."""

    def __init__(self, folder: str | Path, per_task: int, fps: int = FPS):
        self.folder, self.per_task, self.fps = Path(folder), int(per_task), fps
        self.saved: dict[tuple[str, bool], int] = {}
        self.available = importlib.util.find_spec("av") is not None
        if per_task > 0 and not self.available:
            print("rollout videos: PyAV (av) is not installed in this environment, no video is written", flush=True)

    def wants(self, task: str) -> bool:
        """Whether an episode of ``task`` starting now may become a video (keep its frames)."""
        return self.available and any(self.saved.get((task, ok), 0) < self.per_task for ok in (True, False))

    def offer(self, record: dict, frames: list[np.ndarray] | None) -> None:
        """Write the episode if its (task, outcome) still lacks a video; sets ``record['video']``."""
        ok, task = bool(record.get("success")), record["task"]
        if not frames or self.saved.get((task, ok), 0) >= self.per_task:
            return
        outcome = "success" if ok else "failure"
        width = max(MIN_WIDTH, frames[0].shape[1])
        told = record.get("outcome")  # how it ended, where the benchmark tells (timed out, stopped at subtask k)
        label = outcome if told in (None, "success") else f"{outcome}: {told}"
        lines = [f"{label} | {record.get('steps', '?')} steps | episode {record['index']}",
                 record.get("instruction") or task]
        name = f"{_safe(task)}_{outcome}_ep{int(record['index']):05d}.mp4"
        write_mp4(self.folder / name, [caption_frame(f, lines, width) for f in frames], self.fps)
        self.saved[(task, ok)] = self.saved.get((task, ok), 0) + 1
        record["video"] = name
