"""Rollout videos: which episodes are filmed, and the MP4 each becomes (decoded back with PyAV)."""

import json

import av
import numpy as np

from vlm4vla_core.benchmarks.base import Benchmark, Episode, Obs, run_episodes, zero_infer
from vlm4vla_core.benchmarks.video import RolloutVideos


class Toy(Benchmark):
    """Six steps per episode; the frame's red channel is 40 x the step; success is given by the episode."""

    kind = "toy"

    def simulator(self, entry):
        return None

    def run_episode(self, sim, episode, entry):
        for t in range(6):
            frame = np.full((24, 30, 3), 40 * t, np.uint8)
            yield Obs(episode.instruction, lambda frame=frame: frame)
        return dict(success=episode.params["ok"], steps=6)


def _episodes():
    return [Episode(i, task, f"do {task} now", dict(ok=bool(i % 2))) for i, task in
            enumerate(["open-drawer"] * 4 + ["press-button"] * 3)]


def test_one_success_and_one_failure_per_task_are_filmed(tmp_path):
    videos = RolloutVideos(tmp_path / "v", per_task=1)
    records = run_episodes(Toy(), {}, _episodes(), zero_infer(4, 7), execute=2, slots=2, progress=False,
                           videos=videos)
    filmed = {(r["task"], r["success"]): r["video"] for r in records if "video" in r}
    assert set(filmed) == {(t, ok) for t in ("open-drawer", "press-button") for ok in (True, False)}
    assert sum("video" in r for r in records) == 4  # the others are not written
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == sorted(filmed.values())
    assert filmed[("open-drawer", True)] == "open-drawer_success_ep00001.mp4"
    with av.open(str(tmp_path / "v" / filmed[("open-drawer", False)])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3  # one frame per policy call: 6 steps, 2 executed per chunk
    h, w = frames[0].shape[:2]
    assert w >= 224 and w % 2 == 0 and h % 2 == 0  # enlarged for the caption, even sides for H.264
    band = h - 24 * (w // 30)
    assert band > 0 and frames[0][:band].max() > 200  # white caption text above the frame
    reds = [int(np.median(f[band:, :, 0])) for f in frames]
    assert all(abs(a - b) <= 6 for a, b in zip(reds, (0, 80, 160)))  # the policy's frames, in order


def test_no_video_when_zero_per_task(tmp_path):
    records = run_episodes(Toy(), {}, _episodes(), zero_infer(4, 7), execute=2, progress=False,
                           videos=RolloutVideos(tmp_path / "v", per_task=0))
    assert not any("video" in r for r in records) and not (tmp_path / "v").exists()


def test_merge_eval_rebases_video_paths(tmp_path):
    from vlm4vla_core.evaluate import merge_main

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    base = dict(backbone="b", benchmark="mw", ablation="full", seed=0, checkpoint="p", episodes_total=2,
                mode_selection="whole_chunk", kind="metaworld")
    for i in range(2):
        ep = dict(index=i, task="t", success=bool(i), steps=3)
        if i:
            ep["video"] = "videos/shard1/full/t_success_ep00001.mp4"
        (run / "eval" / f"shard{i}.json").write_text(json.dumps(dict(
            base, shard=[i, 2], modes={"whole_chunk": dict(execute_steps=4, episodes=[ep])})))
    assert merge_main([str(run / "eval" / "shard0.json"), str(run / "eval" / "shard1.json"),
                       "--out", str(run / "eval.json")]) == 0
    eps = json.loads((run / "eval.json").read_text())["modes"]["whole_chunk"]["episodes"]
    assert eps[1]["video"] == "eval/videos/shard1/full/t_success_ep00001.mp4" and "video" not in eps[0]


def test_the_caption_names_how_the_episode_ended(tmp_path, monkeypatch):
    """A failed episode's caption says how it ended where its record tells (the benchmark's ``outcome``)."""
    import numpy as np

    from vlm4vla_core.benchmarks import video

    seen = []
    real = video.caption_frame
    monkeypatch.setattr(video, "caption_frame", lambda f, lines, width: seen.append(lines) or real(f, lines, width))
    films = video.RolloutVideos(tmp_path, 1)
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    films.offer(dict(task="t", index=3, success=False, steps=30, outcome="timed out", instruction="go"), frames)
    films.offer(dict(task="t", index=4, success=True, steps=9, outcome="success", instruction="go"), frames)
    assert seen[0][0] == "failure: timed out | 30 steps | episode 3" and seen[-1][0] == "success | 9 steps | episode 4"
