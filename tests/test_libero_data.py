"""LIBERO-10 training data as the paper used it: OpenVLA's no-op rule and replay loop on hand-made inputs,
the regeneration's drop/count logic through a fake simulator process, the regenerated RLDS set's import
(when TensorFlow is here) and the regeneration of demos recorded in the real simulator (when the LIBERO
environment is here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.libero10 import INSTRUCTIONS
from vlm4vla_core.benchmarks.libero10 import importer as libero_importer
from vlm4vla_core.benchmarks.libero10.replay import SETTLE_ACTION, is_noop, noop_mask, replay
from vlm4vla_core.episodes.source import TrainingSet

from bridge_fixtures import tf_python
from vlm4vla_core.testing.libero import write_libero_hdf5

ROOT = Path(__file__).resolve().parents[1]
LIBERO = benchmarks.get("libero10")


def entry(**kw) -> dict:
    return LIBERO.settings({**dict(kind="libero10", chunk=4, data_path="unused"), **kw})


# -- the no-op rule and the replay loop ----------------------------------------------------------
def official_kept(actions, threshold=1e-4):
    """OpenVLA's filter, transcribed: experiments/robot/libero/regenerate_libero_dataset.py (openvla/openvla),
    ``is_noop`` lines 46-68 and the replay loop lines 137-143 (compared with the last *kept* action)."""
    def off_is_noop(action, prev_action=None):
        if prev_action is None:
            return np.linalg.norm(action[:-1]) < threshold
        return np.linalg.norm(action[:-1]) < threshold and action[-1] == prev_action[-1]

    kept = []
    for action in actions:
        prev_action = kept[-1] if len(kept) > 0 else None
        if off_is_noop(action, prev_action):
            continue
        kept.append(action)
    return kept


def test_noop_rule_on_hand_made_actions():
    still_open, still_close = [0, 0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, 1]
    move, tiny = [0.2, 0, 0, 0, 0, 0, -1], [5e-5, 0, 0, 0, 0, 0, 1]
    actions = np.array([still_close, still_open, move, still_open, still_close, still_close, tiny, move, still_open],
                       dtype=float)
    # leading still actions go whatever their gripper (nothing is kept yet); later, a still arm is kept
    # only when its gripper command differs from the last kept action's
    assert noop_mask(actions).tolist() == [True, True, False, True, False, True, True, False, True]
    assert is_noop(np.array(still_close), None) and not is_noop(np.array(still_close), np.array(move))


def test_noop_rule_matches_openvla_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        actions = np.zeros((n, 7))
        moving = rng.random(n) < 0.4
        actions[moving, :6] = rng.normal(0, 0.3, (moving.sum(), 6))
        actions[rng.random(n) < 0.2, int(rng.integers(6))] = 5e-5  # below the threshold
        actions[:, 6] = rng.choice([-1.0, 1.0], n, p=[0.7, 0.3])
        mine = actions[~noop_mask(actions)]
        theirs = official_kept(actions)
        assert len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs))


def test_replay_records_the_frame_before_each_executed_action():
    taken = []

    def step(action):
        taken.append(np.asarray(action).tolist())
        return len(taken), len(taken) == 13  # done only after the 13th step

    actions = np.array([[0, 0, 0, 0, 0, 0, -1], [1, 0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, -1],
                        [0, 1, 0, 0, 0, 0, -1], [0, 0, 1, 0, 0, 0, 1]], dtype=float)
    frames, kept, success, noops = replay(0, actions, step, settle_steps=10)
    assert taken[:10] == [SETTLE_ACTION.tolist()] * 10 and taken[10:] == actions[[1, 3, 4]].tolist()
    assert frames == [10, 11, 12] and noops == 2 and success  # done after the last step
    frames, kept, success, _ = replay(0, actions[:4], lambda a: (0, True), settle_steps=0)
    assert success and len(kept) == 2
    _, _, success, _ = replay(0, actions, lambda a: (0, False), settle_steps=10)
    assert not success
    assert replay(0, actions[[0, 2]], lambda a: (0, True), settle_steps=0)[2] is False  # no step at all


# -- regeneration: the drop/count logic through a fake simulator process -------------------------
def test_regeneration_keeps_successful_replays_and_counts_the_dropped(tmp_path, capsys):
    src = write_libero_hdf5(tmp_path / "libero_10", demos=3, length=6)
    fake = f"{sys.executable} {ROOT / 'tests' / 'helpers' / 'fake_libero_replay.py'}"
    e = entry(data_path=str(src), regenerate=True, simulator_python=fake, camera_size=12)
    LIBERO.build_data(e, tmp_path / "data", workers=3)  # three fake simulator processes, results in demo order
    printed = capsys.readouterr().out

    import h5py

    expected, k = [], 0  # per demo in task order: (kept actions, success) by the fake's rule (x sum > 0)
    for t in range(10):
        path = next(p for p in src.glob("*.hdf5") if INSTRUCTIONS[t].replace(" ", "_") in p.name)
        with h5py.File(path) as f:
            for d in range(3):
                actions = np.asarray(f["data"][f"demo_{d}"]["actions"], np.float64)
                kept = np.array(official_kept(actions))
                expected.append((k, kept, kept[:, 0].sum() > 0, 6 - len(kept)))
                k += 1
    good = [x for x in expected if x[2]]
    assert 0 < len(good) < len(expected)  # the fixture has both outcomes
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["replays"] == 30 and stats["replays_dropped"] == 30 - len(good) == len(stats["dropped_demos"])
    assert stats["noops_dropped"] == sum(x[3] for x in expected) == 30 * 2
    assert stats["source_format"] == "libero_hdf5 regenerated" and len(stats["skipped_files"]) == 1
    assert f"{len(good)} of 30 demos kept, {30 - len(good)} replays dropped" in printed
    assert stats["replay_workers"] == 3
    data = TrainingSet(tmp_path / "data")
    assert len(data.episodes) == len(good) and data.num_frames == sum(len(x[1]) for x in good)
    start = 0
    for k, kept, _, _ in good:
        assert np.allclose(data.episode_actions(len([g for g in good if g[0] < k])), kept)
        image, text = data.frame(start)
        assert image.shape == (12, 12, 3) and image[0, 0, 0] == 7 * k + 10  # after the 10 settle steps
        assert text == INSTRUCTIONS[k // 3]
        start += len(kept)
    assert not (tmp_path / "data.work").exists()


def test_a_stopped_regeneration_continues_after_the_demos_it_took(tmp_path, monkeypatch, capsys):
    src = write_libero_hdf5(tmp_path / "libero_10", demos=3, length=6)
    fake = f"{sys.executable} {ROOT / 'tests' / 'helpers' / 'fake_libero_replay.py'}"
    e = entry(data_path=str(src), regenerate=True, simulator_python=fake, camera_size=12)
    LIBERO.build_data(e, tmp_path / "whole", workers=2)
    log = tmp_path / "replayed.txt"
    monkeypatch.setenv("FAKE_LIBERO_LOG", str(log))
    monkeypatch.setenv("FAKE_LIBERO_STOP_AT", "13")
    with pytest.raises(RuntimeError, match=r"stopped before demo 14 of 30 \(exit 5.*A rerun continues"):
        LIBERO.build_data(e, tmp_path / "data", workers=2)
    assert not (tmp_path / "data").exists()
    assert len((tmp_path / "data.work" / "journal.jsonl").read_text().splitlines()) == 13
    monkeypatch.delenv("FAKE_LIBERO_STOP_AT")
    log.write_text("")
    capsys.readouterr()
    LIBERO.build_data(e, tmp_path / "data", workers=2)
    assert "resuming: 13 of 30 demos already replayed" in capsys.readouterr().out
    assert sorted(int(x) for x in log.read_text().split()) == list(range(13, 30))  # only the rest replayed
    a, b = TrainingSet(tmp_path / "whole"), TrainingSet(tmp_path / "data")
    assert a.num_frames == b.num_frames and len(a.episodes) == len(b.episodes)
    assert all(np.array_equal(a.episode_actions(i), b.episode_actions(i)) for i in range(len(a.episodes)))
    assert all(np.array_equal(a.frame(i)[0], b.frame(i)[0]) for i in range(a.num_frames))
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    whole = json.loads((tmp_path / "whole" / "stats.json").read_text())
    assert stats["resumed_after"] == 13 and stats["dropped_demos"] == whole["dropped_demos"]
    assert stats["noops_dropped"] == whole["noops_dropped"] and not (tmp_path / "data.work").exists()


def test_regeneration_stops_when_the_simulator_fails(tmp_path):
    src = write_libero_hdf5(tmp_path / "libero_10", demos=1, length=4)
    (tmp_path / "broken.py").write_text("raise SystemExit(3)\n")
    e = entry(data_path=str(src), regenerate=True, simulator_python=f"{sys.executable} {tmp_path / 'broken.py'}")
    with pytest.raises(RuntimeError, match=r"stopped before demo 1 of 10 \(exit 3"):
        LIBERO.build_data(e, tmp_path / "data")
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match=r"task\(s\) \[9\]"):
        LIBERO.build_data(entry(data_path=str(write_libero_hdf5(tmp_path / "nine", tasks=range(9))), regenerate=True),
                          tmp_path / "d9")


# -- OpenVLA's regenerated RLDS set ------------------------------------------------------------------
_RLDS_BUILDER = """
import sys
import numpy as np
import tensorflow_datasets as tfds

