"""Any VLM that follows the common transformers image-text-to-text interface, by config alone.

A checkpoint is accepted when (checked from its config.json on the meta device,
before any weight is read):

- it has a ``vision_config`` and an ``AutoModelForImageTextToText`` class;
- the model has its base model under ``base_model_prefix`` (run by the policy:
  ``forward(input_ids, attention_mask, pixel_values, ...) -> last_hidden_state``)
  with ``get_input_embeddings()`` returning the word embeddings;
- the base model has the model's own image-feature path, ``get_image_features``; the
  modules it runs (vision tower, projector, resampler...) are the vision modules that
  the ``freeze_vision`` ablation freezes (``image_path_modules``);

and (when loading) its ``AutoProcessor`` has an image token and a chat template.
Otherwise ``UnsupportedBackbone`` lists everything that is missing.

Prompt: the processor's chat template with one user turn (the image, then "What
action should the robotic arm take to {instruction}") and the generation prompt;
the family's own processor expands the image token(s) and makes the pixel
tensors, from a frame resized to ``image_size`` (224) first. Image processors
with tiling (``do_image_splitting``) are set to one tile, as the paper uses no
dynamic resolution. The placeholder is the tokenizer's eos token; tensors the
processor returns per token (e.g. token type ids) are extended with 0 (text)
for the placeholder and the padding.

Shown with LLaVA-1.5 (``LlavaForConditionalGeneration``) and Idefics3/SmolVLM
(``Idefics3ForConditionalGeneration``), whose tiny checkpoints are the variants
``llava`` and ``idefics3``.
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import (FamilyAdapter, Processor, UnsupportedBackbone, atomic_dir, resize_square,
                                         right_pad)
from vlm4vla_core.backbones.qwen2_5_vl import user_text

VISION_NAMES = ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "mm_projector", "merger", "image_to_text_projection",
                   "visual_projection", "projector")
TEXT_KEYS = ("input_ids", "attention_mask")

# LLaVA-1.5 (llava-hf) layout: "USER: <image>\n{text} ASSISTANT:"
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# SmolVLM (HuggingFaceTB/SmolVLM-256M-Instruct) layout: "<|im_start|>User:<image>{text}<end_of_utterance>\nAssistant:"
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LLAMA_LEADING = ["<unk>", "<s>", "</s>"]  # Llama ids 0..2
SMOL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                "<end_of_utterance>", "<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def model_image_token_id(config) -> int | None:
    """The token id whose positions receive the image features (what the model consumes), from the config."""
    for c in (config, config.get_text_config()):
        for key in ("image_token_id", "image_token_index"):
            value = getattr(c, key, None)
            if isinstance(value, int):
                return value
    return None


def processor_class(model_type: str, folder: Path | None = None):
    """The processor class named by ``processor_config.json`` in ``folder``, else AutoProcessor's for ``model_type``;
    UnsupportedBackbone when none is registered or its backend (e.g. torchvision) is not installed."""
    import json

    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = None
    if folder is not None and (Path(folder) / "processor_config.json").is_file():
        name = json.loads((Path(folder) / "processor_config.json").read_text()).get("processor_class")
    name = name or PROCESSOR_MAPPING_NAMES.get(model_type) or _module_processor(model_type)
    if not name:
        raise UnsupportedBackbone(f"model_type {model_type!r} has no processor class registered for AutoProcessor")
    cls = getattr(transformers, name, None)
    if cls is None:
        raise UnsupportedBackbone(f"processor class {name!r} is not in the installed transformers")
    if getattr(cls, "is_dummy", False):
        raise UnsupportedBackbone(f"{name} needs a backend that is not installed ({', '.join(cls._backends)})")
    return cls


def _module_processor(model_type: str) -> str | None:
    """The one ProcessorMixin class defined in the architecture's own module, if it has exactly one."""
    import importlib

    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.processing_utils import ProcessorMixin

    try:
        module = importlib.import_module(f"transformers.models.{model_type_to_module_name(model_type)}")
    except ImportError:
        return None
    names = [n for n in dir(module) if n.endswith("Processor") and isinstance(getattr(module, n, None), type)
             and issubclass(getattr(module, n), ProcessorMixin)]
    return names[0] if len(names) == 1 else None


