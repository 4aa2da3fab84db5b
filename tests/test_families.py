"""Every backbone family of the study through the shared policy, on tiny offline checkpoints;
the published configs of the ten paper backbones on the meta device; the generic path and its refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vlm4vla_core.backbones import FAMILIES, Processor, UnsupportedBackbone, get_adapter
from vlm4vla_core.backbones import card
from vlm4vla_core.backbones import tiny as tiny_mod
from vlm4vla_core.backbones.base import count_parameters
from vlm4vla_core.policy import PolicyConfig, VLAPolicy

# variant -> (family, frame side); Qwen3-VL needs multiples of 32 (patch 16 x merge 2), the others 28
CASES = {"qwen3_vl": ("qwen3_vl", 64), "qwen3_vl_moe": ("qwen3_vl_moe", 64), "kosmos2": ("kosmos2", 56),
         "internvl": ("internvl", 56), "llava": ("generic", 56), "idefics3": ("generic", 56),
         "qwen2_5_vl": ("qwen2_5_vl", 56), "paligemma": ("paligemma", 56), "paligemma2": ("paligemma", 56)}
INSTRUCTIONS = ["push", "pick up the red block", "open the top drawer and then close it slowly, carefully"]
PAPER = {  # hub id -> (family, published size in billions, image tokens per 224 px frame), from the paper brief
    "Qwen/Qwen2.5-VL-3B-Instruct": ("qwen2_5_vl", 3.8, 64), "Qwen/Qwen2.5-VL-7B-Instruct": ("qwen2_5_vl", 8.3, 64),
    "Qwen/Qwen3-VL-2B-Instruct": ("qwen3_vl", 2.1, 49), "Qwen/Qwen3-VL-4B-Instruct": ("qwen3_vl", 4.4, 49),
    "Qwen/Qwen3-VL-8B-Instruct": ("qwen3_vl", 8.8, 49), "Qwen/Qwen3-VL-30B-A3B-Instruct": ("qwen3_vl_moe", 31.1, 49),
    "google/paligemma-3b-pt-224": ("paligemma", 2.9, 256), "google/paligemma2-3b-pt-224": ("paligemma", 3.0, 256),
    "microsoft/kosmos-2-patch14-224": ("kosmos2", 1.7, 64), "OpenGVLab/InternVL3_5-4B-HF": ("internvl", 4.7, 256),
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_families")
    for variant, (family, size) in CASES.items():
        get_adapter(family).make_tiny(root / variant, size, seed=0, variant=variant)
    return root


def policy_for(tiny, variant, ablation="full", vlm=None, processor=None) -> VLAPolicy:
    family, size = CASES[variant]
    # init_seed 1: the tiny checkpoints themselves are random initialisations drawn with seed 0
    cfg = PolicyConfig(family=family, source=str(tiny / variant), chunk=3, action_dim=4, image_size=size,
                       head_hidden=32, ablation=ablation, init_seed=1, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
    return VLAPolicy(cfg, vlm, processor)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def query_hidden(policy: VLAPolicy, enc: dict) -> torch.Tensor:
    """Final hidden state at the ActionQuery (the policy's hook puts the query there)."""
    inputs = {k: v for k, v in enc.items() if k != "query_index"}
    policy._query_index = enc["query_index"]
    try:
        hidden = policy.backbone(**inputs).last_hidden_state
    finally:
        policy._query_index = None
    return hidden[torch.arange(hidden.shape[0]), enc["query_index"]]


@pytest.mark.parametrize("variant", CASES)
def test_train_then_predict(tiny, variant):
    torch.manual_seed(0)
    policy = policy_for(tiny, variant)
    enc = policy.encode(frames(2), INSTRUCTIONS[:2])
    actions = torch.rand(2, 3, 4) * 2 - 1
    actions[..., -1] = torch.tensor([[1.0, -1, 1], [-1, -1, 1]])
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    policy.eval()
    with torch.no_grad():
        start = policy.loss(enc, actions)[0].item()
    policy.train()
    for _ in range(5):
        loss, stats = policy.loss(enc, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert np.isfinite(stats["loss"])
    policy.eval()
    with torch.no_grad():
        end = policy.loss(enc, actions)[0].item()
    assert end < start
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    embed = next(n for n, p in policy.named_parameters() if p is policy.adapter.input_embeddings(policy.backbone).weight)
    vision = {id(p) for m in policy.adapter.vision_modules(policy.backbone) for p in m.parameters()}
    assert "action_query" in changed and embed in changed
    assert any(id(p) in vision for n, p in policy.named_parameters() if n in changed)  # the vision tower trains
    chunk = policy.predict(frames(3, seed=1), INSTRUCTIONS)
    assert chunk.shape == (3, 3, 4) and np.isfinite(chunk).all() and set(np.unique(chunk[..., -1])) <= {-1.0, 1.0}


@pytest.mark.parametrize("variant", CASES)
def test_padding_invariance_at_the_query(tiny, variant):
    policy = policy_for(tiny, variant).eval()
    images = frames(3, seed=2)
    with torch.no_grad():
        enc = policy.encode(images, INSTRUCTIONS)
        assert len(set(enc["attention_mask"].sum(1).tolist())) == 3  # really padded
        batch = query_hidden(policy, enc)
        for b in range(3):
            alone = query_hidden(policy, policy.encode([images[b]], [INSTRUCTIONS[b]]))[0]
            torch.testing.assert_close(batch[b], alone, atol=1e-4, rtol=0)
        # the query reads the image: another frame changes its hidden state
        other = query_hidden(policy, policy.encode(frames(1, seed=9), [INSTRUCTIONS[0]]))[0]
    assert not torch.allclose(other, batch[0], atol=1e-4)


@pytest.mark.parametrize("variant", CASES)
def test_ablations_freeze_exactly_their_modules(tiny, variant):
    family = CASES[variant][0]
    fresh, _ = get_adapter(family).load(tiny / variant)
    fresh_backbone = get_adapter(family).backbone(fresh)
    for ablation in ("full", "freeze_vision", "freeze_embeddings", "from_scratch"):
        policy = policy_for(tiny, variant, ablation)
        backbone, adapter = policy.backbone, policy.adapter
        frozen = {id(p) for p in policy.parameters() if not p.requires_grad}
        if ablation == "freeze_vision":
            vision = {id(p) for m in adapter.vision_modules(backbone) for p in m.parameters()}
            assert vision and frozen == vision
            assert vision != {id(p) for p in backbone.parameters()}  # the language model still trains
        elif ablation == "freeze_embeddings":
            assert frozen == {id(adapter.input_embeddings(backbone).weight)}
        else:
            assert not frozen
        if ablation == "from_scratch":  # same architecture, new random weights
            assert [p.shape for p in backbone.parameters()] == [p.shape for p in fresh_backbone.parameters()]
            new, old = adapter.input_embeddings(backbone).weight, adapter.input_embeddings(fresh_backbone).weight
            assert not torch.equal(new, old)
            pairs = zip(adapter.vision_modules(backbone)[0].parameters(),
                        adapter.vision_modules(fresh_backbone)[0].parameters())
            assert sum(not torch.equal(a, b) for a, b in pairs) > 1


@pytest.mark.parametrize("variant", ["qwen3_vl", "qwen3_vl_moe"])
def test_qwen3_mrope_and_deepstack(tiny, variant):
    policy = policy_for(tiny, variant).eval()
    enc = policy.encode(frames(3), INSTRUCTIONS)
    image_id = policy.processor.extra["image_token_id"]
    language = policy.backbone.language_model
    seen = {}
    hooks = [language.rotary_emb.register_forward_pre_hook(lambda m, a: seen.update(pos=a[1].clone())),
             language.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)]
    try:
        with torch.no_grad():
            base = query_hidden(policy, enc)
    finally:
        for h in hooks:
            h.remove()
    assert policy.backbone.config.text_config.rope_parameters["mrope_interleaved"]
    grid = 64 // 32  # merged patches per side
    for b in range(3):
        start = int((enc["input_ids"][b] == image_id).nonzero()[0])
        q = int(enc["query_index"][b])
        k = torch.arange(grid * grid)
        expected = torch.cat([torch.arange(start).expand(3, -1),
                              torch.stack([torch.full_like(k, start), start + k // grid, start + k % grid]),
                              (start + grid + torch.arange(q + 1 - start - grid * grid)).expand(3, -1)], dim=1)
        assert torch.equal(seen["pos"][:, b, : q + 1], expected)  # placeholder included, image block compressed
    # DeepStack features land exactly on the image tokens (not on padding, not on the ActionQuery)
    mask = seen["visual_pos_masks"]
    assert torch.equal(mask, enc["input_ids"] == image_id) and int(mask.sum()) == 3 * grid * grid
    assert len(seen["deepstack_visual_embeds"]) == 2
    assert all(e.shape[0] == int(mask.sum()) for e in seen["deepstack_visual_embeds"])
    with torch.no_grad():
        for merger in policy.backbone.visual.deepstack_merger_list:
            merger.linear_fc2.weight.zero_(), merger.linear_fc2.bias.zero_()
        assert not torch.allclose(query_hidden(policy, enc), base, atol=1e-5)  # they reach the query
        without = {k: v for k, v in enc.items() if k != "mm_token_type_ids"}
        with pytest.raises(ValueError, match="mm_token_type_ids"):  # no silent fall-back to 1D positions
            query_hidden(policy, without)


def test_prompt_layouts(tiny):
    cases = {
        "kosmos2": None,  # checked below: its image slots are ordinary ids
        "internvl": lambda n: ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<img>"
                               + "<IMG_CONTEXT>" * n + "</img>What action should the robotic arm take to pick up "
                               "the red block<|im_end|>\n<|im_start|>assistant\n<|im_end|>"),
        "qwen3_vl": lambda n: ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                               "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>What action should the "
                               "robotic arm take to pick up the red block<|im_end|>\n<|im_start|>assistant\n<|im_end|>"),
        "llava": lambda n: ("<s> USER: " + "<image>" * n + "\nWhat action should the robotic arm take to pick up "
                            "the red block ASSISTANT:</s>"),
        "idefics3": lambda n: ("<|im_start|>User:<fake_token_around_image><global-img>" + "<image>" * n
                               + "<fake_token_around_image>What action should the robotic arm take to pick up the "
                               "red block<end_of_utterance>\nAssistant:<end_of_utterance>"),
    }
    for variant, text in cases.items():
        policy = policy_for(tiny, variant)
        enc = policy.encode(frames(1), ["pick up the red block"])
        n = int(policy.adapter.image_positions(policy.processor, enc).sum())
        assert n == {"kosmos2": 16, "internvl": 4, "qwen3_vl": 4, "llava": 16, "idefics3": 4}[variant]
        decoded = policy.processor.tokenizer.decode(enc["input_ids"][0])
        if variant == "kosmos2":  # the 16 image slots hold ids unk+1.. (ordinary pieces), replaced by image embeddings
            ids = enc["input_ids"][0].tolist()
            assert ids[2:18] == list(range(4, 20)) and enc["image_embeds_position_mask"][0].tolist()[1:19] == [0] + [1] * 16 + [0]
            assert decoded.startswith("<s><image>") and decoded.endswith("</image><phrase> pick up the red block</phrase></s>")
        else:
            assert decoded == text(n), variant


def test_generic_refuses_what_it_cannot_run(tmp_path, tiny):
    from transformers import Blip2Config, LlamaConfig

    adapter = get_adapter("generic")
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64).save_pretrained(tmp_path / "text")
    with pytest.raises(UnsupportedBackbone, match=r"no vision_config.*'llama' has no AutoModelForImageTextToText"):
        adapter.load(tmp_path / "text")
    Blip2Config(vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
                qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, encoder_hidden_size=32),
                text_config=dict(model_type="opt", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 ffn_dim=64, vocab_size=64, word_embed_proj_dim=32)).save_pretrained(tmp_path / "blip2")
    with pytest.raises(UnsupportedBackbone, match="Blip2ForConditionalGeneration: no base model under base_model_prefix 'blip'"):
        adapter.load(tmp_path / "blip2")
    shutil.copytree(tiny / "llava", tmp_path / "no_template")
    (tmp_path / "no_template" / "chat_template.jinja").unlink()
    with pytest.raises(UnsupportedBackbone, match="no chat template"):
        adapter.load(tmp_path / "no_template")
    with pytest.raises(UnsupportedBackbone, match="unknown tiny variant 'blip2'"):
        adapter.make_tiny(tmp_path / "x", 56, variant="blip2")
    with pytest.raises(UnsupportedBackbone, match="not a kosmos2 checkpoint"):
        get_adapter("kosmos2").load(tiny / "internvl")
    assert {"qwen3_vl", "qwen3_vl_moe", "kosmos2", "internvl", "generic"} <= set(FAMILIES)


