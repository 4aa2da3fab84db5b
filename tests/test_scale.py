"""Loading at scale: the backbone read in the training precision with no fp32 copy, and a self-contained
exported policy that evaluates without the backbone's source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.policy import BACKBONE_DIR, PolicyConfig, VLAPolicy, load_policy, save_policy

ROOT = Path(__file__).resolve().parents[1]
PEAK = """
import sys, torch
def hwm():  # this process's resident high-water mark (VmHWM: unlike ru_maxrss, not inherited from pytest via fork)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
from vlm4vla_core.policy import PolicyConfig, VLAPolicy
small, big, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
cfg = lambda src: PolicyConfig(family="qwen2_5_vl", source=src, chunk=2, action_dim=4, image_size=56,
                               head_hidden=16, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
VLAPolicy(cfg(small), dtype=dtype)  # imports and lazy set-up happen before the baseline
base = hwm()
policy = VLAPolicy(cfg(big), dtype=dtype)
peak = hwm()
assert {p.dtype for p in policy.backbone.parameters()} == {dtype}
print(peak - base, sum(p.numel() for p in policy.backbone.parameters()))
"""


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny Qwen2.5-VL and one with ~77M parameters (wide MLPs) stored in bf16, as hub checkpoints are."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    root = tmp_path_factory.mktemp("scale")
    adapter = get_adapter("qwen2_5_vl")
    adapter.make_tiny(root / "small", 56)
    adapter.make_tiny(root / "big", 56)
    config = AutoConfig.from_pretrained(root / "big")
    config.text_config.update(dict(intermediate_size=100_000, num_hidden_layers=4, layer_types=["full_attention"] * 4))
    AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16).save_pretrained(root / "big")
    return root


def _peak(checkpoints, dtype: str) -> tuple[int, int]:
    res = subprocess.run([sys.executable, "-c", PEAK, str(checkpoints / "small"), str(checkpoints / "big"), dtype],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    peak, n = map(int, res.stdout.split()[-2:])
    return peak, n


def test_bf16_load_allocates_no_fp32_copy(checkpoints):
    peak, n = _peak(checkpoints, "bfloat16")
    assert n > 70_000_000
    assert peak < 2 * n, f"peak host memory {peak / 1e6:.0f} MB for {n / 1e6:.0f}M bf16 parameters"
    fp32_peak, _ = _peak(checkpoints, "float32")  # the control: an fp32 load does make the fp32 copy
    assert fp32_peak > 3 * n


@pytest.mark.parametrize("family,variant,dtype", [("qwen2_5_vl", None, torch.float32),
                                                  ("paligemma", None, torch.bfloat16),
                                                  ("generic", "llava", torch.float32)])
def test_policy_folder_is_self_contained(tmp_path, family, variant, dtype):
    source = tmp_path / "backbone_source"
    get_adapter(family).make_tiny(source, 56, seed=0, variant=variant)
    cfg = PolicyConfig(family=family, source=str(source), chunk=3, action_dim=4, image_size=56, head_hidden=16,
                       init_seed=1, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, dtype=dtype).to(dtype).eval()  # as the DeepSpeed engine casts it
    images, texts = _frames(2), ["press the button", "open the drawer"]
    expected = policy.predict(images, texts)
    save_policy(policy, tmp_path / "policy")
    assert (tmp_path / "policy" / BACKBONE_DIR / "config.json").is_file()
    assert not list((tmp_path / "policy" / BACKBONE_DIR).glob("*.safetensors"))  # weights live once
    shutil.copytree(tmp_path / "policy", tmp_path / "elsewhere" / "policy")
    shutil.rmtree(source)  # the backbone's source is gone
    loaded = load_policy(tmp_path / "elsewhere" / "policy")
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    np.testing.assert_array_equal(loaded.predict(images, texts), expected)
