"""Kosmos-2 (microsoft/kosmos-2-patch14-224).

``Kosmos2ForConditionalGeneration`` is built differently from the other
families: a CLIP ViT (``vision_model``), a resampler that turns its patch
features into 64 latent image embeddings (``image_to_text_projection``), and a
text decoder with sinusoidal positions (``text_model``); there is no base model
under the LM head. The policy runs ``Kosmos2Backbone``, a small module holding
those three parts that does what Kosmos-2's forward does up to the decoder's
final layer norm and returns ``last_hidden_state``.

Prompt, as the Kosmos-2 processor lays it out, with the instruction as a
phrase (``<p>...</p>`` of the paper, ``<phrase>...</phrase>`` in the tokenizer)::

    <s> <image> [64 image slots] </image> <phrase>{instruction}</phrase>  </s> <- placeholder

The image slots carry the ids the processor gives them (unk + 1, unk + 2, ...);
the decoder overwrites their embeddings with the image embeddings at
``image_embeds_position_mask``. The vision tower's input size is fixed (224).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import FamilyAdapter, Processor, UnsupportedBackbone

LEADING_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R / Kosmos-2 ids 0..3
# added by Kosmos2Processor, in its order: tag tokens, then 1024 patch-index tokens
TAG_TOKENS = ["</doc>", "<image>", "</image>", "</chunk>", "</line>", "<phrase>", "</phrase>", "<object>",
              "</object>", "</delimiter_of_multi_objects/>", "<grounding>"]
PATCH_TOKENS = [f"<patch_index_{i:04d}>" for i in range(1024)]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


class Kosmos2Backbone(nn.Module):
    """Kosmos-2 without its LM head: image embeddings -> text decoder -> ``last_hidden_state``."""

    def __init__(self, vlm: nn.Module):
        super().__init__()
        self.vision_model = vlm.vision_model
        self.image_to_text_projection = vlm.image_to_text_projection
        self.text_model = vlm.text_model.model  # Kosmos2TextTransformer (embeddings, blocks, final norm)
        self.config = vlm.config

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embed_tokens

    def forward(self, input_ids, attention_mask, pixel_values, image_embeds_position_mask, **kwargs):
        # as Kosmos2ForConditionalGeneration.get_image_features: all patch features, post-layernorm, L2-normalised
        patches = self.vision_model(pixel_values=pixel_values).last_hidden_state
        patches = F.normalize(self.vision_model.model.post_layernorm(patches), dim=-1)
        image_embeds, _ = self.image_to_text_projection(patches)
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, image_embeds=image_embeds,
                               image_embeds_position_mask=image_embeds_position_mask, **kwargs)


class Kosmos2Adapter(FamilyAdapter):
    """``vision_modules``: ``vision_model`` (CLIP ViT-L/14) and ``image_to_text_projection`` (the
    latent-query resampler into the decoder)."""

    family = "kosmos2"
    model_types = ("kosmos-2",)
    vision_attrs = ("vision_model", "image_to_text_projection")
    hub_ids = ("microsoft/kosmos-2-patch14-224",)
    tiny_variants = ("kosmos2",)
    # transformers' Kosmos2TextTransformer drops out the embeddings in forward_embedding and again before the
    # decoder layers (modeling_kosmos2.py)
    embedding_dropouts = 2

    # -- loading ---------------------------------------------------------
    def processor_extra(self, config, tokenizer) -> dict:
        add_kosmos_tokens(tokenizer)  # what Kosmos2Processor does; a no-op when they are saved
        ids = dict(zip(TAG_TOKENS, tokenizer.convert_tokens_to_ids(TAG_TOKENS)))
        vocab = config.text_config.vocab_size
        if any(i is None or i >= vocab for i in ids.values()) or tokenizer.unk_token_id is None:
            raise UnsupportedBackbone(f"the tokenizer's Kosmos-2 tag tokens {ids} do not fit the model's vocabulary "
                                      f"of {vocab}, or it has no unk token")
        vision = config.vision_config
        return dict(boi=ids["<image>"], eoi=ids["</image>"], first_image_id=tokenizer.unk_token_id + 1,
                    num_image_tokens=config.latent_query_num, image_offset=2, tower_image_size=vision.image_size,
                    patch_size=vision.patch_size)

    def checkpoint_image_size(self, config, image_processor) -> int | None:
        return int(config.vision_config.image_size)

    def backbone(self, vlm: nn.Module) -> nn.Module:
        return Kosmos2Backbone(vlm)

    def hidden_size(self, vlm: nn.Module) -> int:
        return int(vlm.config.text_config.embed_dim)

    # -- inputs ----------------------------------------------------------
    def check_image_size(self, processor: Processor) -> None:
        tower = processor.extra["tower_image_size"]
        if processor.image_size != tower:
            raise ValueError(f"image_size {processor.image_size}: this Kosmos-2 checkpoint's vision tower takes "
                             f"{tower}x{tower} images (its position embeddings are fixed)")

    def prompt_ids(self, processor: Processor, instruction: str) -> list[int]:
        tok, x = processor.tokenizer, processor.extra
        slots = list(range(x["first_image_id"], x["first_image_id"] + x["num_image_tokens"]))
        text = tok(f"<phrase>{instruction}</phrase>", add_special_tokens=False)["input_ids"]
        return [tok.bos_token_id, x["boi"], *slots, x["eoi"], *text]

    def extra_inputs(self, processor: Processor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image_embeds_position_mask": self.image_positions(processor, batch).long()}

    def image_positions(self, processor: Processor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, n = processor.extra["image_offset"], processor.extra["num_image_tokens"]
        mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        mask[:, start:start + n] = True
        return mask

    def num_image_tokens(self, config, image_size: int) -> int:
        return int(config.latent_query_num)

    def vision_sequence(self, config, image_size: int) -> int:
        """CLIP's patches at its input size plus the class token; the latent queries resample them."""
        vision = config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + 1

    # -- tiny checkpoints ------------------------------------------------
    def check_tiny_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % 14:
            raise ValueError(f"image_size {image_size} must be a positive multiple of 14 (CLIP patch size)")

    def tiny_tokenizer(self, seed: int):
        from transformers import XLMRobertaTokenizer

        vocab = _tokenizer.sentencepiece_unigram(vocab_size=1024, leading=LEADING_TOKENS, seed=seed)
        tok = XLMRobertaTokenizer(vocab=vocab + [("<mask>", 0.0)])
        add_kosmos_tokens(tok)
        return tok

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        from transformers import Kosmos2Config

        # real: decoder 2048 x 24 layers (32 heads, ffn 8192), CLIP ViT-L/14 1024 x 24, 64 latent queries
        text = dict(vocab_size=len(tokenizer), embed_dim=64, layers=2, attention_heads=4, ffn_dim=128,
                    max_position_embeddings=512, scale_embedding=True, dropout=0.1, attention_dropout=0.1,
                    activation_dropout=0.0, layerdrop=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      image_size=image_size, patch_size=14, hidden_act="quick_gelu")
        return Kosmos2Config(text_config=text, vision_config=vision, latent_query_num=16)

    def tiny_image_processor(self, image_size: int):
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                     crop_size={"height": image_size, "width": image_size},
                                     resample=3, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def add_kosmos_tokens(tokenizer) -> None:
    """Add the tag and patch-index tokens as ``Kosmos2Processor`` does (same order, same flags)."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, lstrip=True, rstrip=False, normalized=False) for t in TAG_TOKENS + PATCH_TOKENS])
