"""The memory planner: its head size matches the policy's, and its verdicts on the paper's largest backbone."""

from __future__ import annotations

import copy

import pytest

from vlm4vla_core.backbones import Processor, get_adapter
from vlm4vla_core import plan_memory
from vlm4vla_core.backbones import memory
from vlm4vla_core.backbones.card import meta_model
from vlm4vla_core.config import ConfigError, load_study
from vlm4vla_core.policy import PolicyConfig, VLAPolicy


@pytest.fixture(scope="module")
def paper():
    return load_study("config.yaml")


def test_head_params_match_the_policy():
    adapter = get_adapter("qwen2_5_vl")
    vlm = meta_model(adapter, "Qwen/Qwen2.5-VL-3B-Instruct")
    cfg = PolicyConfig(family="qwen2_5_vl", source="x", chunk=10, action_dim=7, head_hidden=1024, head_layers=2,
                       arm_low=(-1.0,) * 6, arm_high=(1.0,) * 6)
    policy = VLAPolicy(cfg, vlm, Processor(tokenizer=None, image_processor=None, image_size=224))
    assert memory.head_params(2048, 10, 7, 1024, 2) == policy.parameter_counts()["added"]


def test_30b_moe_needs_zero3_on_8_x_80gb(paper):
    plan = plan_memory.plan_job(paper, "qwen3-vl-30b-a3b", "calvin")
    assert plan["gpus"] == 8 and plan["gpu"] == "A100-80GB"
    assert not plan["zero2"]["fits"] and plan["zero3"]["fits"] and plan["fits"]
    # ZeRO-2 keeps a full bf16 copy of the weights on every GPU
    assert plan["zero2"]["parameters"] == 2 * plan["params"]
    assert plan["zero3"]["optimizer"] == pytest.approx(12 * plan["trainable"] / 8)


def test_check_refuses_a_job_that_cannot_fit(paper, tmp_path, capsys):
    import yaml

    raw = copy.deepcopy(paper.raw)
    raw["backbones"]["qwen3-vl-30b-a3b"]["training"]["zero_stage"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    args = ["--config", str(tmp_path / "c.yaml"), "--backbone", "qwen3-vl-30b-a3b", "--benchmark", "calvin", "--check"]
    assert plan_memory.main(args) == 1
    assert "does not fit" in capsys.readouterr().err
    assert plan_memory.main(args + ["--gpu", "H200-141GB"]) == 0
    with pytest.raises(ConfigError, match="resources.train.gpu_model"):
        plan_memory.plan_job(paper, "kosmos-2", "calvin", gpu="TPU")
