"""Family adapters on tiny offline checkpoints of the real architectures, and published configs on meta."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlm4vla_core.backbones import FAMILIES, UnsupportedBackbone, get_adapter
from vlm4vla_core.backbones import card
from vlm4vla_core.backbones import tiny as tiny_mod
from vlm4vla_core.backbones.base import count_parameters

SIZE = 112
# (family, tiny variant) -> tiny checkpoint; PaliGemma 2 differs from 1 in its Gemma 2 text model
CASES = [("qwen2_5_vl", "qwen2_5_vl"), ("paligemma", "paligemma"), ("paligemma", "paligemma2")]
INSTRUCTIONS = ["push", "pick up the red block", "open the top drawer and then close it slowly, carefully"]
PUBLISHED_SIZES = {  # billions, from the paper brief
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.8, "Qwen/Qwen2.5-VL-7B-Instruct": 8.3,
    "google/paligemma-3b-pt-224": 2.9, "google/paligemma2-3b-pt-224": 3.0,
}


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_backbones")
    dirs = {}
    for family, variant in CASES:
        dirs[variant] = root / variant
        get_adapter(family).make_tiny(dirs[variant], SIZE, seed=0, variant=variant)
    return dirs


@pytest.fixture(scope="session")
def loaded(tiny_dirs):
    out = {}
    for family, variant in CASES:
        adapter = get_adapter(family)
        vlm, processor = adapter.load(tiny_dirs[variant])
        out[variant] = (adapter, vlm.eval(), processor)
    return out


def frames(n: int, seed: int = 0, shape=(96, 128, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def run(adapter, vlm, enc):
    inputs = {k: v for k, v in enc.items() if k != "query_index"}
    return adapter.backbone(vlm)(**inputs).last_hidden_state


@pytest.mark.parametrize("variant", [v for _, v in CASES])
def test_load_encode_forward(loaded, variant):
    adapter, vlm, processor = loaded[variant]
    assert type(vlm).__name__ == {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}.get(
        variant, "PaliGemmaForConditionalGeneration")
    assert processor.image_size == SIZE
    enc = adapter.encode(processor, frames(3), INSTRUCTIONS)
    B, L = enc["input_ids"].shape
    assert B == 3 and enc["attention_mask"].shape == (B, L) and enc["query_index"].dtype == torch.long
    with torch.no_grad():
        hidden = run(adapter, vlm, enc)
    assert hidden.shape == (B, L, adapter.hidden_size(vlm)) and torch.isfinite(hidden).all()
    image_tokens = (enc["input_ids"] == processor.extra["image_token_id"]).sum(1)
    assert image_tokens.tolist() == [adapter.num_image_tokens(vlm.config, SIZE)] * B
    assert isinstance(adapter.input_embeddings(adapter.backbone(vlm)), torch.nn.Embedding)


@pytest.mark.parametrize("variant", [v for _, v in CASES])
def test_query_index_is_last_real_token(loaded, variant):
    adapter, _, processor = loaded[variant]
    enc = adapter.encode(processor, frames(3), INSTRUCTIONS)
    lengths = enc["attention_mask"].sum(1)
    assert torch.equal(enc["query_index"], lengths - 1)
    assert len(set(lengths.tolist())) == 3  # the batch really is padded
    rows = torch.arange(3)
    assert (enc["input_ids"][rows, enc["query_index"]] == adapter.placeholder_id(processor)).all()
    # right padding: ones then zeros
    assert torch.equal(enc["attention_mask"], (torch.arange(enc["attention_mask"].shape[1]) < lengths[:, None]).long())


@pytest.mark.parametrize("variant", [v for _, v in CASES])
def test_padding_invariance(loaded, variant):
    adapter, vlm, processor = loaded[variant]
    images = frames(3, seed=1)
    with torch.no_grad():
        enc = adapter.encode(processor, images, INSTRUCTIONS)
        batch = run(adapter, vlm, enc)[torch.arange(3), enc["query_index"]]
        for b in range(3):
            alone = adapter.encode(processor, [images[b]], [INSTRUCTIONS[b]])
            single = run(adapter, vlm, alone)[0, alone["query_index"][0]]
            torch.testing.assert_close(batch[b], single, atol=1e-4, rtol=0)


def test_prompt_layouts(loaded):
    adapter, _, processor = loaded["qwen2_5_vl"]
    enc = adapter.encode(processor, frames(1), ["pick up the red block"])
    text = processor.tokenizer.decode(enc["input_ids"][0])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                    + "<|image_pad|>" * 16 + "<|vision_end|>What action should the robotic arm take to pick up the red "
                    "block<|im_end|>\n<|im_start|>assistant\n<|im_end|>")
    adapter, _, processor = loaded["paligemma"]
    enc = adapter.encode(processor, frames(1), ["pick up the red block"])
    assert processor.tokenizer.decode(enc["input_ids"][0]) == "<image>" * 64 + "<bos>pick up the red block\n<eos>"
    # prefix (image + prompt) typed 0, the ActionQuery placeholder typed 1
    assert enc["token_type_ids"][0].tolist() == [0] * (enc["input_ids"].shape[1] - 1) + [1]


def test_qwen_mrope_positions_include_the_placeholder(loaded):
    adapter, vlm, processor = loaded["qwen2_5_vl"]
    enc = adapter.encode(processor, frames(3), INSTRUCTIONS)
    seen = []
    rotary = adapter.backbone(vlm).language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(lambda mod, args: seen.append(args[1].clone()))
    try:
        with torch.no_grad():
            run(adapter, vlm, enc)
    finally:
        handle.remove()
    pos = seen[0]  # [3 (t, h, w), B, L]
    grid = SIZE // 28  # merged patches per side
    for b in range(3):
        is_image = (enc["input_ids"][b] == processor.extra["image_token_id"]).nonzero().flatten()
        start, end, q = int(is_image[0]), int(is_image[-1]) + 1, int(enc["query_index"][b])
        expected = torch.empty(3, q + 1, dtype=torch.long)
        expected[:, :start] = torch.arange(start)
        k = torch.arange(grid * grid)
        expected[0, start:end] = start
        expected[1, start:end] = start + k // grid
        expected[2, start:end] = start + k % grid
        expected[:, end:] = start + grid + torch.arange(q + 1 - end)
        assert torch.equal(pos[:, b, : q + 1], expected)
        # the placeholder's position is not its plain 1D index: the image block is compressed
        assert int(pos[0, b, q]) == q - (grid * grid - grid)


def test_qwen_mrope_needs_mm_token_type_ids(loaded):
    """Without mm_token_type_ids transformers falls back to 1D positions: encode must provide them."""
    adapter, vlm, processor = loaded["qwen2_5_vl"]
    enc = adapter.encode(processor, frames(1), ["push"])
    with torch.no_grad():
        full = run(adapter, vlm, enc)
        without = run(adapter, vlm, {k: v for k, v in enc.items() if k != "mm_token_type_ids"})
    assert not torch.allclose(full[0, -1], without[0, -1], atol=1e-4)


@pytest.mark.parametrize("variant", ["qwen2_5_vl", "paligemma", "paligemma2"])
def test_attention_pattern_around_the_query(loaded, variant):
    """The ActionQuery sees the whole prompt; nothing in the prompt sees it. PaliGemma's prefix is bidirectional."""
    adapter, vlm, processor = loaded[variant]
    enc = adapter.encode(processor, frames(1), ["pick up the red block"])
    q = int(enc["query_index"][0])
    embed = adapter.input_embeddings(adapter.backbone(vlm))

    def hidden_with(position: int | None):
        def bump(mod, args, out):
            out = out.clone()
            if position is not None:
                out[0, position] += 1.0
            return out
        handle = embed.register_forward_hook(bump)
        try:
            with torch.no_grad():
                return run(adapter, vlm, enc)[0]
        finally:
            handle.remove()

    base, at_query, before_query = hidden_with(None), hidden_with(q), hidden_with(q - 1)
    torch.testing.assert_close(at_query[:q], base[:q], atol=1e-5, rtol=0)  # prompt does not see the query
    assert not torch.allclose(at_query[q], base[q], atol=1e-4)
    assert not torch.allclose(before_query[q], base[q], atol=1e-4)  # the query sees the prompt
    first_image = int((enc["input_ids"][0] == processor.extra["image_token_id"]).nonzero()[0])
    prefix_is_bidirectional = not torch.allclose(before_query[first_image], base[first_image], atol=1e-5)
    assert prefix_is_bidirectional == variant.startswith("paligemma")


