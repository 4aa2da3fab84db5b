"""``python -m vlm4vla_core plan-memory``: GPU memory per rank of one training job, under ZeRO-2 and ZeRO-3.

The backbone is built from its config on the meta device (a shipped published config, or a folder's
config.json; never the weights). Per GPU, with N data-parallel ranks, P parameters the policy runs
(backbone without an untied LM head, plus ActionQuery and head), T of them trainable, and mixed
precision (bf16/fp16; fp32 in brackets):

- parameters: 2P bytes [4P] under ZeRO-2; 2P/N + the largest layer gathered twice (prefetch) under ZeRO-3;
- gradients: 2T/N [4T/N] (reduce-scattered under both stages);
- optimizer (AdamW): fp32 master weights, momentum and variance, 12T/N bytes [8T/N];
- activations of one micro-batch b: what autograd keeps for the backward pass, counted per decoder layer from
  the layer's structure (``block_facts``, ``block_bytes``): the input of every linear map, the MLP's
  intermediates, what each norm keeps (probed on a small copy of the norm: an RMSNorm computing in fp32 keeps
  an fp32 copy of its input), the queries, keys and values the attention kernel keeps, the s^2 score
  matrices only where the attention implementation keeps them (eager attention; PyTorch's math kernel, which
  SDPA falls back to on a CPU when attention dropout is on), and the dropout masks; over s = image tokens +
  prompt tokens for the language model and over the patches for the vision tower (none when it is frozen).
  With gradient checkpointing only each layer's input plus one layer's full activations (the larger of the
  two towers' layers: the backward pass recomputes one at a time);
- a fixed 3 GiB for the CUDA context, the NCCL buffers and the allocator's fragmentation.

A job fits when the sum stays under 90% of the GPU's memory.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

GIB = 1024**3
GPUS = {"A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80, "H200-141GB": 141, "L40S-48GB": 48, "A10-24GB": 24}
OVERHEAD_GIB = 3.0
USABLE = 0.9
PROMPT_TEXT_TOKENS = 40  # chat template + instruction + ActionQuery, beside the image tokens
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: Where the kernels run: "cuda" (a training job; the default) or "cpu" (tools/check_planner.py). They differ
#: in two of PyTorch's choices: the dropout mask (1 byte per value on CUDA, a scaled mask in the activation's
#: dtype on a CPU) and SDPA with attention dropout (fused on CUDA; the math kernel on a CPU, which computes in
#: fp32 and keeps the score matrices).
KERNELS = ("cuda", "cpu")
_GATES = ("gate_proj", "gate_up_proj")
_ACTIVATIONS = ("act_fn", "activation_fn", "act")
_FUSED_QKV = ("qkv", "qkv_proj", "Wqkv")


def head_params(hidden: int, chunk: int, action_dim: int, head_hidden: int, head_layers: int = 2) -> int:
    """ActionQuery + MLP head: what the policy adds to a backbone of width ``hidden`` (no policy import)."""
    total, width = hidden, hidden
    for _ in range(head_layers - 1):
        total += width * head_hidden + head_hidden
        width = head_hidden
    return total + width * chunk * action_dim + chunk * action_dim


def _layers(module: nn.Module, outside: list[nn.Module] = ()) -> list[nn.Module]:
    """The repeated blocks (the largest ModuleList) of a tower, leaving out those inside ``outside``."""
    inside = {id(m) for tower in outside for m in tower.modules()}
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 1 and id(m) not in inside]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=nn.ModuleList())


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def _norm_width(norm: nn.Module) -> int:
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(torch.Size(shape).numel())
    weight = getattr(norm, "weight", None)
    return int(weight.numel()) if weight is not None else 0


def kept_bytes_per_value(module: nn.Module, dtype: torch.dtype, width: int) -> int:
    """Bytes ``module`` (a norm or an activation function) keeps for its backward per value of its input in
    ``dtype``, probed on a CPU copy of it (weights set to one): the growth of what it keeps from 4 to 8 rows of
    ``width``, so that tensors of the weight's size (Gemma's ``1 + weight`` in fp32) do not count; its output,
    kept by whatever consumes it, does not either."""
    probe = copy.deepcopy(module).to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for p in probe.parameters():
            p.fill_(1.0)
    weights = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    kept = []
    for rows in (4, 8):
        found = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:
                found[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            probe(torch.randn(rows, width, dtype=dtype, requires_grad=True))
        kept.append(sum(found.values()))
    return round((kept[1] - kept[0]) / (4 * width))  # per-row statistics (4 bytes a row) round away


def norm_bytes_per_value(norm: nn.Module, dtype: torch.dtype) -> int:
    """``kept_bytes_per_value`` of a norm over its own width."""
    return kept_bytes_per_value(norm, dtype, _norm_width(norm))


def _first(cfg, *keys, default=0):
    for key in keys:
        value = getattr(cfg, key, None)
        if value is not None:
            return value
    return default


def norms_beside(root: nn.Module, layers: nn.ModuleList) -> list[list[int]]:
    """[values per token, bytes per value in bf16, in fp32] of the norms beside ``layers`` in their tower
    (the module holding them: a final norm, an embedding norm); they keep their input once per micro-batch."""
    parent = next((m for m in root.modules() if any(c is layers for c in m.children())), None)
    return [[_norm_width(c), norm_bytes_per_value(c, torch.bfloat16), norm_bytes_per_value(c, torch.float32)]
            for c in (parent.children() if parent is not None else ()) if _is_norm(c) and _norm_width(c)]


def block_facts(block: nn.Module, cfg) -> dict:
    """What ``block_bytes`` needs of one transformer layer (built on the meta device) and its config."""
    h = int(_first(cfg, "hidden_size", "embed_dim"))
    heads = int(_first(cfg, "num_attention_heads", "num_heads", "attention_heads"))
    if not h or not heads:
        raise ValueError(f"{type(cfg).__name__}: no width or no attention heads (hidden_size / embed_dim, "
                         "num_attention_heads / num_heads / attention_heads) to plan the layer's activations")
    head_dim = int(_first(cfg, "head_dim", default=0) or h // heads)
    kv_heads = int(_first(cfg, "num_key_value_heads", default=heads) or heads)
    norms = []
    for name, module in block.named_modules():
        if not _is_norm(module):
            continue
        width, leaf = _norm_width(module), name.rsplit(".", 1)[-1]
        if not width:  # neither weight nor shape gives its width: left out
            continue
        values = width
        if width == head_dim != h:  # a per-head norm of the queries or keys
            values = width * (kv_heads if leaf.startswith(("k_", "key")) else heads)
        norms.append([values, norm_bytes_per_value(module, torch.bfloat16), norm_bytes_per_value(module, torch.float32)])
    named = list(block.named_modules()) + list(block.named_parameters())
    names = {n.rsplit(".", 1)[-1] for n, _ in named}
    moe = "experts" in names
    act = next((m for n, m in block.named_modules() if n.rsplit(".", 1)[-1] in _ACTIVATIONS), None)
    act_bytes = ([kept_bytes_per_value(act, dtype, 64) for dtype in (torch.bfloat16, torch.float32)]
                 if isinstance(act, nn.Module) else [2, 4])
    signature = inspect.signature(block.forward).parameters
    return dict(
        hidden=h, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=int(_first(cfg, "intermediate_size", "ffn_dim")), gated=any(g in names for g in _GATES),
        experts=int(_first(cfg, "num_experts", "n_routed_experts")) if moe else 0,
        top_k=int(_first(cfg, "num_experts_per_tok")) if moe else 0,
        expert_intermediate=int(_first(cfg, "moe_intermediate_size")) if moe else 0,
        norms=norms, activation=act_bytes, fused_qkv=any(f in names for f in _FUSED_QKV),
        rotary=any(k in signature for k in ("position_embeddings", "rotary_pos_emb")), packed="cu_seqlens" in signature,
        layer_scales=sum(1 for p in block.parameters(recurse=False) if p.numel() == h),
        attention=str(getattr(cfg, "_attn_implementation", None) or "sdpa"),
        softcap=bool(_first(cfg, "attn_logit_softcapping", default=None)),
        attention_dropout=float(_first(cfg, "attention_dropout", default=0.0) or 0.0),
        dropout=float(_first(cfg, "dropout", "hidden_dropout_prob", "resid_pdrop", default=0.0) or 0.0),
        activation_dropout=float(_first(cfg, "activation_dropout", default=0.0) or 0.0))


def _norms_bytes(norms: list[list[int]], e: int) -> int:
    """Bytes per token the norms ``[values, bytes per value in bf16, in fp32]`` keep at ``e`` bytes a value."""
    return sum(values * (b16 if e == 2 else b32) for values, b16, b32 in norms)


def _mask_bytes(kernels: str, e: int) -> int:
    """Bytes a dropout mask keeps per value: 1 on CUDA, the activation's ``e`` on a CPU."""
    return 1 if kernels == "cuda" else e