def audio_stand_in():
    """An inert audio feature extractor (the policy feeds no audio), with the attributes a processor reads."""
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    stand_in = FeatureExtractionMixin()
    stand_in.model_input_names = []
    return stand_in


@contextmanager
def stand_ins_accepted():
    """Let a processor be built with the inert video / audio stand-ins: transformers checks a video processor's
    class through the video-processor registry, which is unavailable without torchvision."""
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, argument):
        if type(argument).__name__ in ("BaseVideoProcessor", "FeatureExtractionMixin"):
            return type(argument)
        return original(self, name, argument)

    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = original


def load_any_processor(name_or_path: str | Path, config):
    """The checkpoint's processor: AutoProcessor, or -- when a sub-processor the policy never feeds (video,
    audio) cannot be loaded here, e.g. a video processor that needs torchvision -- the processor class built
    from the checkpoint's tokenizer, its PIL image processor and inert stand-ins for those sub-processors."""
    import json

    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.video_processing_utils import BaseVideoProcessor

    try:
        return AutoProcessor.from_pretrained(str(name_or_path))
    except (OSError, ValueError, TypeError, ImportError, AttributeError, KeyError) as err:
        first = err
    folder = Path(name_or_path) if Path(name_or_path).is_dir() else None
    cls = processor_class(config.model_type, folder)
    settings = {}
    if folder is not None and (folder / "processor_config.json").is_file():
        settings = json.loads((folder / "processor_config.json").read_text())
    attributes = cls.get_attributes()
    try:
        parts = {}
        for attr in attributes:
            if "tokenizer" in attr:
                parts[attr] = AutoTokenizer.from_pretrained(str(name_or_path))
            elif attr == "image_processor":
                parts[attr] = AutoImageProcessor.from_pretrained(str(name_or_path), backend="pil")
            elif attr == "video_processor":
                parts[attr] = BaseVideoProcessor()
            elif attr in ("feature_extractor", "audio_processor"):
                parts[attr] = audio_stand_in()
            else:
                raise UnsupportedBackbone(f"{cls.__name__} needs a {attr} the policy cannot provide")
        kwargs = {k: v for k, v in settings.items() if k not in attributes and k != "processor_class"
                  and not isinstance(v, dict)}
        template = folder / "chat_template.jinja" if folder is not None else None
        if template is not None and template.is_file():
            kwargs["chat_template"] = template.read_text()
        with stand_ins_accepted():
            return cls(**parts, **kwargs)
    except (OSError, ValueError, TypeError, ImportError) as err:
        raise UnsupportedBackbone(f"{name_or_path}: cannot load its processor ({first}; then {err})") from err