data = np.load(sys.argv[1])
count, size = int(data["count"]), int(data["size"])
image = lambda: tfds.features.Image(shape=(size, size, 3), dtype=np.uint8, encoding_format="jpeg")


class Libero10NoNoops(tfds.core.GeneratorBasedBuilder):  # the layout of libero_10_no_noops 1.0.0
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": tfds.features.FeaturesDict({
                    "image": image(), "wrist_image": image(),
                    "state": tfds.features.Tensor(shape=(8,), dtype=np.float32),
                    "joint_state": tfds.features.Tensor(shape=(7,), dtype=np.float32)}),
                "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                "discount": tfds.features.Scalar(dtype=np.float32),
                "reward": tfds.features.Scalar(dtype=np.float32),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                "language_instruction": tfds.features.Text()}),
            "episode_metadata": tfds.features.FeaturesDict({"file_path": tfds.features.Text()})}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(count))}

    def _generate_examples(self, episodes):
        for e in episodes:
            n, task = len(data[f"action{e}"]), str(data[f"task{e}"])
            steps = [dict(observation=dict(image=data[f"image{e}"][i], wrist_image=data[f"image{e}"][i],
                                           state=data[f"state{e}"][i], joint_state=np.zeros(7, np.float32)),
                          action=data[f"action{e}"][i], discount=1.0, reward=float(i == n - 1), is_first=i == 0,
                          is_last=i == n - 1, is_terminal=i == n - 1, language_instruction=task)
                     for i in range(n)]
            yield f"{e:05d}", dict(steps=steps, episode_metadata=dict(file_path=f"demo{e}.hdf5"))


