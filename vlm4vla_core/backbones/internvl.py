"""InternVL 3.5, transformers-native (OpenGVLab/InternVL3_5-4B-HF).

``InternVLForConditionalGeneration``: InternViT (``vision_tower``), pixel shuffle
(0.5: 2x2 patches -> one token) and an MLP projector (``multi_modal_projector``)
into a Qwen3 language model. Prompt (the official VLM4VLA layout: the
tokenizer's chat template, InternVL's image block in the user turn)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <img><IMG_CONTEXT> x N</img>What action should the robotic arm take to {instruction}<|im_end|>\\n
    <|im_start|>assistant\\n<|im_end|>   <- placeholder (eos id), overwritten by the ActionQuery

One tile, no dynamic tiling. As in the official VLM4VLA code, the frame is
resized to ``image_size`` (224) and then to the tower's input size (448 for the
real checkpoint), so N = (448 / 14)^2 * 0.5^2 = 256 whatever ``image_size`` is.
"""

from __future__ import annotations

import torch
from PIL import Image

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import FamilyAdapter, Processor, UnsupportedBackbone
from vlm4vla_core.backbones.qwen2_5_vl import CHAT_TEMPLATE, SPECIAL_TOKENS, SYSTEM_PROMPT, user_text

IMAGE_TOKEN, IMAGE_START, IMAGE_END = "<IMG_CONTEXT>", "<img>", "</img>"
INTERNVL_TOKENS = SPECIAL_TOKENS + [IMAGE_START, IMAGE_END, IMAGE_TOKEN]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _side(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class InternVLAdapter(FamilyAdapter):
    """``vision_modules``: ``model.vision_tower`` (InternViT) and ``model.multi_modal_projector``
    (layer norm + MLP over the pixel-shuffled features)."""

    family = "internvl"
    model_types = ("internvl",)
    vision_attrs = ("vision_tower", "multi_modal_projector")
    hub_ids = ("OpenGVLab/InternVL3_5-4B-HF",)
    tiny_variants = ("internvl",)

    # -- loading ---------------------------------------------------------
    def processor_extra(self, config, tokenizer) -> dict:
        ids = tokenizer.convert_tokens_to_ids([IMAGE_START, IMAGE_END, IMAGE_TOKEN])
        if ids[2] != config.image_token_id:
            raise UnsupportedBackbone(f"tokenizer id of {IMAGE_TOKEN} is {ids[2]} but the model's "
                                      f"image_token_id is {config.image_token_id}")
        if not tokenizer.chat_template:
            raise UnsupportedBackbone("the tokenizer has no chat_template (tokenizer_config.json/chat_template.jinja)")
        return dict(image_token_id=ids[2], image_start=IMAGE_START, image_end=IMAGE_END,
                    tower_image_size=_side(config.vision_config.image_size),
                    num_image_tokens=self.num_image_tokens(config, 0))

    # -- inputs ----------------------------------------------------------
    def pixel_inputs(self, processor: Processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        tower = processor.extra["tower_image_size"]
        out = processor.image_processor(images=images, do_resize=True, size={"height": tower, "width": tower},
                                        crop_to_patches=False, return_tensors="pt")
        return {"pixel_values": out["pixel_values"]}

    def prompt_ids(self, processor: Processor, instruction: str) -> list[int]:
        user = IMAGE_TOKEN + user_text(instruction)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(IMAGE_TOKEN) != 1:
            raise ValueError(f"chat template gave {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} tokens, expected 1")
        block = IMAGE_START + IMAGE_TOKEN * processor.extra["num_image_tokens"] + IMAGE_END
        return processor.tokenizer(text.replace(IMAGE_TOKEN, block), add_special_tokens=False)["input_ids"]

    def num_image_tokens(self, config, image_size: int) -> int:
        """Tokens per tile: the tower's patch grid, pixel-shuffled (independent of the frame size)."""
        vision = config.vision_config
        grid = _side(vision.image_size) // _side(vision.patch_size)
        return int(grid * grid * config.downsample_ratio**2)

    def vision_sequence(self, config, image_size: int) -> int:
        """InternViT's patches at the tower's input size plus its class token (before the pixel shuffle)."""
        vision = config.vision_config
        return (_side(vision.image_size) // _side(vision.patch_size)) ** 2 + 1

    # -- tiny checkpoints ------------------------------------------------
    def check_tiny_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % 28:
            raise ValueError(f"image_size {image_size} must be a positive multiple of 28 for InternVL "
                             "(patch 14 x pixel shuffle 2)")

    def tiny_tokenizer(self, seed: int):
        return _tokenizer.qwen_chat_tokenizer(seed, INTERNVL_TOKENS, CHAT_TEMPLATE)

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        from transformers import InternVLConfig

        ids = dict(zip(INTERNVL_TOKENS, tokenizer.convert_tokens_to_ids(INTERNVL_TOKENS)))
        # real 4B: InternViT-300M (1024 x 24, 448 px) + Qwen3-4B (2560 x 36, 32/8 heads of 128)
        text = dict(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False,
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"])
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      image_size=[image_size, image_size], patch_size=[14, 14], attention_bias=True,
                      norm_type="layer_norm", use_qk_norm=False, layer_scale_init_value=0.1)
        return InternVLConfig(text_config=text, vision_config=vision, image_token_id=ids[IMAGE_TOKEN],
                              downsample_ratio=0.5, image_seq_length=(image_size // 28) ** 2,
                              tie_word_embeddings=False)

    def tiny_image_processor(self, image_size: int):
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        return GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, crop_to_patches=False,
                                        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, resample=3)