def _find(module: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return name, child
    return None


def image_path_modules(base: nn.Module) -> list[str]:
    """The child modules of ``base`` that its own ``get_image_features`` runs (the vision tower and whatever
    projects, pools or resamples its output into the language model), read from the method's source and the
    methods of ``base`` it calls; empty when it has no such method or its source cannot be read."""
    method = getattr(type(base), "get_image_features", None)
    if method is None:
        return []
    children = dict(base.named_children())
    found, todo, seen = [], [method], set()
    while todo:
        fn = todo.pop(0)
        if fn in seen:
            continue
        seen.add(fn)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        for name in re.findall(r"self\.(\w+)", source):
            if name in children and isinstance(children[name], nn.Module) and name not in found:
                found.append(name)
            elif name not in children and callable(getattr(type(base), name, None)):
                todo.append(getattr(type(base), name))
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    embed = base.get_input_embeddings()
    return [n for n in found if children[n] is not decoder and children[n] is not embed
            and not any(children[n] is m for m in decoder.modules())] if decoder is not None else found


def structure(vlm: nn.Module) -> tuple[nn.Module, list[str]]:
    """(base model, what is missing) of an image-text-to-text model."""
    prefix = getattr(vlm, "base_model_prefix", "")
    base = getattr(vlm, prefix, None) if prefix else None
    if not isinstance(base, nn.Module) or base is vlm:
        return vlm, [f"no base model under base_model_prefix {prefix!r} (the policy runs it without the LM head)"]
    problems = []
    if not isinstance(base.get_input_embeddings(), nn.Embedding):
        problems.append("get_input_embeddings() of the base model is not an nn.Embedding")
    params = inspect.signature(base.forward).parameters
    missing = [p for p in ("input_ids", "attention_mask", "pixel_values") if p not in params]
    if missing:
        problems.append(f"the base model's forward takes no {', '.join(missing)}")
    if not hasattr(base, "get_image_features"):
        problems.append("no get_image_features on the base model: images do not enter the sequence as image "
                        "features (e.g. they reach the text model through cross-attention layers)")
    elif not vision_names(base, strict=False):
        problems.append("its get_image_features runs no vision module of the base model")
    return base, problems


def vision_names(base: nn.Module, strict: bool = True) -> list[str]:
    """The attribute names of the modules on the image-feature path (``image_path_modules``: vision tower,
    projector, resampler...), else the tower and projector found by their usual names."""
    names = image_path_modules(base)
    if not names:
        tower = _find(base, VISION_NAMES)
        projector = _find(base, PROJECTOR_NAMES)
        names = ([tower[0]] if tower else []) + ([projector[0]] if tower and projector else [])
    if not names and strict:
        raise UnsupportedBackbone(f"{type(base).__name__}: no vision module found on its image-feature path")
    return names


def config_problems(config) -> list[str]:
    """Why the architecture of ``config`` cannot be a generic backbone (empty: it can), from the config and
    the model built on the meta device; no weight is read."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    problems = []
    if getattr(config, "is_encoder_decoder", False) or getattr(config.get_text_config(), "is_encoder_decoder", False):
        problems.append(f"{config.model_type} is an encoder-decoder model (the policy reads the last hidden state "
                        "of a decoder-only sequence that holds the image, the prompt and the ActionQuery)")
    if getattr(config, "vision_config", None) is None:
        problems.append(f"its config ({config.model_type}) has no vision_config: no separate vision tower (the "
                        "generic family needs one; image patches or VQ image codes fed straight to the text "
                        "model are not supported)")
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        problems.append(f"model_type {config.model_type!r} has no AutoModelForImageTextToText class")
    if not problems:
        with torch.device("meta"):
            vlm = AutoModelForImageTextToText.from_config(config)
        problems = [f"{type(vlm).__name__}: {p}" for p in structure(vlm)[1]]
    return problems


class GenericAdapter(FamilyAdapter):
    """``vision_modules``: the vision tower and the projector found by name on the base model."""

    family = "generic"
    tiny_variants = ("llava", "idefics3")

    # -- loading ---------------------------------------------------------
    def check_config(self, name_or_path: str | Path):
        """The config, once the architecture is known to fit (built on the meta device, no weights)."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as err:
            raise UnsupportedBackbone(f"{name_or_path}: cannot read its config.json ({err})") from err
        problems = config_problems(config)
        if problems:
            raise UnsupportedBackbone(f"{name_or_path}: not usable as a generic backbone: " + "; ".join(problems))
        return config

    def load_processor(self, name_or_path: str | Path, config, image_size: int | None = None) -> Processor:
        proc = load_any_processor(name_or_path, config)
        tokenizer = getattr(proc, "tokenizer", None)
        image_processor = getattr(proc, "image_processor", None)
        image_token = getattr(proc, "image_token", None)
        problems = []
        model_image_id = model_image_token_id(config)
        if tokenizer is None or image_processor is None:
            problems.append(f"{type(proc).__name__} is not a processor with a tokenizer and an image processor")
        elif image_token is None:
            problems.append(f"{type(proc).__name__} has no image_token (the prompt-side image marker)")
        if model_image_id is None:
            problems.append(f"its config ({config.model_type}) names no image token id (image_token_id / "
                            "image_token_index): the image-feature positions are unknown")
        if not getattr(proc, "chat_template", None):
            problems.append("the processor has no chat template (chat_template.jinja)")
        if tokenizer is not None and tokenizer.eos_token_id is None:
            problems.append("the tokenizer has no eos token (the ActionQuery placeholder)")
        if problems:
            raise UnsupportedBackbone(f"{name_or_path}: not usable as a generic backbone: " + "; ".join(problems))
        if hasattr(image_processor, "do_image_splitting"):
            image_processor.do_image_splitting = False  # one tile per frame
        extra = dict(processor=proc, image_token_id=model_image_id)
        return Processor(tokenizer, image_processor, int(image_size or self.default_image_size), extra)

    def backbone(self, vlm: nn.Module) -> nn.Module:
        return structure(vlm)[0]

    def vision_modules(self, backbone: nn.Module) -> list[nn.Module]:
        return [getattr(backbone, name) for name in vision_names(backbone)]

    # -- inputs ----------------------------------------------------------
    def prompt_text(self, processor: Processor, instruction: str) -> str:
        key = ("text", instruction)
        if key not in processor._prompt_cache:
            messages = [{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": user_text(instruction)}]}]
            processor._prompt_cache[key] = processor.extra["processor"].apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True)
        return processor._prompt_cache[key]

    def encode(self, processor: Processor, images: list[np.ndarray], instructions: list[str]) -> dict[str, torch.Tensor]:
        if len(images) != len(instructions) or not images:
            raise ValueError(f"encode: got {len(images)} images for {len(instructions)} instructions")
        proc, placeholder = processor.extra["processor"], self.placeholder_id(processor)
        # models with multimodal rotary positions read each token's modality from mm_token_type_ids
        options = {"return_mm_token_type_ids": True} if "mm_token_type_ids" in proc.model_input_names else {}
        seqs, per_token, per_image = [], {}, {}
        for img, text in zip(resize_square(images, processor.image_size), instructions):
            out = proc(text=[self.prompt_text(processor, text)], images=[img], return_tensors="pt", **options)
            ids = out["input_ids"][0]
            seqs.append(ids.tolist() + [placeholder])
            for key, value in out.items():
                if key in TEXT_KEYS or not torch.is_tensor(value):
                    continue
                if value.dim() == 2 and value.shape == out["input_ids"].shape:
                    per_token.setdefault(key, []).append(value[0])
                else:
                    per_image.setdefault(key, []).append(value)
        batch = right_pad(seqs, self.pad_id(processor))
        length = batch["input_ids"].shape[1]
        for key, rows in per_token.items():
            padded = torch.zeros(len(rows), length, dtype=rows[0].dtype)
            for b, row in enumerate(rows):
                padded[b, : row.numel()] = row
            batch[key] = padded
        for key, parts in per_image.items():
            batch[key] = torch.cat(parts)
        return batch

    image_tokens_exact = False

    def num_image_tokens(self, config, image_size: int) -> int | None:
        """Image tokens per frame where the config states it (LLaVA's ``image_seq_length``; an estimate for
        plans on the meta device: tiling, row separators or a class token change it); else None. With a
        processor, ``backbone-report`` counts the tokens the model consumes in an encoded sample."""
        n = getattr(config, "image_seq_length", None)
        return int(n) if n else None

    # -- tiny checkpoints ------------------------------------------------
    def make_tiny(self, out: Path, image_size: int, seed: int = 0, variant: str | None = None) -> None:
        """A tiny ``LlavaForConditionalGeneration`` (CLIP + Llama) or ``Idefics3ForConditionalGeneration``
        (SigLIP-style + Llama, SmolVLM's layout), saved with its full processor."""
        from transformers import AutoModelForImageTextToText

        variant = variant or self.tiny_variants[0]
        if variant not in self.tiny_variants:
            raise UnsupportedBackbone(f"{self.family}: unknown tiny variant {variant!r} "
                                      f"(choose from {', '.join(self.tiny_variants)})")
        if image_size <= 0 or image_size % 28:
            raise ValueError(f"image_size {image_size} must be a positive multiple of 28 (patch 14, 2x2 merge)")
        build = {"llava": self._tiny_llava, "idefics3": self._tiny_idefics3}[variant]
        config, processor = build(image_size, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vlm = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        with atomic_dir(Path(out)) as tmp:
            vlm.save_pretrained(tmp)
            processor.save_pretrained(tmp)

    @staticmethod
    def _tiny_text(vocab: int, pad: int, bos: int, eos: int) -> dict:
        # real LLaVA-1.5-7B: Llama 4096 x 32; SmolVLM-256M: Llama 576 x 30
        return dict(model_type="llama", vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                    pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False)

    def _tiny_llava(self, image_size: int, seed: int):
        from transformers import LlamaTokenizer, LlavaConfig, LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        vocab, merges = _tokenizer.sentencepiece_bpe(vocab_size=1024, leading=LLAMA_LEADING, seed=seed)
        vocab = _tokenizer.append_tokens(vocab, ["<image>", "<pad>"])
        tok = LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<pad>", add_bos_token=True,
                             extra_special_tokens=["<image>"])
        ids = dict(zip(["<image>", "<pad>"], tok.convert_tokens_to_ids(["<image>", "<pad>"])))
        grid = image_size // 14
        # real: CLIP ViT-L/14-336 (1024 x 24), penultimate layer, CLS dropped -> 576 tokens
        config = LlavaConfig(
            text_config=self._tiny_text(len(tok), ids["<pad>"], tok.bos_token_id, tok.eos_token_id),
            vision_config=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, image_size=image_size, patch_size=14,
                               projection_dim=64, hidden_act="quick_gelu"),
            image_token_index=ids["<image>"], vision_feature_layer=-2, vision_feature_select_strategy="default",
            projector_hidden_act="gelu", image_seq_length=grid * grid, pad_token_id=ids["<pad>"])
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, resample=3,
                                                crop_size={"height": image_size, "width": image_size},
                                                image_mean=[0.48145466, 0.4578275, 0.40821073],
                                                image_std=[0.26862954, 0.26130258, 0.27577711])
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_CHAT_TEMPLATE)
        return config, processor

    def _tiny_idefics3(self, image_size: int, seed: int):
        from transformers import GPT2Tokenizer, Idefics3Config, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        vocab, merges = _tokenizer.byte_level_bpe(vocab_size=1024, seed=seed)
        vocab = _tokenizer.append_tokens(vocab, SMOL_SPECIAL)
        tok = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="<|im_start|>",
                            eos_token="<end_of_utterance>", unk_token="<|endoftext|>", pad_token="<|im_end|>",
                            extra_special_tokens=SMOL_SPECIAL)
        ids = dict(zip(SMOL_SPECIAL, tok.convert_tokens_to_ids(SMOL_SPECIAL)))
        scale = 2  # real SmolVLM-256M: scale_factor 4, 512 px tiles of patch 16 -> 64 tokens
        seq = (image_size // 14) ** 2 // scale**2
        config = Idefics3Config(
            text_config=self._tiny_text(len(tok), ids["<|im_end|>"], ids["<|im_start|>"], ids["<end_of_utterance>"]),
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               image_size=image_size, patch_size=14),
            image_token_id=ids["<image>"], scale_factor=scale, pad_token_id=ids["<|im_end|>"])
        image_processor = Idefics3ImageProcessorPil(size={"longest_edge": image_size},
                                                    max_image_size={"longest_edge": image_size},
                                                    do_image_splitting=False, image_mean=[0.5] * 3,
                                                    image_std=[0.5] * 3)
        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=seq,
                                      chat_template=SMOLVLM_CHAT_TEMPLATE)
        return config, processor