def block_bytes(blk: dict, *, tokens: int, seq: int, precision: str, kernels: str = "cuda",
                attention_mask: bool = True) -> float:
    """Bytes one transformer layer keeps for the backward pass over ``tokens`` = batch x ``seq`` tokens.

    Per token, with e bytes per activation value (``ACTIVATION_BYTES``), h the width, i the MLP's, q = heads x
    head_dim and c the width of the keys (and values) the attention keeps:

    - the input of each linear map, once per distinct input: e (h + q + h + i) (the q/k/v projections, the
      output projection, the MLP's first and last maps); a mixture of experts: i = top_k x its width;
    - inside the MLP: what the activation function keeps per value (probed: its input, e; QuickGELU also its
      sigmoid) x i, and for a gated MLP also the up projection and the activation's output, 2 e i; a mixture of
      experts adds each token's routed copy and the experts' outputs, e 2 top_k h, and the router's fp32
      probabilities, 4 x experts; a layer scale (a parameter of width h multiplying a branch) keeps its
      branch, e h;
    - each norm: its values per token x the bytes it keeps per value (``norm_bytes_per_value``);
    - attention: a fused kernel (SDPA: flash or memory-efficient) keeps queries, keys, values, e (q + 2c),
      and a 4-byte log-sum-exp per head; c = q when a padding mask is passed and K/V heads are shared
      (transformers then repeats the K/V heads before the kernel), else kv_heads x head_dim; with one fused
      q/k/v projection and rotary embeddings the values stay a view of the whole projection output, e (q + 2c),
      beside the rotated queries and keys, e (q + c). A tower that packs its frames into one sequence
      (``cu_seqlens``: Qwen's vision towers) runs attention frame by frame and keeps each frame's output besides
      their concatenation, e q. Eager attention
      also keeps the s x heads scores per token: the fp32 softmax (4), its cast to e (when e < 4), the tanh of a
      soft cap (e); PyTorch's math kernel (SDPA on a CPU with attention dropout) computes in fp32: 4 (q + 2c)
      and three s x heads matrices per token (softmax, dropout mask, dropped probabilities);
    - dropout masks where the config's dropout is on: two residual ones (h each) and the activation's (i),
      1 byte a value on CUDA, e on a CPU.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    e = ACTIVATION_BYTES[precision]
    mask = _mask_bytes(kernels, e)
    h, heads, hd = blk["hidden"], blk["heads"], blk["head_dim"]
    q = heads * hd
    c = q if attention_mask and blk["kv_heads"] < heads else blk["kv_heads"] * hd
    width = blk["top_k"] * blk["expert_intermediate"] if blk["experts"] else blk["intermediate"]
    per_token = e * (h + q + h + width) + width * (blk["activation"][0 if e == 2 else 1] + (2 * e if blk["gated"] else 0))
    per_token += e * h * blk["layer_scales"]
    if blk["experts"]:
        per_token += e * 2 * blk["top_k"] * h + 4 * blk["experts"]
    per_token += _norms_bytes(blk["norms"], e)
    attention = blk["attention"]
    if attention == "sdpa" and kernels == "cpu" and blk["attention_dropout"] > 0:
        attention = "math"
    if attention == "math":
        per_token += 4 * (q + 2 * c) + 3 * 4 * heads * seq
    elif attention == "eager":
        per_token += e * 3 * q + heads * seq * (4 + (e if e < 4 else 0) + (e if blk["softcap"] else 0)
                                               + ((mask + e) if blk["attention_dropout"] > 0 else 0))
    else:  # sdpa, flash attention: no score matrices
        per_token += e * (q + 2 * c) + 4 * heads
        if blk["fused_qkv"] and blk["rotary"]:  # the kept values are a view of the whole fused output
            per_token += e * (q + c)
    if blk["packed"]:
        per_token += e * q  # each frame's attention output, kept apart from their concatenation
    if blk["dropout"] > 0:
        per_token += 2 * h * mask
    if blk["activation_dropout"] > 0 and not blk["experts"]:
        per_token += width * mask
    return float(tokens * per_token)


def architecture_facts(adapter, vlm: nn.Module, image_size: int = 224) -> dict:
    backbone = adapter.backbone(vlm)
    vision = adapter.vision_modules(backbone)
    text = vlm.config.get_text_config()
    n_image = adapter.num_image_tokens(vlm.config, image_size) or 256
    vision_layers = _layers(vision[0]) if vision else nn.ModuleList()
    text_list = _layers(backbone, vision)
    text_layers = list(text_list)
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
        image_tokens=int(n_image), largest_layer_params=largest,
        vision_patches=int(adapter.vision_sequence(vlm.config, image_size) or n_image * merge * merge),
        text_block=block_facts(text_layers[0], text) if text_layers else None,
        text_norms=norms_beside(backbone, text_list) if text_layers else [],
        embedding_dropouts=int(adapter.embedding_dropouts) if _first(text, "dropout", default=0.0) else 0,
        vision_norms=norms_beside(vision[0], vision_layers) if len(vision_layers) else [],
        vision_block=block_facts(vision_layers[0], vcfg) if len(vision_layers) and vcfg is not None else None)


def activation_bytes(facts: dict, *, micro_batch: int, precision: str, gradient_checkpointing: bool,
                     kernels: str = "cuda", attention_mask: bool = True, frozen_vision: bool = False) -> dict:
    """Bytes of activations one micro-batch keeps: per language-model layer, per vision layer, per tower
    (with gradient checkpointing: each layer's input, and one layer of either tower recomputed), in all. Beside
    the layers of each tower (``<tower>_beside``): the norms next to them (``norms_beside``) and, for the
    language model, the masks of its embedding dropouts (1 byte a value on CUDA, e on a CPU). A frozen
    vision tower keeps none (nothing in it needs a gradient)."""
    s, e = facts["image_tokens"] + PROMPT_TEXT_TOKENS, ACTIVATION_BYTES[precision]
    out = dict(sequence=s)
    for tower, block, seq, layers in (("text", facts["text_block"], s, facts["text_layers"]),
                                      ("vision", facts["vision_block"], facts["vision_patches"], facts["vision_layers"])):
        if block is None or not layers or (tower == "vision" and frozen_vision):
            out[tower] = out[f"{tower}_per_layer"] = 0.0
            continue
        tokens = micro_batch * seq
        per_layer = block_bytes(block, tokens=tokens, seq=seq, precision=precision, kernels=kernels,
                                attention_mask=attention_mask and tower == "text")
        kept = e * tokens * block["hidden"] * layers if gradient_checkpointing else per_layer * layers
        beside = tokens * _norms_bytes(facts[f"{tower}_norms"], e)
        if tower == "text":
            beside += tokens * block["hidden"] * facts["embedding_dropouts"] * _mask_bytes(kernels, e)
        out[f"{tower}_per_layer"], out[f"{tower}_beside"], out[tower] = per_layer, float(beside), float(kept + beside)
    # with checkpointing the backward pass recomputes one layer at a time, of either tower
    out["recomputed"] = max(out["text_per_layer"], out["vision_per_layer"]) if gradient_checkpointing else 0.0
    out["total"] = out["text"] + out["vision"] + out["recomputed"]
    return out


def plan(facts: dict, *, chunk: int, action_dim: int, head_hidden: int, head_layers: int, micro_batch: int,
         gpus: int, precision: str, gradient_checkpointing: bool, ablation: str = "full", kernels: str = "cuda",
         attention_mask: bool = True) -> dict:
    """Bytes per GPU under ZeRO-2 and ZeRO-3. ``kernels`` and ``attention_mask``: see ``block_bytes`` (the
    defaults are a training job's: CUDA, right-padded batches with their attention mask)."""
    added = head_params(facts["hidden"], chunk, action_dim, head_hidden, head_layers)
    p = facts["backbone_params"] + added
    frozen = {"full": 0, "from_scratch": 0, "freeze_vision": facts["vision_params"],
              "freeze_embeddings": facts["embedding_params"]}[ablation]
    t = p - frozen
    w, g, o = (4, 4, 8) if precision == "fp32" else (2, 2, 12)
    act = activation_bytes(facts, micro_batch=micro_batch, precision=precision,
                           gradient_checkpointing=gradient_checkpointing, kernels=kernels,
                           attention_mask=attention_mask, frozen_vision=ablation == "freeze_vision")
    out = dict(params=p, trainable=t, added=added, sequence=act["sequence"], activation_terms=act)
    for stage in (2, 3):
        params = w * p if stage == 2 else w * p / gpus + 2 * w * facts["largest_layer_params"]
        parts = dict(parameters=params, gradients=g * t / gpus, optimizer=o * t / gpus, activations=act["total"],
                     overhead=OVERHEAD_GIB * GIB)
        out[f"zero{stage}"] = dict(parts, total=sum(parts.values()))
    return out
