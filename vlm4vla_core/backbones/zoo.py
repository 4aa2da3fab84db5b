"""Tiny checkpoints of any architecture registered for ``AutoModelForImageTextToText``.

``make_tiny_any(model_type, out)`` builds a random-weight checkpoint of the real
architecture class from its own config classes, shrunk (every width 64, 2 layers,
4 heads, a ~1k byte-level BPE vocabulary), with the architecture's own processor
class and PIL image processor, and saves it with ``save_pretrained`` so that
``family: generic`` loads it exactly as it loads a hub checkpoint.

How it is made, without any architecture-specific code in the generic adapter:

- **Config.** ``AutoConfig.for_model(model_type)`` (the architecture's defaults),
  then every sub-config is shrunk by name: widths (``hidden_size``, ``embed_dim``,
  ``out_hidden_size`` ...) to one value so that projectors between towers stay
  consistent, layer counts to 2, heads to 4, experts to 4, and the lists that index
  layers or rotary sections are cut or rescaled to match. ``OVERRIDES`` holds the
  few facts a name cannot tell (e.g. Gemma 3's pooled tokens per image).
- **Tokenizer.** The special tokens the processor needs are read from the processor
  module (the ``tokenizer.<x>_token`` attributes it uses and its special-token
  literals) and appended to the vocabulary; named ones become tokenizer attributes.
- **Token ids.** Every ``<x>_token_id`` / ``<x>_token_index`` of the config is set to
  the tokenizer's (or the processor's) id of ``<x>_token``.
- **Chat template.** The hub checkpoints' templates are not available offline, so
  each checkpoint gets ``CHAT_TEMPLATE``: one user turn in ChatML layout in which the
  image is written as the processor's own prompt-side image token
  (``processor.image_token``, e.g. Gemma 3's begin-of-image marker), which the
  processor expands into the tokens the model consumes.

Encoder-decoder models and models without a usable vision path are refused by
``GenericAdapter.check_config`` before any of this (``refusal``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch

from vlm4vla_core.backbones import _tokenizer
from vlm4vla_core.backbones.base import UnsupportedBackbone, atomic_dir

WIDTH = 64
WIDTH_KEYS = ("hidden_size", "embed_dim", "out_hidden_size", "d_model", "projector_hidden_size", "text_hidden_size",
              "vision_hidden_size", "projection_dim", "hidden_dim", "n_embd", "vision_output_dim", "out_dim",
              "mm_hidden_size", "output_dim", "adapter_hidden_size", "projector_dim", "vision_embed_dim",
              "text_embed_dim", "merger_hidden_size", "vit_hidden_size", "llm_hidden_size", "proj_dim")
FFN_KEYS = ("intermediate_size", "ffn_dim", "mlp_dim", "moe_intermediate_size", "shared_expert_intermediate_size",
            "expert_intermediate_size", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim", "projector_intermediate_size",
            "mlp_hidden_size", "intermediate_size_mlp", "dense_intermediate_size")
LAYER_KEYS = ("num_hidden_layers", "depth", "num_layers", "n_layers", "n_layer", "encoder_layers", "decoder_layers")
HEAD_KEYS = ("num_attention_heads", "num_heads", "n_head", "encoder_attention_heads", "decoder_attention_heads")
KV_KEYS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads")
EXPERT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
TOPK_KEYS = ("num_experts_per_tok", "moe_k", "top_k", "moe_topk", "num_selected_experts")
LAYERS, HEADS, KV, EXPERTS, TOPK = 2, 4, 2, 4, 2
SPECIAL_RE = re.compile(r"""["'](<\|?[A-Za-z_/][\w\-|:./]{0,40}\|?>|\[[A-Z][A-Z_]{1,20}\])["']""")
BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# One user turn in ChatML layout; the image is the processor's prompt-side image token.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ IMAGE }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Facts a key name cannot tell, per model_type: dotted config keys -> values.
OVERRIDES: dict[str, dict] = {
    # CLIP towers add a CLS token (the llava-hf processor configs ship num_additional_image_tokens: 1)
    "llava": {"processor": {"num_additional_image_tokens": 1}},
    "llava_next": {"processor": {"num_additional_image_tokens": 1}},
    "vipllava": {"processor": {"num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}},
}


def architectures() -> dict[str, str]:
    """model_type -> class name of every architecture registered for AutoModelForImageTextToText."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return dict(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _sub_configs(config) -> list:
    """``config`` and every nested config in it (depth first)."""
    from transformers import PretrainedConfig

    out, stack, seen = [], [config], set()
    while stack:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        out.append(c)
        for value in vars(c).values():
            if isinstance(value, PretrainedConfig):
                stack.append(value)
    return out


def _shrink_one(c) -> None:
    d = vars(c)
    old_layers = next((d[k] for k in LAYER_KEYS if isinstance(d.get(k), int)), None)
    old_heads = next((d[k] for k in HEAD_KEYS if isinstance(d.get(k), int)), None)
    old_head_dim = d.get("head_dim") if isinstance(d.get("head_dim"), int) else None
    for k in WIDTH_KEYS:
        if isinstance(d.get(k), int) and d[k] > WIDTH:
            setattr(c, k, WIDTH)
    for k in FFN_KEYS:
        if isinstance(d.get(k), int) and d[k] > 2 * WIDTH:
            setattr(c, k, 2 * WIDTH)
    for k in LAYER_KEYS:
        if isinstance(d.get(k), int) and d[k] > LAYERS:
            setattr(c, k, LAYERS)
    for k in HEAD_KEYS:
        if isinstance(d.get(k), int) and d[k] > HEADS:
            setattr(c, k, HEADS)
    for k in KV_KEYS:
        if isinstance(d.get(k), int):
            setattr(c, k, min(KV, HEADS) if d[k] > 1 else d[k])
    for k in EXPERT_KEYS:
        if isinstance(d.get(k), int) and d[k] > EXPERTS:
            setattr(c, k, EXPERTS)
    for k in TOPK_KEYS:
        if isinstance(d.get(k), int) and d[k] > TOPK:
            setattr(c, k, TOPK)
    if old_head_dim or ("head_dim" in d and d["head_dim"] is None and old_heads):  # None: a hub config fills it
        setattr(c, "head_dim", WIDTH // HEADS)
    # layer indexes (also on a parent config that indexes its vision tower's layers)
    # (read with getattr: a class default is not always in vars())
    for k in ("deepstack_visual_indexes", "fullatt_block_indexes", "cross_attention_layers",
              "intermediate_layers_indices", "vision_feature_layers", "global_layer_indices"):
        v = getattr(c, k, None)
        if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) for i in v):
            kept = sorted({min(int(i), LAYERS - 1) if i >= 0 else max(int(i), -LAYERS) for i in v})
            setattr(c, k, kept[:LAYERS])
    for k in ("vision_feature_layer", "select_layer"):
        v = getattr(c, k, None)
        if isinstance(v, int) and v >= LAYERS:
            setattr(c, k, LAYERS - 1)
        if isinstance(v, int) and v < -LAYERS:
            setattr(c, k, -1)
    # lists indexed by layer
    if old_layers:
        for k in ("layer_types", "mlp_only_layers", "sliding_window_pattern_list"):
            if isinstance(d.get(k), (list, tuple)) and len(d[k]) == old_layers:
                setattr(c, k, d[k][:LAYERS])
        for k in ("first_k_dense_replace", "num_dense_layers"):
            if isinstance(d.get(k), int) and d[k] >= LAYERS:
                setattr(c, k, 1)


def _uses_mrope(config) -> bool:
    """Whether the modeling code next to any of the config's classes splits rotary dims into mrope sections."""
    import importlib

    for c in _sub_configs(config):
        name = type(c).__module__.replace(".configuration_", ".modeling_")
        try:
            if "mrope_section" in inspect.getsource(importlib.import_module(name)):
                return True
        except (ImportError, OSError, TypeError):
            continue
    return False


def _set_mrope_sections(config) -> None:
    """Multimodal rotary sections (temporal, height, width) that sum to the rotary half-dimension of the
    shrunk text model: head_dim * partial_rotary_factor / 2; the published split rescaled, or 1:1.5:1.5."""
    text = config.get_text_config()
    rope = getattr(text, "rope_parameters", None)
    if not isinstance(rope, dict):
        return
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    partial = rope.get("partial_rotary_factor", getattr(text, "partial_rotary_factor", None)) or 1.0
    half = int(head_dim * partial) // 2
    sec = rope.get("mrope_section") or [2, 3, 3]
    new = [max(1, s * half // sum(sec)) for s in sec]
    new[0] += half - sum(new)
    rope["mrope_section"] = new


def tiny_config(model_type: str):
    """The architecture's default config, shrunk (vocabulary and token ids set later)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    for key, cls in (getattr(config, "sub_configs", None) or {}).items():
        if getattr(config, key, "absent") is None and isinstance(cls, type):
            try:
                setattr(config, key, cls())  # a sub-config a hub config always fills (e.g. vision_config)
            except Exception:  # noqa: BLE001 -- left empty; the refusal check says what is missing
                pass
    for c in _sub_configs(config):
        _shrink_one(c)
    if _uses_mrope(config):
        _set_mrope_sections(config)
    for key, value in OVERRIDES.get(model_type, {}).get("config", {}).items():
        target = config
        *path, last = key.split(".")
        for p in path:
            target = getattr(target, p)
        setattr(target, last, value)
    return config


def _image_processor(model_type: str, processor_cls):
    """A default PIL image processor of ``model_type``: AutoImageProcessor's, else the one defined next to the
    processor class, else the one of another model_type that shares the processor class."""
    import importlib

    from transformers.image_processing_utils import ImageProcessingMixin
    from transformers.models.auto.image_processing_auto import (IMAGE_PROCESSOR_MAPPING_NAMES,
                                                                get_image_processor_class_from_name)
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    candidates = [model_type] + [mt for mt, name in PROCESSOR_MAPPING_NAMES.items()
                                 if name == processor_cls.__name__ and mt != model_type]
    for mt in candidates:
        names = IMAGE_PROCESSOR_MAPPING_NAMES.get(mt) or {}
        name = names.get("pil") if isinstance(names, dict) else None
        if name:
            cls = get_image_processor_class_from_name(name)
            if cls is not None and not getattr(cls, "is_dummy", False):
                return cls()
    package = processor_cls.__module__.rsplit(".", 1)[0]
    for module_name in sorted(getattr(importlib.import_module(package), "__all__", None) or []):
        pass
    import pkgutil

    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("image_processing_pil"):
            module = importlib.import_module(f"{package}.{info.name}")
            for n in dir(module):
                cls = getattr(module, n)
                if n.endswith("Pil") and isinstance(cls, type) and issubclass(cls, ImageProcessingMixin) \
                        and cls.__module__ == module.__name__:
                    return cls()
    return None


def needed_tokens(processor_cls) -> tuple[dict[str, str], list[str]]:
    """(named tokenizer attributes -> token, literal special tokens) the processor module uses."""
    source = inspect.getsource(inspect.getmodule(processor_cls))
    named = {}
    for attr in sorted(set(re.findall(r"tokenizer\.(\w+_token)\b", source))):
        if not attr.startswith("add_") and attr not in ("eos_token", "bos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"):
            named[attr] = f"<{attr}>"
    literals = sorted(set(SPECIAL_RE.findall(source)))
    return named, literals


def build(model_type: str, seed: int = 0):
    """(config, processor) of a tiny ``model_type`` checkpoint (nothing written)."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from transformers.video_processing_utils import BaseVideoProcessor

    from vlm4vla_core.backbones.generic import audio_stand_in, processor_class, stand_ins_accepted

    config = tiny_config(model_type)
    proc_cls = processor_class(model_type)
    named, literals = needed_tokens(proc_cls)
    specials = list(dict.fromkeys(BASE_SPECIALS + literals + list(named.values())))
    vocab, merges = _tokenizer.byte_level_bpe(vocab_size=1024, seed=seed)
    vocab = _tokenizer.append_tokens(vocab, specials)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token="<|im_start|>", eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", extra_special_tokens=named or specials)
    if named:
        tok.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    vision = getattr(config, "vision_config", None)
    side = _fix_image_size(config, vision)
    image_processor = _image_processor(model_type, proc_cls)
    if image_processor is None:
        raise UnsupportedBackbone(f"{model_type}: no PIL image processor for {proc_cls.__name__} (only a torchvision "
                                  "one, and torchvision is not installed here)")
    _align_image_processor(image_processor, config, vision)
    for key in SEQ_KEYS:  # image processors that state the tokens per image (PaliGemma's image_seq_length)
        if key in vars(image_processor) and getattr(image_processor, key) is None and _patches_per_tile(vision):
            setattr(image_processor, key, _patches_per_tile(vision))
    if side:
        _resize_image_processor(image_processor, side)
    params = inspect.signature(proc_cls.__init__).parameters
    kwargs = {}
    for name in params:
        if name in ("self", "kwargs", "chat_template") or name in proc_cls.get_attributes():
            continue
        for src in (config, vision, image_processor):
            for key in (name, *ALIASES.get(name, ())):
                if src is not None and isinstance(getattr(src, key, None), (int, str)):
                    kwargs.setdefault(name, getattr(src, key))
        if name in SEQ_KEYS and name not in kwargs and _patches_per_tile(vision):
            kwargs[name] = _patches_per_tile(vision)  # corrected by _calibrate where the model makes fewer
    kwargs.update(OVERRIDES.get(model_type, {}).get("processor", {}))
    parts = {}
    for attr in proc_cls.get_attributes():
        if "tokenizer" in attr:
            parts[attr] = tok
        elif attr == "image_processor":
            parts[attr] = image_processor
        elif attr == "video_processor":
            parts[attr] = BaseVideoProcessor()
        elif attr in ("feature_extractor", "audio_processor"):
            parts[attr] = audio_stand_in()
        else:
            raise UnsupportedBackbone(f"{model_type}: {proc_cls.__name__} needs a {attr}")
    with stand_ins_accepted():
        processor = proc_cls(**parts, **kwargs)
    placeholder = getattr(processor, "image_placeholder_token", None)  # a prompt marker distinct from image_token
    image = placeholder if isinstance(placeholder, str) else getattr(processor, "image_token", None) or ""
    start, end = (getattr(processor, f"image_{k}_token", None) for k in ("start", "end"))
    if isinstance(start, str) and isinstance(end, str) and image:  # processors that want the image wrapped
        image = start + image + end
    processor.chat_template = CHAT_TEMPLATE.replace("{{ IMAGE }}", image)
    _set_token_ids(config, tok, processor)
    for c in (config, config.get_text_config()):
        if hasattr(c, "vocab_size"):
            c.vocab_size = len(tok)
        for k in ("pad_token_id", "eos_token_id", "bos_token_id"):
            if hasattr(c, k):
                setattr(c, k, tok.pad_token_id if k == "pad_token_id" else tok.eos_token_id)
    return config, processor


def _set_token_ids(config, tok, processor) -> None:
    for c in _sub_configs(config):
        for key, value in list(vars(c).items()):
            m = re.fullmatch(r"(\w+_token)_(id|index)", key)
            if not m or m.group(1) in ("pad_token", "eos_token", "bos_token") or not isinstance(value, int):
                continue
            name = m.group(1)
            token = getattr(tok, name, None) if isinstance(getattr(tok, name, None), str) else None
            token = token or (getattr(processor, name, None) if isinstance(getattr(processor, name, None), str) else None)
            ident = tok.convert_tokens_to_ids(token) if token else None
            if ident is None and isinstance(getattr(processor, f"{name}_id", None), int):
                ident = getattr(processor, f"{name}_id")
            if ident is not None and ident != tok.unk_token_id:
                setattr(c, key, int(ident))
            elif value >= len(tok):
                setattr(c, key, tok.pad_token_id)


def _patches_per_tile(vision) -> int | None:
    """Patches of one tile of the vision tower ((image_size / patch_size)^2), when it states both."""
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    size = size[0] if isinstance(size, (list, tuple)) else size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return (size // patch) ** 2 if isinstance(size, int) and isinstance(patch, int) and patch else None


ALIASES = {"image_seq_length": ("mm_tokens_per_image", "image_seq_length", "num_image_tokens"),
           "image_seq_len": ("image_seq_len", "image_seq_length", "mm_tokens_per_image"),
           "patch_size": ("patch_size",), "spatial_merge_size": ("spatial_merge_size", "merge_size")}


def _fix_image_size(config, vision) -> int | None:
    """A small fixed input side (8 patches) for towers with a fixed image_size; tokens-per-image settings follow."""
    size = getattr(vision, "image_size", None) if vision is not None else None
    if not isinstance(size, (int, list, tuple)):
        return None
    patch = getattr(vision, "patch_size", 14)
    patch = patch[0] if isinstance(patch, (list, tuple)) else int(patch)
    side = 8 * patch
    vision.image_size = side if isinstance(size, int) else type(size)([side, side])
    if isinstance(getattr(config, "mm_tokens_per_image", None), int):
        config.mm_tokens_per_image = 16  # 8x8 patches pooled 2x2
    if isinstance(getattr(config, "image_seq_length", None), int):
        config.image_seq_length = 64
    return side


# image-processor setting -> the config keys that state it (a hub checkpoint ships them consistent)
IMAGE_PROCESSOR_FROM_CONFIG = {"patch_size": ("patch_size",), "temporal_patch_size": ("temporal_patch_size",),
                               "merge_size": ("spatial_merge_size", "merge_size")}


def _align_image_processor(image_processor, config, vision) -> None:
    """The image processor's patch geometry set to the vision tower's (the processor defaults may be another
    checkpoint's, e.g. patch 14 beside a patch-16 tower)."""
    for attr, keys in IMAGE_PROCESSOR_FROM_CONFIG.items():
        if getattr(image_processor, attr, None) is None:
            continue
        for src in (vision, config):
            value = next((getattr(src, k) for k in keys if src is not None and getattr(src, k, None) is not None), None)
            if isinstance(value, (list, tuple)) and len(set(value)) == 1:
                value = value[0]
            if isinstance(value, int):
                setattr(image_processor, attr, value)
                break


def _resize_image_processor(image_processor, side: int) -> None:
    for key in ("size", "crop_size", "max_image_size"):
        value = getattr(image_processor, key, None)
        items = dict(value) if isinstance(value, dict) else (
            {k: v for k, v in vars(value).items() if v is not None} if hasattr(value, "__dataclass_fields__") else None)
        if items is not None:
            new = {k: (side if k in ("height", "width", "shortest_edge", "longest_edge") else v) for k, v in items.items()}
            setattr(image_processor, key, new if isinstance(value, dict) else type(value)(**new))
        elif isinstance(value, int):
            setattr(image_processor, key, side)


SEQ_KEYS = ("image_seq_len", "image_seq_length", "num_image_tokens", "mm_tokens_per_image", "image_token_count")


def _feature_count(out, width: int) -> int:
    """Vectors of ``width`` in what ``get_image_features`` returns (tensor, list of tensors or model output)."""
    from transformers.utils import ModelOutput

    if isinstance(out, ModelOutput):
        pooled = out.get("pooler_output")
        out = pooled if pooled is not None else out[0]
    if torch.is_tensor(out):
        return out.numel() // width if out.shape[-1] == width else 0
    if isinstance(out, (list, tuple)):
        return sum(_feature_count(o, width) for o in out)
    return 0


def image_feature_counts(vlm, processor, side: int = 224) -> tuple[int, int] | None:
    """(image tokens in the prompt, image features the model makes) for one frame, as the generic family
    encodes it; None when the model has no ``get_image_features`` to ask."""
    from vlm4vla_core.backbones.generic import model_image_token_id, structure

    base = structure(vlm)[0]
    if not hasattr(base, "get_image_features"):
        return None
    image = processor.image_token or ""
    text = CHAT_TEMPLATE.replace("{{ IMAGE }}", image)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "push"}]}],
        tokenize=False, add_generation_prompt=True) if processor.chat_template else text
    from PIL import Image

    out = processor(text=[prompt], images=[Image.new("RGB", (side, side))], return_tensors="pt")
    tokens = int((out["input_ids"] == model_image_token_id(vlm.config)).sum())
    params = inspect.signature(base.get_image_features).parameters
    kwargs = {k: v for k, v in out.items() if k in params and k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        features = base.get_image_features(**kwargs)
    return tokens, _feature_count(features, vlm.config.get_text_config().hidden_size)


def _calibrate(vlm, processor) -> None:
    """Make the processor expand the image token into as many tokens as the model makes image features (what a
    hub checkpoint's processor config states), where it has one per-image token-count setting."""
    try:
        counts = image_feature_counts(vlm, processor)
    except Exception:  # noqa: BLE001 -- left as built; the run reports the error at its own stage
        return
    if counts is None or counts[0] == counts[1] or not all(counts):
        return
    tokens, features = counts
    saved = inspect.signature(type(processor).__init__).parameters  # what processor_config.json keeps
    for key in (k for k in SEQ_KEYS if k in saved):
        value = getattr(processor, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            new = value * features // tokens if (value * features) % tokens == 0 else None
            if new:
                setattr(processor, key, new)
                return


def make_tiny_any(model_type: str, out: Path, seed: int = 0) -> None:
    """Write a tiny random-weight checkpoint of ``model_type`` (config, weights, processor, chat template); the
    processor's image-token count per image is set to the model's image-feature count (``_calibrate``)."""
    from transformers import AutoModelForImageTextToText

    config, processor = build(model_type, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    _calibrate(vlm, processor)
    with atomic_dir(Path(out)) as tmp:
        vlm.save_pretrained(tmp)
        processor.save_pretrained(tmp)
