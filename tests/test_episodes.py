"""The LeRobot episode format: writer, reader (v2.1 and v3.0, Parquet images and MP4), training stream."""

import io
import json
import pickle
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lerobot_fixtures import IMAGE_KEY, synthetic_episodes, write_v21_video, write_v30
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter, TrainStream, batch_indices

LENGTHS = [5, 37, 3, 9]  # 37 spans two row groups of the writer


def _write(root, episodes, **kw):
    with LeRobotWriter(root, fps=10, action_dim=episodes[0][1].shape[1], **kw) as w:
        for frames, actions, task in episodes:
            w.add_episode(iter(frames), actions, task)
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    episodes = synthetic_episodes(LENGTHS, size=24, seed=1)
    episodes[1] = (np.random.default_rng(2).integers(0, 256, episodes[1][0].shape, dtype=np.uint8), *episodes[1][1:])
    return _write(tmp_path_factory.mktemp("v21") / "ds", episodes), episodes


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    episodes = synthetic_episodes([7, 12, 5, 9], size=32)
    root = tmp_path_factory.mktemp("video")
    roots = {"v2.1": write_v21_video(root / "v21", episodes), "v3.0": write_v30(root / "v30", episodes, video=True)}
    return roots, episodes


def _expected_chunk(episodes, e, t, k):
    actions = episodes[e][1]
    return actions[np.minimum(np.arange(t, t + k), len(actions) - 1)]


def test_writer_writes_lerobot_v21(written):
    root, episodes = written
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["video_path"] is None
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, sum(LENGTHS), 2)
    assert info["splits"] == {"train": "0:4"} and info["chunks_size"] == 1000 and info["total_chunks"] == 1
    assert info["features"]["observation.image"] == {"dtype": "image", "shape": [24, 24, 3],
                                                     "names": ["height", "width", "channels"]}
    assert info["features"]["action"]["dtype"] == "float32" and info["features"]["action"]["shape"] == [4]
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])
    lines = [json.loads(l) for l in (root / "meta/episodes.jsonl").read_text().splitlines()]
    assert lines[1] == {"episode_index": 1, "tasks": ["open the drawer"], "length": 37}
    tasks = [json.loads(l) for l in (root / "meta/tasks.jsonl").read_text().splitlines()]
    assert tasks == [{"task_index": 0, "task": "pick the cube"}, {"task_index": 1, "task": "open the drawer"}]
    ep_stats = [json.loads(l) for l in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(ep_stats[2]["stats"]["action"]["mean"], episodes[2][1].mean(0), rtol=1e-6)
    assert ep_stats[2]["stats"]["action"]["count"] == [3]

    pf = pq.ParquetFile(root / "data/chunk-000/episode_000001.parquet")
    schema = pf.schema_arrow
    assert schema.field("observation.image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("action").type == pa.list_(pa.float32(), 4)
    assert json.loads(schema.metadata[b"huggingface"])["info"]["features"]["observation.image"] == {"_type": "Image"}
    assert pf.metadata.num_row_groups == 2 and pf.metadata.row_group(0).num_rows == 32
    table = pf.read()
    cell = table.column("observation.image")[36].as_py()
    assert cell["path"] is None
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(cell["bytes"]))), episodes[1][0][36])
    assert table.column("index").to_pylist() == list(range(5, 42))
    np.testing.assert_allclose(table.column("timestamp").to_numpy(), np.arange(37) / 10, atol=1e-6)


def test_reader_round_trip_of_written_dataset(written):
    root, episodes = written
    data = LeRobotDataset(root)
    assert (data.version, data.fps, data.action_dim, data.num_episodes, data.num_frames) == ("v2.1", 10, 4, 4, 54)
    assert data.episode_lengths.dtype == np.int64 and data.episode_lengths.tolist() == LENGTHS
    assert data.tasks == [t for _, _, t in episodes] and data.image_key == "observation.image"
    i = 0
    for frames, _, task in episodes:
        for f in frames:
            image, text = data.frame(i)
            assert image.dtype == np.uint8 and np.array_equal(image, f) and text == task  # PNG: exact
            i += 1
    with pytest.raises(IndexError):
        data.frame(i)
    assert LeRobotDataset(root, image_key="image").image_key == "observation.image"