Libero10NoNoops(data_dir=sys.argv[2]).download_and_prepare()
"""


@pytest.mark.slow
def test_importer_converts_the_regenerated_rlds_set(tmp_path):
    python = tf_python()
    if python is None:
        pytest.skip("no TensorFlow here: set VLM4VLA_TF_PYTHON to a Python with tensorflow and tensorflow-datasets")
    rng = np.random.default_rng(0)
    other = "pick up the alphabet soup and place it in the basket"  # a LIBERO-90 task
    lengths, tasks = [5, 3, 4], [INSTRUCTIONS[2], other, INSTRUCTIONS[9]]
    arrays = dict(count=3, size=16)
    for e, (n, task) in enumerate(zip(lengths, tasks)):
        img = np.zeros((n, 16, 16, 3), np.uint8)
        img[:, :8] = 200  # upright as stored: bright top half (JPEG keeps a flat block)
        arrays.update({f"image{e}": img, f"state{e}": rng.normal(size=(n, 8)).astype(np.float32),
                       f"action{e}": rng.uniform(-1, 1, (n, 7)).astype(np.float32), f"task{e}": np.array(task)})
    np.savez(tmp_path / "trajs.npz", **arrays)
    (tmp_path / "builder.py").write_text(textwrap.dedent(_RLDS_BUILDER))
    res = subprocess.run([*python.split(), str(tmp_path / "builder.py"), str(tmp_path / "trajs.npz"),
                          str(tmp_path / "rlds")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    LIBERO.build_data(entry(data_path=str(tmp_path / "rlds"), rlds_python=python), tmp_path / "data")
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    journal = [json.loads(x) for x in (tmp_path / "data/lerobot/meta/journal.jsonl").read_text().splitlines()]
    order = [int(r["file_path"].removeprefix("demo").removesuffix(".hdf5")) for r in journal]  # TFDS's own order
    libero10 = [k for k, o in enumerate(order) if o != 1]  # the LIBERO-90 instruction is not selected
    assert stats["source_format"].startswith("rlds") and stats["trajectories"] == 3 and stats["episodes"] == 2
    assert stats["image_key"] == "observation.images.image" and stats["frames"] == lengths[0] + lengths[2]
    data = TrainingSet(tmp_path / "data")
    start = 0
    for k in libero10:
        o = order[k]
        assert np.allclose(data.episode_actions(libero10.index(k)), arrays[f"action{o}"])  # actions as they are
        image, text = data.frame(start)
        assert text == tasks[o] and image[:8].mean() > 150 and image[8:].mean() < 50  # not rotated again
        start += lengths[o]
    assert json.loads((tmp_path / "data/dataset.json").read_text())["root"] == "lerobot"
    assert not (tmp_path / "data.work").exists()


# -- regeneration in the real simulator ------------------------------------------------------------
RECORDED = ROOT / "tests" / "data" / "libero_recorded_demos.npz"  # written by tests/libero_record.py


def _libero_python() -> str | None:
    python = os.environ.get("VLM4VLA_LIBERO_PYTHON") or str(ROOT / ".venv-libero" / "bin" / "python")
    return python if Path(python.split()[0]).exists() else None


@pytest.mark.slow
def test_regeneration_replays_demos_recorded_in_the_simulator(tmp_path, capsys):
    python = _libero_python()
    if python is None:
        pytest.skip("no LIBERO environment: run envs/setup-libero-venv.sh .venv-libero or set VLM4VLA_LIBERO_PYTHON")
    import h5py

    rec = np.load(RECORDED)
    assert not rec["done_0"] and rec["done_1"]  # as recorded: demo 0 fails, demo 1 ends with its task done
    path = tmp_path / "libero_10" / f"KITCHEN_SCENE_{INSTRUCTIONS[0].replace(' ', '_')}_demo.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_group("data").attrs["problem_info"] = json.dumps({"language_instruction": INSTRUCTIONS[0]})
        for d in range(2):
            f.create_dataset(f"data/demo_{d}/states", data=rec[f"states_{d}"])
            f.create_dataset(f"data/demo_{d}/actions", data=rec[f"actions_{d}"])
    found, skipped = libero_importer.demo_files([path])
    requests = libero_importer.replay_requests(found)
    assert [(r["task"], r["reset"], r["demo"]) for r in requests] == [(0, 0, "demo_0"), (0, 1, "demo_1")]
    stats = libero_importer.regenerate(requests, tmp_path / "data", python, camera_size=256, source=str(path.parent))
    printed = capsys.readouterr().out
    assert "1 of 2 demos kept, 1 replays dropped" in printed
    assert stats["replays"] == 2 and stats["replays_dropped"] == 1 and stats["dropped_demos"] == [f"{path.name}:demo_0"]
    actions = rec["actions_1"]
    kept = actions[~noop_mask(actions)]
    assert stats["noops_dropped"] == 2 * int(noop_mask(actions).sum()) and len(kept) < len(actions)
    data = TrainingSet(tmp_path / "data")
    assert len(data.episodes) == 1 and data.num_frames == len(kept)
    assert np.allclose(data.episode_actions(0), kept)
    image, text = data.frame(0)
    assert image.shape == (256, 256, 3) and text == INSTRUCTIONS[0] and image.std() > 10  # a rendered scene
    print(f"regenerated 2 recorded demos: 1 dropped, {stats['replay_seconds']} s")
