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


def _block(**changes):
    """A small layer's facts: width 8, 2 heads of 4 sharing 1 K/V head, gated SiLU MLP of 16, two RMSNorms."""
    blk = dict(hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, gated=True, experts=0, top_k=0,
               expert_intermediate=0, norms=[[8, 6, 8], [8, 6, 8]], activation=[2, 4], fused_qkv=False,
               rotary=True, packed=False, layer_scales=0, attention="sdpa", softcap=False,
               attention_dropout=0.0, dropout=0.0, activation_dropout=0.0)
    return dict(blk, **changes)


def test_block_bytes_match_a_hand_count():
    tokens, seq = 15, 5  # 3 sequences of 5
    # bf16 (2 bytes), per token: linear inputs 2 x (8 + 8 + 8 + 16) = 80; gated MLP (gate, up, act) 2 x 3 x 16 = 96;
    # norms 2 x 8 x 6 = 96; fused attention q + repeated k, v (padding mask) 2 x (8 + 8 + 8) = 48, lse 4 x 2 = 8
    assert memory.block_bytes(_block(), tokens=tokens, seq=seq, precision="bf16") == tokens * (80 + 96 + 96 + 48 + 8)
    # no mask: K/V at their own width 4: attention 2 x (8 + 4 + 4) = 32
    assert memory.block_bytes(_block(), tokens=tokens, seq=seq, precision="bf16",
                              attention_mask=False) == tokens * (80 + 96 + 96 + 32 + 8)
    # fp32: 4 bytes a value, norms 8 bytes a value: 160 + 192 + 128 + 96 + 8
    assert memory.block_bytes(_block(), tokens=tokens, seq=seq, precision="fp32") == tokens * (160 + 192 + 128 + 96 + 8)
    # plain MLP: only the activation's input inside (2 x 16 = 32 instead of 96)
    assert memory.block_bytes(_block(gated=False), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 32 + 96 + 48 + 8)
    # eager attention with a soft cap: q, repeated k, v 2 x 3 x 8 = 48; scores 2 heads x 5 x (4 + 2 + 2) = 80
    assert memory.block_bytes(_block(attention="eager", softcap=True), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 96 + 96 + 48 + 80)
    # dropout on a CPU: SDPA takes the math kernel (fp32 q, k, v: 4 x 24 = 96; 3 fp32 score matrices 3 x 4 x 2 x 5 =
    # 120) and the two residual masks keep 2 x 8 bf16 values (32); on CUDA fused, masks of 1 byte (16)
    dropped = _block(attention_dropout=0.1, dropout=0.1)
    assert memory.block_bytes(dropped, tokens=tokens, seq=seq, precision="bf16",
                              kernels="cpu") == tokens * (80 + 96 + 96 + 96 + 120 + 32)
    assert memory.block_bytes(dropped, tokens=tokens, seq=seq, precision="bf16") == tokens * (80 + 96 + 96 + 48 + 8 + 16)
    # the activation's dropout keeps a mask of the MLP's width: 16 x 1 byte on CUDA
    assert memory.block_bytes(_block(activation_dropout=0.1), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 96 + 96 + 48 + 8 + 16)
    # a mixture of 4 experts of width 3, 2 per token: inputs 2 x (8 + 8 + 8 + 6) = 60, experts' gated MLP
    # 2 x 3 x 6 = 36, routed copies and outputs 2 x 2 x 2 x 8 = 64, router probabilities 4 x 4 = 16
    moe = _block(experts=4, top_k=2, expert_intermediate=3)
    assert memory.block_bytes(moe, tokens=tokens, seq=seq, precision="bf16") == tokens * (60 + 36 + 64 + 16 + 96 + 48 + 8)
    # one fused q/k/v projection with rotary embeddings: the whole output (2 x 24) stays beside the rotated q and k
    # (2 x 16); frames packed into one sequence: each frame's attention output, 2 x 8
    assert memory.block_bytes(_block(fused_qkv=True), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 96 + 96 + 48 + 8 + 32)
    assert memory.block_bytes(_block(fused_qkv=True, packed=True), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 96 + 96 + 48 + 8 + 32 + 16)
    # QuickGELU keeps its input and its sigmoid (4 bytes a value in bf16); two layer scales keep their branches
    assert memory.block_bytes(_block(gated=False, activation=[4, 8], layer_scales=2), tokens=tokens, seq=seq,
                              precision="bf16") == tokens * (80 + 64 + 96 + 48 + 8 + 32)
    with pytest.raises(ValueError, match="kernels"):
        memory.block_bytes(_block(), tokens=1, seq=1, precision="bf16", kernels="tpu")