def test_writer_is_atomic(tmp_path):
    root, episodes = tmp_path / "ds", synthetic_episodes([4, 3], size=8)
    with pytest.raises(ValueError, match="2 images for 3 actions"):
        with LeRobotWriter(root, fps=5, action_dim=4) as w:
            w.add_episode(episodes[0][0], episodes[0][1], "a")
            assert not root.exists()
            w.add_episode(episodes[1][0][:2], episodes[1][1], "b")
    assert not root.exists() and list(tmp_path.iterdir()) == []
    (root / "old").mkdir(parents=True)
    w = LeRobotWriter(root, fps=5, action_dim=4)
    w.add_episode(episodes[0][0], episodes[0][1], "a")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        w.add_episode(episodes[1][0].astype(np.float32), episodes[1][1], "b")
    assert (root / "old").is_dir()  # the old content stays until close
    w.close()
    assert not (root / "old").exists() and LeRobotDataset(root).num_episodes == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    _edit_info(root, codebase_version="v2.0")  # the same layout, with meta/stats.json only
    assert LeRobotDataset(root).version == "v2.0"


def test_v30_parquet_images_several_episodes_per_file(tmp_path):
    episodes = synthetic_episodes([6, 20, 4, 11, 2], size=16, action_dim=3)
    data = LeRobotDataset(write_v30(tmp_path / "ds", episodes), image_key="image", action_key="action")
    assert (data.version, data.num_episodes, data.num_frames, data.action_dim) == ("v3.0", 5, 43, 3)
    assert data.image_key == IMAGE_KEY and data.tasks == [t for _, _, t in episodes]
    frames = np.concatenate([f for f, _, _ in episodes])
    for i in np.random.default_rng(0).permutation(len(frames)):
        assert np.array_equal(data.frame(int(i))[0], frames[i])
    for e, start in enumerate(np.r_[0, np.cumsum(data.episode_lengths)[:-1]]):
        np.testing.assert_array_equal(data.action_chunk(int(start) + 1, 5), _expected_chunk(episodes, e, 1, 5))


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_video_frames_in_order(videos, version):
    roots, episodes = videos
    data = LeRobotDataset(roots[version])
    assert data.version == version and data.is_video and data.num_frames == 33
    frames = np.concatenate([f for f, _, _ in episodes]).astype(int)
    n = len(frames)
    order = list(range(n)) + list(range(n))[::-1] + np.random.default_rng(0).permutation(n).tolist()
    for i in order:  # forward, backward (a seek each time) and random
        image, task = data.frame(i)
        err = np.abs(image - frames).mean(axis=(1, 2, 3))
        assert image.shape == (32, 32, 3) and err.argmin() == i and err[i] < 4, (i, err[i])
    assert data.frame(7)[1] == "open the drawer"


def test_action_chunks_at_episode_boundaries(written):
    root, episodes = written
    data = LeRobotDataset(root)
    last0 = episodes[0][1][-1]
    np.testing.assert_array_equal(data.action_chunk(4, 3), np.stack([last0] * 3))  # stays in episode 0
    np.testing.assert_array_equal(data.action_chunk(3, 4), np.stack([episodes[0][1][3], last0, last0, last0]))
    np.testing.assert_array_equal(data.action_chunk(5, 2), episodes[1][1][:2])
    i = 0
    for e, (_, actions, _) in enumerate(episodes):
        for t in range(len(actions)):
            chunk = data.action_chunk(i, 6)
            assert chunk.dtype == np.float32 and chunk.shape == (6, 4)
            np.testing.assert_array_equal(chunk, _expected_chunk(episodes, e, t, 6))
            i += 1


