"""PaliGemma 1 and 2 (google/paligemma-3b-pt-224, google/paligemma2-3b-pt-224).

Both are ``PaliGemmaForConditionalGeneration``: a SigLIP vision tower, a linear
projector and a Gemma (1) or Gemma 2 (2) language model. Prompt (PaliGemma's
native layout, as its processor builds it)::

    <image> x N  <bos> {instruction} \\n  <eos>  <- placeholder, overwritten by the ActionQuery
    |------------- prefix (type 0) ------|  |- suffix (type 1) -|

N = (image_size / 14)^2 = 256 at 224; the tower's input size is fixed by the
checkpoint. ``token_type_ids`` mark the prefix: image and prompt tokens attend to
each other bidirectionally (PaliGemma's prefix-LM), the ActionQuery sits where
the first output token would and attends causally to the whole prefix and
itself. Padding (right) is typed 1 and masked out by ``attention_mask``, so it
neither joins the bidirectional block nor is attended to.
"""

from __future__ import annotations

import torch

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import FamilyAdapter, Processor, UnsupportedBackbone

IMAGE_TOKEN = "<image>"
LEADING_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma ids 0..4


class PaliGemmaAdapter(FamilyAdapter):
    """``vision_modules``: ``model.vision_tower`` (SigLIP ViT) and ``model.multi_modal_projector``
    (the linear map into the language model's width)."""

    family = "paligemma"
    model_types = ("paligemma",)
    vision_attrs = ("vision_tower", "multi_modal_projector")
    hub_ids = ("google/paligemma-3b-pt-224", "google/paligemma2-3b-pt-224")
    tiny_variants = ("paligemma", "paligemma2")

    # -- loading ---------------------------------------------------------
    def processor_extra(self, config, tokenizer) -> dict:
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_id != config.image_token_id:
            raise UnsupportedBackbone(f"tokenizer id of {IMAGE_TOKEN} is {image_id} but the model's "
                                      f"image_token_index is {config.image_token_id}")
        if tokenizer.bos_token_id is None:
            raise UnsupportedBackbone("the tokenizer has no bos token")
        vision = config.vision_config
        return dict(image_token_id=image_id, patch_size=vision.patch_size, tower_image_size=vision.image_size)

    def checkpoint_image_size(self, config, image_processor) -> int | None:
        return int(config.vision_config.image_size)

    # -- inputs ----------------------------------------------------------
    def check_image_size(self, processor: Processor) -> None:
        tower = processor.extra["tower_image_size"]
        if processor.image_size != tower:
            raise ValueError(f"image_size {processor.image_size}: this PaliGemma checkpoint's vision tower takes "
                             f"{tower}x{tower} images (its position embeddings are fixed)")

    def pixel_layout(self, processor: Processor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """SigLIP's image processor output: channel-first frames."""
        return {"pixel_values": frames.permute(0, 3, 1, 2).contiguous()}

    def prompt_ids(self, processor: Processor, instruction: str) -> list[int]:
        tok = processor.tokenizer
        n = (processor.image_size // processor.extra["patch_size"]) ** 2
        text = tok(instruction + "\n", add_special_tokens=False)["input_ids"]
        return [processor.extra["image_token_id"]] * n + [tok.bos_token_id] + text

    def extra_inputs(self, processor: Processor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        positions = torch.arange(batch["input_ids"].shape[1])[None]
        return {"token_type_ids": (positions >= batch["query_index"][:, None]).long()}

    def num_image_tokens(self, config, image_size: int) -> int:
        return (image_size // config.vision_config.patch_size) ** 2

    # -- tiny checkpoints ------------------------------------------------
    def check_tiny_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % 14:
            raise ValueError(f"image_size {image_size} must be a positive multiple of 14 (SigLIP patch size)")

    def tiny_tokenizer(self, seed: int):
        from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

        vocab, merges = _tokenizer.sentencepiece_bpe(vocab_size=1024, leading=LEADING_TOKENS, seed=seed)
        vocab = _tokenizer.append_tokens(vocab, [IMAGE_TOKEN])
        return GemmaTokenizer(vocab=vocab, merges=merges, extra_special_tokens=[IMAGE_TOKEN])

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        from transformers import PaliGemmaConfig

        vocab = len(tokenizer)
        # real PaliGemma-1: Gemma 2048 x 18 layers, 8 heads / 1 kv head of 256; PaliGemma-2: Gemma 2 2304 x 26
        text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
                    pad_token_id=0, eos_token_id=1, bos_token_id=2)
        if variant == "paligemma":
            text.update(model_type="gemma", hidden_activation="gelu_pytorch_tanh")
        else:  # Gemma 2: alternating sliding/full attention, logit soft-capping, pre/post norms
            text.update(model_type="gemma2", num_key_value_heads=2, hidden_activation="gelu_pytorch_tanh",
                        query_pre_attn_scalar=16, sliding_window=4096, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0)
        vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, patch_size=14, image_size=image_size, vision_use_head=False,
                      hidden_act="gelu_pytorch_tanh")
        return PaliGemmaConfig(text_config=text, vision_config=vision, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                               projection_dim=64, hidden_size=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)

    def tiny_image_processor(self, image_size: int):
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        proc = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, resample=3,
                                       image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
        proc.image_seq_length = (image_size // 14) ** 2  # read by PaliGemmaProcessor
        return proc