def test_norms_keep_what_their_implementation_saves():
    import torch
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    # an RMSNorm computing in fp32 keeps an fp32 copy of its input and the normalised values (before the weight)
    assert memory.norm_bytes_per_value(Qwen2RMSNorm(64), torch.bfloat16) == 4 + 2
    assert memory.norm_bytes_per_value(Qwen2RMSNorm(64), torch.float32) == 4 + 4
    # Gemma applies (1 + weight) in fp32: both kept tensors are fp32
    assert memory.norm_bytes_per_value(GemmaRMSNorm(64), torch.bfloat16) == 4 + 4
    # LayerNorm keeps its input (and per-row statistics)
    assert memory.norm_bytes_per_value(torch.nn.LayerNorm(64), torch.bfloat16) == 2
    # activation functions: SiLU its input; QuickGELU (x * sigmoid(1.702 x)) its input and the sigmoid
    from transformers.activations import ACT2FN

    assert memory.kept_bytes_per_value(ACT2FN["silu"], torch.bfloat16, 64) == 2
    assert memory.kept_bytes_per_value(ACT2FN["quick_gelu"], torch.bfloat16, 64) == 4


def test_activations_sum_the_layers_of_both_towers(paper):
    adapter = get_adapter("qwen2_5_vl")
    facts = memory.architecture_facts(adapter, meta_model(adapter, "Qwen/Qwen2.5-VL-3B-Instruct"), 224)
    act = memory.activation_bytes(facts, micro_batch=2, precision="bf16", gradient_checkpointing=False)
    s = facts["image_tokens"] + memory.PROMPT_TEXT_TOKENS
    text = memory.block_bytes(facts["text_block"], tokens=2 * s, seq=s, precision="bf16")
    # beside the 36 layers: the final RMSNorm (an fp32 copy of its input and the normalised values, 4 + 2 bytes)
    assert act["text_beside"] == 2 * s * 2048 * 6
    assert act["text"] == facts["text_layers"] * text + act["text_beside"] == 36 * text + act["text_beside"]
    assert act["vision_per_layer"] > 0 and act["total"] == act["text"] + act["vision"]
    ckpt = memory.activation_bytes(facts, micro_batch=2, precision="bf16", gradient_checkpointing=True)
    assert ckpt["text"] == 2 * 2 * s * 2048 * 36 + act["text_beside"]
    # the backward pass recomputes one layer at a time: the larger of the two towers' layers
    assert ckpt["recomputed"] == max(text, act["vision_per_layer"])
    assert ckpt["total"] == ckpt["text"] + ckpt["vision"] + ckpt["recomputed"]
    frozen = memory.activation_bytes(facts, micro_batch=2, precision="bf16", gradient_checkpointing=False,
                                     frozen_vision=True)
    assert frozen["vision"] == 0 and frozen["total"] == act["text"]


def test_kosmos2_drops_out_its_embeddings_twice():
    adapter = get_adapter("kosmos2")
    facts = memory.architecture_facts(adapter, meta_model(adapter, "microsoft/kosmos-2-patch14-224"), 224)
    assert facts["embedding_dropouts"] == 2 and facts["text_norms"] == [[2048, 2, 4]]  # the final LayerNorm
    s = facts["image_tokens"] + memory.PROMPT_TEXT_TOKENS
    kept = {k: memory.activation_bytes(facts, micro_batch=1, precision="bf16", gradient_checkpointing=False,
                                       kernels=k)["text_beside"] for k in memory.KERNELS}
    # the final LayerNorm keeps its bf16 input (2 bytes a value); the two masks 1 byte a value on CUDA, 2 on a CPU
    assert kept == {"cuda": s * 2048 * (2 + 2 * 1), "cpu": s * 2048 * (2 + 2 * 2)}
