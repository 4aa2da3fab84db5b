"""The training input's fast paths give what the slow ones give, bit for bit: the pixel table against the
image processor, the reader's caches against reading every frame from disk, and a few training steps
on either path end in the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.backbones.base import resize_square
from vlm4vla_core.episodes import LeRobotDataset, LeRobotWriter, TrainStream
from vlm4vla_core.policy import PolicyConfig, VLAPolicy

SIZE = 56
CASES = [("qwen2_5_vl", "qwen2_5_vl"), ("paligemma", "paligemma"), ("paligemma", "paligemma2")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_inputs")
    for family, variant in CASES:
        get_adapter(family).make_tiny(root / variant, SIZE, seed=0, variant=variant)
    rng = np.random.default_rng(0)
    with LeRobotWriter(root / "data", fps=10, action_dim=4) as w:
        for e in range(5):
            n = 40 + 7 * e  # two row groups and a part of one per episode
            w.add_episode(rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.normal(size=(n, 4)),
                          ["push the button", "open the drawer"][e % 2])
    return root


def _frames(n, seed):
    return list(np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.mark.parametrize("family,variant", CASES)
def test_pixel_table_gives_the_image_processor_tensors(tiny, family, variant):
    adapter = get_adapter(family)
    _, processor = adapter.load(tiny / variant)
    processor.image_size = SIZE
    images = _frames(5, 1) + [np.zeros((SIZE, SIZE, 3), np.uint8), np.full((SIZE, SIZE, 3), 255, np.uint8)]
    fast = adapter.table_pixel_inputs(processor, images)
    assert processor._pixel_tables[SIZE] is not None and fast is not None
    slow = adapter.pixel_inputs(processor, resize_square(images, SIZE))
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key].dtype == slow[key].dtype and torch.equal(fast[key], slow[key]), key
    # frames of another size take the processor's path (resized there)
    assert adapter.table_pixel_inputs(processor, [np.zeros((SIZE + 4, SIZE, 3), np.uint8)]) is None


def test_a_processor_that_is_not_a_per_value_map_keeps_its_own_path(tiny, monkeypatch):
    adapter = get_adapter("paligemma")
    _, processor = adapter.load(tiny / "paligemma")
    processor.image_size = SIZE
    original = type(adapter).pixel_inputs

    def centred(self, proc, images):  # depends on the whole frame, not on each pixel alone
        out = original(self, proc, images)
        return {"pixel_values": out["pixel_values"] - out["pixel_values"].mean(dim=(1, 2, 3), keepdim=True)}

    monkeypatch.setattr(type(adapter), "pixel_inputs", centred)
    images = _frames(3, 2)
    assert adapter.table_pixel_inputs(processor, images) is None and processor._pixel_tables[SIZE] is None
    enc = adapter.encode(processor, images, ["push"] * 3)
    assert torch.equal(enc["pixel_values"], centred(adapter, processor, resize_square(images, SIZE))["pixel_values"])


def _train(tiny, family, variant, data, table: bool, steps=3):
    stats = data.action_stats()
    cfg = PolicyConfig(family=family, source=str(tiny / variant), chunk=3, action_dim=4, image_size=SIZE,
                       head_hidden=32, arm_low=tuple(stats["q01"][:-1]), arm_high=tuple(stats["q99"][:-1]))
    torch.manual_seed(0)
    policy = VLAPolicy(cfg)
    if not table:
        policy.processor._pixel_tables[SIZE] = None  # the image processor on every batch
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    losses = []
    for inputs, actions in TrainStream(data, 3, 6, seed=0, rank=0, start_step=0, total_steps=steps,
                                       encode_fn=policy.encode):
        loss, _ = policy.loss(inputs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert (policy.processor._pixel_tables[SIZE] is not None) == table
    return losses, policy.state_dict()


@pytest.mark.parametrize("family,variant", CASES[:2])
def test_training_on_the_fast_paths_ends_in_the_same_weights(tiny, family, variant):
    fast = _train(tiny, family, variant, LeRobotDataset(tiny / "data"), table=True)
    # the slow way: no table, every frame decoded from its row group read anew, one open file
    slow = _train(tiny, family, variant, LeRobotDataset(tiny / "data", cache_size=1, frame_cache_mb=0), table=False)
    assert fast[0] == slow[0]
    assert fast[1].keys() == slow[1].keys() and all(torch.equal(fast[1][k], slow[1][k]) for k in fast[1])


def test_reader_caches_give_the_frames_read_from_disk(tiny):
    cached, cold = LeRobotDataset(tiny / "data"), LeRobotDataset(tiny / "data", cache_size=1, frame_cache_mb=0)
    order = np.random.default_rng(3).integers(0, cached.num_frames, 300)
    for i in order:
        a, b = cached.frame(int(i)), cold.frame(int(i))
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
        assert np.array_equal(cached.action_chunk(int(i), 5), cold.action_chunk(int(i), 5))
    held = cached.cache_sizes()
    assert held["actions"] == cached.num_episodes  # every episode's actions stay
    assert held["groups"] == len({(e, g) for e, g in _groups(cached, order)})  # each row group read once


def _groups(data, order):
    for i in order:
        e, t = data._locate(int(i))
        yield e, t // 32