@pytest.mark.parametrize("variant", [v for _, v in CASES])
def test_vision_modules_cover_the_vision_tower(loaded, variant):
    adapter, vlm, _ = loaded[variant]
    backbone = adapter.backbone(vlm)
    vision = {id(p) for m in adapter.vision_modules(backbone) for p in m.parameters()}
    prefixes = ("visual.",) if variant == "qwen2_5_vl" else ("vision_tower.", "multi_modal_projector.")
    named = {id(p) for n, p in backbone.named_parameters() if n.startswith(prefixes)}
    language = {id(p) for p in backbone.language_model.parameters()}
    assert vision == named and vision and not vision & language
    assert vision | language == {id(p) for p in backbone.parameters()}


def test_tiny_checkpoints_are_deterministic_and_atomic(tmp_path, tiny_dirs):
    adapter = get_adapter("paligemma")
    again = tmp_path / "again"
    adapter.make_tiny(again, SIZE, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert (again / name).read_bytes() == (tiny_dirs["paligemma"] / name).read_bytes(), name
    adapter.make_tiny(again, SIZE, seed=1)  # replaces the existing folder
    assert (again / "model.safetensors").read_bytes() != (tiny_dirs["paligemma"] / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folders left
    with pytest.raises(ValueError, match="multiple of 28"):
        get_adapter("qwen2_5_vl").make_tiny(tmp_path / "bad", 100)
    assert not (tmp_path / "bad").exists()


def test_qwen_tiny_tokenizer_is_deterministic(tmp_path, tiny_dirs):
    get_adapter("qwen2_5_vl").make_tiny(tmp_path / "q", SIZE, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (tmp_path / "q" / name).read_bytes() == (tiny_dirs["qwen2_5_vl"] / name).read_bytes(), name


def test_bad_inputs_are_rejected(loaded, tiny_dirs):
    adapter, _, processor = loaded["paligemma"]
    with pytest.raises(ValueError, match="uint8"):
        adapter.encode(processor, [np.zeros((8, 8, 3), np.float32)], ["push"])
    with pytest.raises(ValueError, match="2 instructions"):
        adapter.encode(processor, frames(1), ["push", "pull"])
    processor.image_size = 224  # the tiny PaliGemma tower takes 112 px
    try:
        with pytest.raises(ValueError, match="takes 112x112"):
            adapter.encode(processor, frames(1), ["push"])
    finally:
        processor.image_size = SIZE
    with pytest.raises(UnsupportedBackbone, match="not a qwen2_5_vl checkpoint"):
        get_adapter("qwen2_5_vl").load(tiny_dirs["paligemma"])


def test_unknown_family():
    with pytest.raises(UnsupportedBackbone, match=r"'llava9'.*paligemma, qwen2_5_vl"):
        get_adapter("llava9")
    assert set(FAMILIES) >= {"qwen2_5_vl", "paligemma"}
    with pytest.raises(UnsupportedBackbone, match="no published config"):
        get_adapter("paligemma").real_config("google/paligemma-3b-mix-448")


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED_SIZES))
def test_real_configs_on_meta(hub_id):
    family = "qwen2_5_vl" if hub_id.startswith("Qwen") else "paligemma"
    adapter = get_adapter(family)
    vlm = card.meta_model(adapter, hub_id)
    n = count_parameters(vlm)
    assert abs(n / 1e9 - PUBLISHED_SIZES[hub_id]) / PUBLISHED_SIZES[hub_id] < 0.05, n
    assert adapter.num_image_tokens(vlm.config, 224) == (64 if family == "qwen2_5_vl" else 256)
    assert vlm.config.get_text_config().model_type == {
        "google/paligemma2-3b-pt-224": "gemma2", "google/paligemma-3b-pt-224": "gemma"}.get(hub_id, "qwen2_5_vl_text")


def test_cli_make_tiny_and_report(tmp_path, loaded, capsys):
    out = tmp_path / "tiny_qwen"
    assert tiny_mod.main(["--family", "qwen2_5_vl", "--out", str(out), "--image-size", "224", "--seed", "0"]) == 0
    assert tiny_mod.main(["--family", "nope", "--out", str(tmp_path / "x")]) == 2
    adapter, vlm, processor = loaded["qwen2_5_vl"]  # same seed and vocabulary, 112 px
    enc = adapter.encode(processor, frames(1), [card.SAMPLE_INSTRUCTION])
    direct = card.backbone_report(adapter, vlm, processor, policy_added_params={"added": 1000})
    assert direct["prompt_length"] == enc["input_ids"].shape[1] and direct["image_tokens_per_frame"] == 16
    assert direct["total_params"] == count_parameters(vlm)
    # the policy's share is of what the policy runs: the backbone without an untied LM head
    backbone = sum(p.numel() for p in adapter.backbone(vlm).parameters())
    assert direct["backbone_params"] == backbone and direct["policy_added_share"] == pytest.approx(1000 / backbone)
    rep = tmp_path / "report.json"
    assert card.main(["--family", "qwen2_5_vl", "--source", str(out), "--out", str(rep)]) == 0
    r = json.loads(rep.read_text())
    assert r["image_size"] == 224 and r["image_tokens_per_frame"] == 64 and r["weights"] is True
    assert r["prompt_length"] == direct["prompt_length"] + 64 - 16
    rep = tmp_path / "meta.json"
    assert card.main(["--family", "paligemma", "--source", "google/paligemma2-3b-pt-224", "--meta",
                            "--out", str(rep)]) == 0
    r = json.loads(rep.read_text())
    assert r["weights"] is False and r["device"] == "meta" and r["prompt_length"] is None
    assert r["image_tokens_per_frame"] == 256 and r["hidden_size"] == 2304


@pytest.mark.parametrize("variant", ["qwen2_5_vl", "paligemma"])
def test_report_policy_counts_match_the_policy(loaded, variant):
    """The report counts the policy's parameters without importing it; the policy agrees under every ablation."""
    from argparse import Namespace

    from vlm4vla_core.policy import ABLATIONS, PolicyConfig, VLAPolicy

    adapter, vlm, processor = loaded[variant]
    args = Namespace(family=adapter.family, source="x", chunk=5, action_dim=7, head_hidden=32, head_layers=2)
    counts = card.policy_counts(args, vlm, processor)
    assert card.ABLATIONS == ABLATIONS
    embed = adapter.input_embeddings(adapter.backbone(vlm))
    hooks = dict(embed._forward_hooks)
    for ablation in ABLATIONS:
        cfg = PolicyConfig(family=adapter.family, source="x", chunk=5, action_dim=7, head_hidden=32,
                           image_size=processor.image_size, arm_low=(-1.0,) * 6, arm_high=(1.0,) * 6,
                           ablation=ablation if ablation != "from_scratch" else "full")
        policy = VLAPolicy(cfg, vlm=vlm, processor=processor)
        real = policy.parameter_counts()
        assert (counts["added"], counts["total"]) == (real["added"], real["total"])
        assert counts["trainable"][ablation] == real["trainable"], ablation
        vlm.requires_grad_(True)  # the session's shared model: no frozen module, no extra hook left behind
        embed._forward_hooks.clear()
        embed._forward_hooks.update(hooks)