def test_cli_and_report_for_the_generic_family(tmp_path, tiny, capsys):
    out = tmp_path / "smol"
    assert tiny_mod.main(["--family", "generic", "--variant", "idefics3", "--out", str(out), "--image-size", "56"]) == 0
    assert (out / "model.safetensors").read_bytes() == (tiny / "idefics3" / "model.safetensors").read_bytes()
    assert tiny_mod.main(["--family", "generic", "--variant", "nope", "--out", str(tmp_path / "x")]) == 2
    rep = tmp_path / "report.json"
    assert card.main(["--family", "generic", "--source", str(out), "--out", str(rep)]) == 0
    r = json.loads(rep.read_text())
    assert r["architecture"] == "Idefics3ForConditionalGeneration" and r["image_tokens_per_frame"] == 4
    assert r["vision_params"] > 0 and r["prompt_length"] > r["image_tokens_per_frame"]


@pytest.mark.parametrize("hub_id", PAPER)
def test_paper_backbones_on_meta(hub_id):
    family, size_b, n_image = PAPER[hub_id]
    adapter = get_adapter(family)
    vlm = card.meta_model(adapter, hub_id)
    n = count_parameters(vlm)
    assert abs(n / 1e9 - size_b) / size_b < 0.05, n
    assert adapter.num_image_tokens(vlm.config, 224) == n_image
    cfg = PolicyConfig(family=family, source=hub_id, chunk=10, action_dim=7, head_hidden=1024, head_layers=2,
                       arm_low=(-1.0,) * 6, arm_high=(1.0,) * 6)
    policy = VLAPolicy(cfg, vlm, Processor(tokenizer=None, image_processor=None, image_size=224))
    counts = policy.parameter_counts()
    assert counts["added"] == adapter.hidden_size(vlm) * (1 + 1024) + 1024 * 71 + 70 and counts["added_share"] < 0.01
    print(json.dumps(dict(hub_id=hub_id, total=n, backbone=counts["backbone"], added=counts["added"],
                          added_share=counts["added_share"], image_tokens_224=n_image)))
