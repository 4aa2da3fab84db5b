"""Qwen3-VL, dense (Qwen/Qwen3-VL-{2B,4B,8B}-Instruct) and MoE (Qwen/Qwen3-VL-30B-A3B-Instruct).

Same prompt as Qwen2.5-VL (chat template, system "You are a helpful assistant.",
user image + "What action should the robotic arm take to {instruction}",
assistant start, then the ActionQuery placeholder). What differs:

- patch 16 (not 14): N = (image_size / 16)^2 / 2^2 = 49 image tokens at 224;
- interleaved multimodal rotary positions, computed by the model
  (``get_rope_index``) from ``mm_token_type_ids`` and ``image_grid_thw`` for the
  whole sequence, placeholder included (without ``mm_token_type_ids`` the model
  refuses the batch instead of falling back to 1D positions);
- DeepStack: features of three ViT layers are added to the hidden states of the
  first decoder layers at the image positions (``input_ids == image_token_id``).
  The ActionQuery is never an image token and padding is on the right, so the
  image positions of every sample are the ones it has alone.
"""

from __future__ import annotations

from vlm4vla_core.backbones.qwen2_5_vl import SPECIAL_TOKENS, Qwen2_5_VLAdapter


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    """``vision_modules``: ``model.visual`` -- the ViT (learned + rotary positions), its 2x2 patch
    merger into the language model and the DeepStack mergers."""

    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    hub_ids = ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct")
    tiny_variants = ("qwen3_vl",)
    patch_size = 16

    def check_tiny_image_size(self, image_size: int) -> None:
        step = 2 * self.patch_size
        if image_size <= 0 or image_size % step:
            raise ValueError(f"image_size {image_size} must be a positive multiple of {step} for Qwen3-VL "
                             f"(patch {self.patch_size} x merge 2)")

    def text_config(self, tokenizer, ids: dict) -> dict:
        # real 2B: hidden 2048, 28 layers, 16/8 heads of 128, mrope [24, 20, 20] interleaved
        return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                    rms_norm_eps=1e-6, hidden_act="silu",
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                     "mrope_interleaved": True},
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"])

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        from transformers import AutoConfig

        ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
        # real: 24-27 ViT blocks, DeepStack taps at [5, 11, 17] or [8, 16, 24]; here 2 blocks, both tapped
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                      patch_size=self.patch_size, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=64, deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh")
        return AutoConfig.for_model(
            self.model_types[0], text_config=self.text_config(tokenizer, ids), vision_config=vision,
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True)

    def tiny_image_processor(self, image_size: int):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        s2 = image_size * image_size
        return Qwen2VLImageProcessorPil(size={"shortest_edge": s2, "longest_edge": s2}, patch_size=self.patch_size,
                                        temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5],
                                        image_std=[0.5, 0.5, 0.5])


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-30B-A3B: the same vision tower and prompt, a mixture-of-experts language model
    (128 experts, 8 active per token)."""

    family = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)
    hub_ids = ("Qwen/Qwen3-VL-30B-A3B-Instruct",)
    tiny_variants = ("qwen3_vl_moe",)

    def text_config(self, tokenizer, ids: dict) -> dict:
        text = super().text_config(tokenizer, ids)
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                     mlp_only_layers=[], norm_topk_prob=True)
        return text
