"""Qwen2.5-VL (Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct).

Prompt (the official VLM4VLA layout): the tokenizer's chat template with the
system message "You are a helpful assistant.", a user turn holding the image
and "What action should the robotic arm take to {instruction}", the assistant
start (``add_generation_prompt``), then the ActionQuery placeholder::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|> x N<|vision_end|>What action ... {instruction}<|im_end|>\\n
    <|im_start|>assistant\\n<|im_end|>   <- placeholder (eos id), overwritten by the ActionQuery

Frames are resized to ``image_size`` squared (no dynamic resolution): N =
(image_size / 14)^2 / 2^2, i.e. 64 image tokens at 224. The multimodal rotary
positions (3D over image tokens, 1D over text) are computed by the model itself
(``get_rope_index``) from ``input_ids``, ``mm_token_type_ids``, ``image_grid_thw``
and ``attention_mask``; with right padding every real token, the placeholder
included, gets the positions it would get alone, and padding is left out.
"""

from __future__ import annotations

import math

import torch
from PIL import Image

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import FamilyAdapter, Processor, Question, UnsupportedBackbone

SYSTEM_PROMPT = "You are a helpful assistant."
USER_PROMPT = "What action should the robotic arm take to {instruction}"


def user_text(instruction: str) -> str:
    """The user turn's text: the action request of a VLA prompt, or a VQA question as it is."""
    return str(instruction) if isinstance(instruction, Question) else USER_PROMPT.format(instruction=instruction)

IMAGE_TOKEN = "<|image_pad|>"
SPECIAL_TOKENS = [  # Qwen2.5-VL's special tokens, in the published order (ids 151643...)
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# chat_template of Qwen/Qwen2.5-VL-*-Instruct (chat_template.json on the Hugging Face hub)
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen2_5_VLAdapter(FamilyAdapter):
    """``vision_modules``: ``model.visual`` -- the ViT (patch embedding, window/full attention blocks)
    and its patch merger, the MLP that projects merged 2x2 patches into the language model."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    vision_attrs = ("visual",)
    hub_ids = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    tiny_variants = ("qwen2_5_vl",)

    # -- loading ---------------------------------------------------------
    def processor_extra(self, config, tokenizer) -> dict:
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_id != config.image_token_id:
            raise UnsupportedBackbone(f"tokenizer id of {IMAGE_TOKEN} is {image_id} but the model's "
                                      f"image_token_id is {config.image_token_id}")
        if not tokenizer.chat_template:
            raise UnsupportedBackbone("the tokenizer has no chat_template (tokenizer_config.json/chat_template.jinja)")
        vision = config.vision_config
        return dict(image_token_id=image_id, patch_size=vision.patch_size, merge_size=vision.spatial_merge_size)

    def checkpoint_image_size(self, config, image_processor) -> int | None:
        """A checkpoint whose image processor pins min_pixels == max_pixels = s^2 fixes side s."""
        size = getattr(image_processor, "size", None) or {}
        low, high = size.get("shortest_edge"), size.get("longest_edge")
        side = math.isqrt(high) if high else 0
        return side if low == high and side * side == high else None

    # -- inputs ----------------------------------------------------------
    def check_image_size(self, processor: Processor) -> None:
        step = processor.extra["patch_size"] * processor.extra["merge_size"]
        if processor.image_size % step:
            raise ValueError(f"image_size {processor.image_size} must be a multiple of {step} for Qwen2.5-VL "
                             "(patch 14 x merge 2), e.g. 112 or 224")

    def pixel_inputs(self, processor: Processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        s = processor.image_size
        # min_pixels = max_pixels = s^2: the processor keeps the s x s frame as it is
        out = processor.image_processor(images=images, do_resize=False, return_tensors="pt",
                                        size={"shortest_edge": s * s, "longest_edge": s * s})
        grid = s // processor.extra["patch_size"]
        expected = torch.tensor([[1, grid, grid]] * len(images))
        if not torch.equal(out["image_grid_thw"], expected):
            raise ValueError(f"image processor produced grids {out['image_grid_thw'].tolist()}, expected {expected[0].tolist()}")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def pixel_layout(self, processor: Processor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image processor's patch layout: per frame (grid/merge)^2 blocks of merge x merge patches,
        each patch channel-major, repeated over the temporal patch (a still image)."""
        b, s = frames.shape[:2]
        p, m = processor.extra["patch_size"], processor.extra["merge_size"]
        t, g = int(processor.image_processor.temporal_patch_size), s // p
        x = frames.permute(0, 3, 1, 2).reshape(b, 3, g // m, m, p, g // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)
        return {"pixel_values": x.reshape(b * g * g, 3 * t * p * p), "image_grid_thw": torch.tensor([[1, g, g]] * b)}

    def prompt_ids(self, processor: Processor, instruction: str) -> list[int]:
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": user_text(instruction)}]},
        ]
        text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(IMAGE_TOKEN) != 1:
            raise ValueError(f"chat template gave {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} tokens, expected 1")
        n = self.num_image_tokens_for(processor)
        text = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n)
        return processor.tokenizer(text, add_special_tokens=False)["input_ids"]

    def extra_inputs(self, processor: Processor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # 1 marks image tokens: the model computes 3D rotary positions over them (get_rope_index)
        mm = (batch["input_ids"] == processor.extra["image_token_id"]).long()
        return {"mm_token_type_ids": mm}

    def num_image_tokens_for(self, processor: Processor) -> int:
        patch, merge = processor.extra["patch_size"], processor.extra["merge_size"]
        return (processor.image_size // patch) ** 2 // merge**2

    def num_image_tokens(self, config, image_size: int) -> int:
        vision = config.vision_config
        return (image_size // vision.patch_size) ** 2 // vision.spatial_merge_size**2

    # -- tiny checkpoints ------------------------------------------------
    def check_tiny_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % 28:
            raise ValueError(f"image_size {image_size} must be a positive multiple of 28 for Qwen2.5-VL")

    def tiny_tokenizer(self, seed: int):
        return _tokenizer.qwen_chat_tokenizer(seed, SPECIAL_TOKENS, CHAT_TEMPLATE)

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        from transformers import Qwen2_5_VLConfig

        ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
        # real 3B: hidden 2048, 36 layers, 16/2 heads (head_dim 128, mrope [16, 24, 24]); vision 1280 x 32 blocks
        return Qwen2_5_VLConfig(
            text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                             rms_norm_eps=1e-6, hidden_act="silu",
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                             bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                             pad_token_id=ids["<|endoftext|>"]),
            # two blocks: a windowed one (window 112 px = 4x4 merged patches) and a full-attention one, as in the real ViT
            vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[1], tokens_per_second=2, hidden_act="silu"),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True,
        )

    def tiny_image_processor(self, image_size: int):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        s2 = image_size * image_size
        return Qwen2VLImageProcessorPil(size={"shortest_edge": s2, "longest_edge": s2}, patch_size=14,
                                        temporal_patch_size=2, merge_size=2)
