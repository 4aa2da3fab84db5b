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
from vlm4vla_core.benchmarks.libero10 import data as libero_data
from vlm4vla_core.benchmarks.libero10.replay import SETTLE_ACTION, is_noop, noop_mask, replay
from vlm4vla_core.episodes.source import TrainingSet

from libero_fixtures import write_libero_hdf5

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
    LIBERO.build_data(e, tmp_path / "data")
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
    assert "a message of the simulator" in printed
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


def test_regeneration_stops_when_the_simulator_fails(tmp_path):
    src = write_libero_hdf5(tmp_path / "libero_10", demos=1, length=4)
    (tmp_path / "broken.py").write_text("raise SystemExit(3)\n")
    e = entry(data_path=str(src), regenerate=True, simulator_python=f"{sys.executable} {tmp_path / 'broken.py'}")
    with pytest.raises(RuntimeError, match=r"stopped after 0 of 10 demos \(exit 3"):
        LIBERO.build_data(e, tmp_path / "data")
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match=r"task\(s\) \[9\]"):
        LIBERO.build_data(entry(data_path=str(write_libero_hdf5(tmp_path / "nine", tasks=range(9))), regenerate=True),
                          tmp_path / "d9")