def test_action_stats_match_numpy(written, tmp_path):
    root, episodes = written
    for data in (LeRobotDataset(root), LeRobotDataset(write_v30(tmp_path / "v30", episodes))):
        acts = np.concatenate([a for _, a, _ in episodes]).astype(np.float64)
        stats = data.action_stats()
        for key, want in [("q01", np.quantile(acts, 0.01, axis=0)), ("q99", np.quantile(acts, 0.99, axis=0)),
                          ("min", acts.min(0)), ("max", acts.max(0)), ("mean", acts.mean(0)), ("std", acts.std(0))]:
            np.testing.assert_allclose(stats[key], want, rtol=1e-6, atol=1e-7, err_msg=f"{data.version} {key}")
    assert "q01" in json.loads((root / "meta/stats.json").read_text())["action"]  # the writer stores them
    assert "q01" not in json.loads((tmp_path / "v30/meta/stats.json").read_text())["action"]  # computed here


def _edit_info(root, **changes):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def test_errors_name_the_file_and_key(tmp_path, videos):
    episodes = synthetic_episodes([3, 4, 2], size=8)
    with pytest.raises(ValueError, match="meta/info.json: not found"):
        LeRobotDataset(tmp_path)

    root = _write(tmp_path / "a", episodes)
    _edit_info(root, codebase_version="v1.6")
    with pytest.raises(ValueError, match=r"info.json: codebase_version 'v1.6'"):
        LeRobotDataset(root)

    root = _write(tmp_path / "b", episodes)
    with pytest.raises(ValueError, match=r"info.json: features has no action key 'joints'"):
        LeRobotDataset(root, action_key="joints")
    with pytest.raises(ValueError, match=r"info.json: features has no image key 'wrist'"):
        LeRobotDataset(root, image_key="wrist")
    info = json.loads((root / "meta/info.json").read_text())
    _edit_info(root, features={**info["features"], "action": {"dtype": "float32", "shape": [2, 2]}})
    with pytest.raises(ValueError, match=r"info.json: features.action.shape is \[2, 2\]"):
        LeRobotDataset(root)
    _edit_info(root, features={**info["features"], "action": {"dtype": "float32", "shape": [5]}})
    with pytest.raises(ValueError, match=r"episode_000000.parquet: column 'action' holds 4 values per row"):
        LeRobotDataset(root)

    root = _write(tmp_path / "c", episodes)
    (root / "data/chunk-000/episode_000002.parquet").write_bytes(b"not parquet")
    data = LeRobotDataset(root)  # only the first data file is opened up front; the others when read
    with pytest.raises(ValueError, match=r"episode_000002.parquet: cannot read Parquet"):
        data.frame(8)
    (root / "data/chunk-000/episode_000000.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(ValueError, match=r"episode_000000.parquet: cannot read Parquet"):
        LeRobotDataset(root)
    (root / "data/chunk-000/episode_000001.parquet").unlink()
    with pytest.raises(ValueError, match=r"episode_000001.parquet: missing"):
        LeRobotDataset(root)

    root = _write(tmp_path / "d", episodes)
    (root / "meta/episodes.jsonl").unlink()
    with pytest.raises(ValueError, match=r"meta/episodes.jsonl: not found"):
        LeRobotDataset(root)

    root = write_v30(tmp_path / "e", episodes, video=True)
    (root / f"videos/{IMAGE_KEY}/chunk-000/file-001.mp4").unlink()
    with pytest.raises(ValueError, match=rf"{IMAGE_KEY}/chunk-000/file-001.mp4: missing \(video of '{IMAGE_KEY}'\)"):
        LeRobotDataset(root)
    root = write_v30(tmp_path / "f", episodes)
    pq.write_table(pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").drop(["dataset_to_index"]),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    with pytest.raises(ValueError, match=r"file-000.parquet: missing column\(s\) \['dataset_to_index'\]"):
        LeRobotDataset(root)


def test_batch_indices_are_todays_sampler():
    # a resumed run must draw the frames an uninterrupted one drew: the draws of today's sampler, recorded
    assert batch_indices(100, 0, 0, 0, 8).tolist() == [79, 7, 1, 48, 29, 25, 4, 59]
    assert batch_indices(5, 3, 17, 1, 8).tolist() == [1, 2, 4, 2, 2, 0, 3, 3]  # fewer frames: with replacement
    assert batch_indices(8, 7, 2, 3, 8).tolist() == [5, 3, 7, 0, 4, 1, 6, 2]  # a permutation: no repeats
    for n in (8, 50):
        draws = [batch_indices(n, 1, step, rank, 8) for step in range(20) for rank in range(2)]
        assert all(len(set(d.tolist())) == 8 and d.min() >= 0 and d.max() < n for d in draws)
    # each of seed, step and rank changes the draw
    base = batch_indices(1000, 1, 2, 3, 16).tolist()
    assert all(batch_indices(1000, *k, 16).tolist() != base for k in [(0, 2, 3), (1, 0, 3), (1, 2, 0)])


def encode(images, instructions):
    """A stand-in processor: pixels and the instruction's characters as tensors."""
    text = torch.zeros(len(instructions), 24, dtype=torch.long)
    for b, s in enumerate(instructions):
        text[b, : len(s[:24])] = torch.tensor(list(s.encode()[:24]))
    return {"pixel_values": torch.from_numpy(np.stack(images)), "input_ids": text}


def _batches(stream):
    return [(inputs["pixel_values"], inputs["input_ids"], actions) for inputs, actions in stream]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_stream_is_a_function_of_seed_step_rank(written, videos, kind):
    root = written[0] if kind == "image" else videos[0]["v3.0"]
    data = LeRobotDataset(root)
    data.frame(3)  # caches filled before the workers fork: each worker must still start with its own
    run = dict(chunk=3, micro_batch=4, seed=5, rank=1, total_steps=6, encode_fn=encode)
    serial = _batches(TrainStream(data, start_step=0, **run))
    workers = _batches(TrainStream(partial(LeRobotDataset, root), start_step=0, num_workers=2, **run))
    resumed = _batches(TrainStream(data, start_step=4, num_workers=2, **run))
    assert len(serial) == 6 and len(resumed) == 2
    for a, b in zip(serial, workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for a, b in zip(serial[4:], resumed):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    idx = batch_indices(data.num_frames, 5, 2, 1, 4)
    pixels, _, actions = serial[2]
    assert actions.dtype == torch.float32 and actions.shape == (4, 3, 4)
    assert torch.equal(pixels, torch.from_numpy(np.stack([data.frame(int(i))[0] for i in idx])))
    assert torch.equal(actions, torch.from_numpy(np.stack([data.action_chunk(int(i), 3) for i in idx])))
    inputs, actions = pickle.loads(pickle.dumps(TrainStream(data, start_step=0, **run).collate))(idx.tolist())
    assert torch.equal(inputs["pixel_values"], pixels) and torch.equal(actions, serial[2][2])  # spawned workers


def test_memory_stays_bounded(written, videos):
    for root in (written[0], videos[0]["v2.1"], videos[0]["v3.0"]):
        data = LeRobotDataset(root, cache_size=2, frame_cache_mb=0)  # no decoded frames kept beyond one
        decoded = LeRobotDataset(root, cache_size=2)  # a small set stays decoded: the same frames
        for i in np.random.default_rng(0).permutation(data.num_frames):
            frame = data.frame(int(i))[0]
            data.action_chunk(int(i), 4)
            held = data.cache_sizes()  # every episode's actions stay (4 bytes x action_dim a frame); the rest <= 2
            assert held.pop("actions") <= data.num_episodes and max(held.values()) <= 2, data.cache_sizes()
            assert len(data._cache("frames")) <= 1
            assert np.array_equal(decoded.frame(int(i))[0], frame)  # random access through the evictions
        assert all(np.array_equal(data.frame(i)[0], decoded.frame(i)[0]) for i in range(data.num_frames))
        if root == written[0]:  # lossless images: every frame is the one written
            source = np.concatenate([images for images, *_ in written[1]])
            assert all(np.array_equal(data.frame(i)[0], source[i]) for i in range(data.num_frames))
        blob = pickle.dumps(data)
        assert len(blob) < 500  # the root and keys, nothing loaded
        copy = pickle.loads(blob)
        assert copy.num_frames == data.num_frames and max(copy.cache_sizes().values()) == 0
