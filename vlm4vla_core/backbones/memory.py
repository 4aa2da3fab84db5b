"""``python -m vlm4vla_core plan-memory``: GPU memory per rank of one training job, under ZeRO-2 and ZeRO-3.

The backbone is built from its config on the meta device (a shipped published config, or a folder's
config.json; never the weights). Per GPU, with N data-parallel ranks, P parameters the policy runs
(backbone without an untied LM head, plus ActionQuery and head), T of them trainable, and mixed
precision (bf16/fp16; fp32 in brackets):

- parameters: 2P bytes [4P] under ZeRO-2; 2P/N + the largest layer gathered twice (prefetch) under ZeRO-3;
- gradients: 2T/N [4T/N] (reduce-scattered under both stages);
- optimizer (AdamW): fp32 master weights, momentum and variance, 12T/N bytes [8T/N];
- activations of one micro-batch b: every decoder layer keeps ~34 * b * s * h bytes (s: sequence length =
  image tokens + prompt, h: hidden; the formula of Korthikanti et al. 2022 with fused attention, whose
  s^2 scores are not stored), the vision tower likewise over its patches; with gradient checkpointing only
  each layer's input (2 * b * s * h) plus one layer's full activations;
- a fixed 3 GiB for the CUDA context, the NCCL buffers and the allocator's fragmentation.

A job fits when the sum stays under 90% of the GPU's memory.
"""

from __future__ import annotations


from torch import nn

GIB = 1024**3
GPUS = {"A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80, "H200-141GB": 141, "L40S-48GB": 48, "A10-24GB": 24}
OVERHEAD_GIB = 3.0
USABLE = 0.9
PROMPT_TEXT_TOKENS = 40  # chat template + instruction + ActionQuery, beside the image tokens


def head_params(hidden: int, chunk: int, action_dim: int, head_hidden: int, head_layers: int = 2) -> int:
    """ActionQuery + MLP head: what the policy adds to a backbone of width ``hidden`` (no policy import)."""
    total, width = hidden, hidden
    for _ in range(head_layers - 1):
        total += width * head_hidden + head_hidden
        width = head_hidden
    return total + width * chunk * action_dim + chunk * action_dim


def _layers(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks (the largest ModuleList) of a tower."""
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=nn.ModuleList())


def architecture_facts(adapter, vlm: nn.Module, image_size: int = 224) -> dict:
    backbone = adapter.backbone(vlm)
    vision = adapter.vision_modules(backbone)
    text = vlm.config.get_text_config()
    n_image = adapter.num_image_tokens(vlm.config, image_size) or 256
    vision_layers = _layers(vision[0]) if vision else nn.ModuleList()
    text_layers = [m for m in _layers(backbone) if not any(m is v for v in vision_layers)]
    vcfg = getattr(vlm.config, "vision_config", None)
    merge = getattr(vcfg, "spatial_merge_size", 1) or 1
    largest = max((sum(p.numel() for p in layer.parameters()) for layer in list(text_layers) + list(vision_layers)),
                  default=0)
    return dict(
        backbone_params=sum(p.numel() for p in backbone.parameters()),
        vision_params=sum(p.numel() for m in vision for p in m.parameters()),
        embedding_params=adapter.input_embeddings(backbone).weight.numel(),
        hidden=int(text.hidden_size), text_layers=len(text_layers),
        vision_hidden=int(getattr(vcfg, "hidden_size", 0) or 0), vision_layers=len(vision_layers),
        image_tokens=int(n_image), vision_patches=int(n_image * merge * merge), largest_layer_params=largest)


def plan(facts: dict, *, chunk: int, action_dim: int, head_hidden: int, head_layers: int, micro_batch: int,
         gpus: int, precision: str, gradient_checkpointing: bool, ablation: str = "full") -> dict:
    """Bytes per GPU under ZeRO-2 and ZeRO-3."""
    added = head_params(facts["hidden"], chunk, action_dim, head_hidden, head_layers)
    p = facts["backbone_params"] + added
    frozen = {"full": 0, "from_scratch": 0, "freeze_vision": facts["vision_params"],
              "freeze_embeddings": facts["embedding_params"]}[ablation]
    t = p - frozen
    w, g, o = (4, 4, 8) if precision == "fp32" else (2, 2, 12)
    s = facts["image_tokens"] + PROMPT_TEXT_TOKENS
    per_layer = 34 * micro_batch * s * facts["hidden"]
    per_vision_layer = 34 * micro_batch * facts["vision_patches"] * facts["vision_hidden"]
    if gradient_checkpointing:
        act = (2 * micro_batch * s * facts["hidden"] * facts["text_layers"] + per_layer
               + 2 * micro_batch * facts["vision_patches"] * facts["vision_hidden"] * facts["vision_layers"]
               + per_vision_layer)
    else:
        act = per_layer * facts["text_layers"] + per_vision_layer * facts["vision_layers"]
    out = dict(params=p, trainable=t, added=added, sequence=s)
    for stage in (2, 3):
        params = w * p if stage == 2 else w * p / gpus + 2 * w * facts["largest_layer_params"]
        parts = dict(parameters=params, gradients=g * t / gpus, optimizer=o * t / gpus, activations=act,
                     overhead=OVERHEAD_GIB * GIB)
        out[f"zero{stage}"] = dict(parts, total=sum(parts.values()))
    return out
