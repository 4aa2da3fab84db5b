"""The memory planner's activation term, and a training step's speed, measured per paper family.

    python tools/check_planner.py [--device cpu|cuda] [--layers 2] [--micro-batch 2] [--dtypes fp32 bf16]
                                       [--families ...] [--backbones ...] [--smoke] [--out FILE.json]

For one backbone of each family of the paper study (config.yaml; or the backbones named by ``--backbones``),
the published config is built with random weights at its real hidden size, its language model cut to
``--layers`` decoder layers (and its vision tower to as many). One training step of the language model runs
on ``--micro-batch`` sequences of the planner's length (image tokens + prompt) fed as embeddings that carry a
gradient (in training the first layer's input holds the vision tower's output), without an attention mask,
and the script measures:

- activations: the bytes of the tensors autograd keeps for the backward pass (each storage counted
  once), per decoder layer, against the planner's bytes per layer (``block_bytes`` of
  ``vlm4vla_core.backbones.memory`` with the device's kernels and no attention mask), and the activations of
  all the layers plus parameters and gradients (``total``) against the planner's;
- the vision tower's layers: one forward pass over ``--micro-batch`` random frames at 224 px laid out as the
  family's image processor does, the bytes kept per layer against the planner's over the tower's sequence;
- beside the decoder layers (the final norm, the embedding dropout's masks): the bytes kept there, against
  the planner's ``text_beside``;
- gradient checkpointing (non-reentrant, as the training stage enables it): the bytes kept over a forward
  pass, against the planner's each layer's input plus what is kept beside the layers (the one layer
  recomputed during the backward pass is the per-layer figure above);
- parameters and gradients of the cut language model: bytes held, against ``P x bytes per value``; in fp32
  also AdamW's state after one step against the planner's 8 bytes a trainable value;
- on CUDA also the step time, tokens/s, MFU (6 x parameters x tokens / time over the GPU's dense peak,
  ``vlm4vla_core.plan_cost.PEAK_TFLOPS``; ``--gpu`` names it) and ``torch.cuda.max_memory_allocated``.

``--breakdown`` prints what the decoder layers keep, by the autograd op that keeps it, its shape and dtype
(the evidence behind each term of the planner). ``--smoke`` shrinks every config to a few dimensions (a CPU run of seconds, for the test).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.backbones.memory import (PROMPT_TEXT_TOKENS, _layers, activation_bytes, architecture_facts,
                                           block_bytes)
from vlm4vla_core.config import Study, load_study

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cut(cfg, layers: int, smoke: bool) -> None:
    """Every (sub-)config to ``layers`` layers, its layer-indexed settings cut alike; with ``smoke`` shrunk
    as the tiny test checkpoints are (``vlm4vla_core.backbones.zoo``)."""
    from vlm4vla_core.backbones import zoo

    for c in zoo._sub_configs(cfg):
        if smoke:
            zoo._shrink_one(c)
        old = next((getattr(c, k) for k in zoo.LAYER_KEYS if isinstance(getattr(c, k, None), int)), None)
        for k in zoo.LAYER_KEYS:
            if isinstance(getattr(c, k, None), int):
                setattr(c, k, min(layers, getattr(c, k)))
        for k in ("deepstack_visual_indexes", "fullatt_block_indexes"):
            v = getattr(c, k, None)
            if isinstance(v, (list, tuple)) and v:
                setattr(c, k, sorted({min(int(i), layers - 1) for i in v})[:layers])
        for k in ("layer_types", "mlp_only_layers"):
            v = getattr(c, k, None)
            if old and isinstance(v, (list, tuple)) and len(v) == old:
                setattr(c, k, list(v)[:layers])
    if smoke and zoo._uses_mrope(cfg):
        zoo._set_mrope_sections(cfg)


def family_backbones(study: Study, names: list[str] | None = None) -> list[tuple[str, str]]:
    """(family, hub id) of the first backbone of each family in the study, or of the backbones ``names``."""
    entries = study.backbones
    if names:
        unknown = [n for n in names if n not in entries]
        if unknown:
            raise SystemExit(f"check_planner: unknown backbone(s) {', '.join(unknown)} (keys under 'backbones:')")
        return [(entries[n].family, entries[n].source) for n in names]
    out = {}
    for entry in entries.values():
        out.setdefault(entry.family, entry.source)
    return list(out.items())


def build(family: str, source: str, layers: int, smoke: bool, dtype, device):
    from transformers import AutoModelForImageTextToText

    adapter = get_adapter(family)
    cfg = copy.deepcopy(adapter.real_config(source))
    _cut(cfg, layers, smoke)
    torch.manual_seed(0)
    vlm = AutoModelForImageTextToText.from_config(cfg, dtype=dtype).to(device)
    return adapter, vlm


def language_model(vlm):
    lm = vlm.get_decoder() if hasattr(vlm, "get_decoder") else None
    if lm is None:
        base = getattr(vlm, vlm.base_model_prefix)
        lm = getattr(base, "language_model", None) or getattr(base, "text_model")
    return getattr(lm, "model", lm) if not hasattr(lm, "layers") and hasattr(lm, "model") else lm


def decoder_layers(lm) -> list:
    for name in ("layers", "layer", "h", "blocks"):
        found = getattr(lm, name, None)
        if isinstance(found, torch.nn.ModuleList):
            return list(found)
    raise ValueError(f"no decoder layers found in {type(lm).__name__}")


def breakdown(layers, run) -> list[tuple[str, str, int]]:
    """What the ``layers`` keep while ``run()`` builds the graph, by the autograd op that keeps it: (op.saved
    name, shape and dtype, bytes), largest first; the graph's saved tensors are read back node by node."""
    kept = {}
    out, _ = saved_bytes(run, layers, record=kept)
    owner, seen, stack = {}, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in (a for a in dir(node) if a.startswith("_saved_")):
            try:
                value = getattr(node, attr)
            except RuntimeError:  # freed or not a tensor
                continue
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if torch.is_tensor(t):
                    owner.setdefault(t.untyped_storage().data_ptr(), f"{node.name()}.{attr[len('_saved_'):]}")
        stack.extend(n for n, _ in node.next_functions)
    rows = {}
    for ptr, (nbytes, what) in kept.items():
        key = (owner.get(ptr, "?"), what)
        rows[key] = rows.get(key, 0) + nbytes
    return sorted(((op, what, n) for (op, what), n in rows.items()), key=lambda r: -r[2])


def saved_bytes(run, layers, model=None, outside: dict | None = None, record: dict | None = None) -> tuple:
    """Bytes of the activations autograd saves inside the decoder ``layers`` while ``run()`` builds the graph:
    each storage counted once (the layer's input, saved by its first norm, counts in that layer), the
    parameters (saved by every matmul for the input's gradient) not at all. With ``outside``, the bytes
    saved outside the layers (``model``'s parameters left out) go into ``outside["bytes"]``; with ``record``,
    each storage kept inside the layers: data pointer -> (bytes, shape and dtype)."""
    seen, beside, inside = {}, {}, [False]
    weights = {p.untyped_storage().data_ptr() for m in [*layers, *([model] if model is not None else [])]
               for p in m.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            if inside[0]:
                seen[storage.data_ptr()] = storage.nbytes()
                if record is not None:
                    record[storage.data_ptr()] = (storage.nbytes(), f"{tuple(t.shape)} {t.dtype}")
            elif outside is not None:
                beside[storage.data_ptr()] = storage.nbytes()
        return t

    def enter(*_):
        inside[0] = True

    def leave(*_):
        inside[0] = False

    handles = [h for layer in layers for h in (layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = run()
    finally:
        for h in handles:
            h.remove()
    if outside is not None:
        outside["bytes"] = sum(v for k, v in beside.items() if k not in seen)
    return out, sum(seen.values())


def checkpointed_bytes(vlm, lm, embeds) -> int:
    """Bytes autograd keeps over a forward pass of ``lm`` under gradient checkpointing (the training stage's
    non-reentrant form, whose own hooks keep each layer's input and recompute the rest), the parameters left
    out."""
    vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vlm.train()
    out, kept = saved_bytes(lambda: lm(inputs_embeds=embeds, use_cache=False).last_hidden_state, [lm])
    del out
    vlm.gradient_checkpointing_disable()
    return kept


def vision_inputs(vlm, b: int, image_size: int, dtype, device) -> dict:
    """Random pixel inputs of ``b`` frames as the family's image processor lays them out: Qwen's towers take
    every frame's flattened patches and their grid; the others a batch of frames at the tower's input size."""
    vc = vlm.config.vision_config
    if getattr(vc, "temporal_patch_size", None):
        p, t, g = vc.patch_size, vc.temporal_patch_size, image_size // vc.patch_size
        return dict(pixel_values=torch.randn(b * g * g, vc.in_channels * t * p * p, dtype=dtype, device=device),
                    image_grid_thw=torch.tensor([[1, g, g]] * b, device=device))
    size = vc.image_size if isinstance(vc.image_size, int) else vc.image_size[0]
    return dict(pixel_values=torch.randn(b, 3, size, size, dtype=dtype, device=device))


def measure_vision(adapter, vlm, facts: dict, b: int, precision: str, kernels: str, device) -> dict:
    """Activations the vision tower's layers keep for one forward pass over ``b`` frames at 224 px, per layer,
    against the planner's ``block_bytes`` over the tower's sequence (``vision_patches``)."""
    layers = list(_layers(adapter.vision_modules(adapter.backbone(vlm))[0]))
    inputs = vision_inputs(vlm, b, 224, DTYPES[precision], device)
    out, kept = saved_bytes(lambda: vlm.get_image_features(**inputs), layers)
    del out
    v = facts["vision_patches"]
    planned = block_bytes(facts["vision_block"], tokens=b * v, seq=v, precision=precision, kernels=kernels,
                          attention_mask=False)
    return dict(vision_layers=len(layers), vision_sequence=v, vision_bytes_per_layer=kept / len(layers),
                planned_vision_bytes_per_layer=planned, vision_ratio=kept / len(layers) / planned)


def optimizer_bytes(params: list) -> int:
    """Bytes of AdamW's state after one step over the parameters that have a gradient."""
    trained = [p for p in params if p.grad is not None]
    opt = torch.optim.AdamW(trained, lr=1e-6)
    opt.step()
    total = sum(t.numel() * t.element_size() for state in opt.state.values() for t in state.values()
                if torch.is_tensor(t) and t.dim() > 0)
    del opt
    return total


def measure(family: str, source: str, args) -> list[dict]:
    rows = []
    device = torch.device(args.device)
    for name in args.dtypes:
        dtype = DTYPES[name]
        adapter, vlm = build(family, source, args.layers, args.smoke, dtype, device)
        facts = architecture_facts(adapter, vlm, 224)
        lm = language_model(vlm)
        h, b = facts["hidden"], args.micro_batch
        s = facts["image_tokens"] + PROMPT_TEXT_TOKENS
        layers = decoder_layers(lm)
        n_layers = len(layers)
        params = [p for p in lm.parameters()]
        embeds = torch.randn(b, s, h, dtype=dtype, device=device, requires_grad=True)

        def forward():
            return lm(inputs_embeds=embeds, use_cache=False).last_hidden_state

        # the graph without any layer (embeddings in, final norm out), to count per layer
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        beside = {}
        out, act = saved_bytes(forward, layers, lm, beside)
        out.float().pow(2).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - start
        per_layer = act / max(n_layers, 1)
        planned = block_bytes(facts["text_block"], tokens=b * s, seq=s, precision=name,
                              kernels="cuda" if device.type == "cuda" else "cpu", attention_mask=False)
        # fp32: torch's AdamW keeps momentum and variance in the parameters' dtype, as DeepSpeed does in fp32
        # (8 bytes a trainable value); in 16 bits DeepSpeed keeps fp32 copies, torch's AdamW does not: not compared
        opt_bytes = optimizer_bytes(params) if name == "fp32" else None
        kernels = "cuda" if device.type == "cuda" else "cpu"
        param_bytes = sum(p.numel() * p.element_size() for p in params)
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
        n_params = sum(p.numel() for p in params)
        embedding = lm.get_input_embeddings().weight.numel()  # fed as embeddings here: no gradient
        row = dict(family=family, source=source, dtype=name, device=str(device), layers=n_layers, hidden=h,
                   micro_batch=b, sequence=s, smoke=args.smoke,
                   attention=facts["text_block"]["attention"],
                   activation_bytes_per_layer=per_layer, planned_bytes_per_layer=planned,
                   activation_ratio=per_layer / planned,
                   parameter_bytes=param_bytes, planned_parameter_bytes=n_params * dtype.itemsize,
                   gradient_bytes=grad_bytes, planned_gradient_bytes=(n_params - embedding) * dtype.itemsize,
                   optimizer_bytes=opt_bytes,
                   planned_optimizer_bytes=8 * (n_params - embedding) if opt_bytes is not None else None,
                   step_s=step_s, tokens_per_s=b * s / step_s)
        row.update(measure_vision(adapter, vlm, facts, b, name, kernels, device))
        # beside the layers (the final norm, embedding dropout), and the checkpointed form: each layer's input
        # and what is kept beside the layers (the one layer recomputed in the backward pass: the figure above)
        plan_full, plan_ckpt = (activation_bytes(facts, micro_batch=b, precision=name, gradient_checkpointing=ckpt,
                                                 kernels=kernels, attention_mask=False) for ckpt in (False, True))
        planned_beside = plan_full["text_beside"]
        row.update(beside_bytes=beside["bytes"], planned_beside_bytes=planned_beside,
                   checkpointed_bytes=checkpointed_bytes(vlm, lm, embeds),
                   planned_checkpointed_bytes=plan_ckpt["text"])
        row["checkpointed_ratio"] = row["checkpointed_bytes"] / row["planned_checkpointed_bytes"]
        if device.type == "cuda":
            from vlm4vla_core.plan_cost import PEAK_TFLOPS

            peak = PEAK_TFLOPS[args.gpu][1 if name == "fp32" else 0] * 1e12
            row.update(mfu=6 * n_params * b * s / step_s / peak, peak_memory_bytes=torch.cuda.max_memory_allocated(),
                       device_name=torch.cuda.get_device_name())
        vision_act = row["vision_bytes_per_layer"] * row["vision_layers"]
        row["activation_total_bytes"] = act + beside["bytes"] + vision_act
        row["planned_activation_total_bytes"] = (planned * n_layers + planned_beside
                                                 + row["planned_vision_bytes_per_layer"] * row["vision_layers"])
        row["activation_total_ratio"] = row["activation_total_bytes"] / row["planned_activation_total_bytes"]
        row["total_bytes"] = row["activation_total_bytes"] + param_bytes + grad_bytes + (opt_bytes or 0)
        row["planned_total_bytes"] = (row["planned_activation_total_bytes"] + row["planned_parameter_bytes"]
                                      + row["planned_gradient_bytes"] + (row["planned_optimizer_bytes"] or 0))
        row["total_ratio"] = row["total_bytes"] / row["planned_total_bytes"]
        rows.append(row)
        if args.breakdown:
            for op, what, nbytes in breakdown(layers, forward):
                print(f"    {nbytes / n_layers / 2**20:9.2f} MiB per layer  {op:<55} {what}")
        print(f"{family:<13} {name:<5} layers {n_layers} h {h} s {s} b {b}: activations {per_layer / 2**20:8.1f} MiB "
              f"per layer, planned {planned / 2**20:8.1f} MiB (x{row['activation_ratio']:.2f}); vision "
              f"{row['vision_bytes_per_layer'] / 2**20:.1f} MiB per layer (x{row['vision_ratio']:.2f}); checkpointed "
              f"x{row['checkpointed_ratio']:.2f}; activations x{row['activation_total_ratio']:.3f}; total "
              f"x{row['total_ratio']:.2f}; step {step_s:.2f} s", flush=True)
        del vlm, lm, params, out, layers
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu", default="H100-80GB", help="GPU model for the MFU (a key of PEAK_TFLOPS)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--families", nargs="*")
    parser.add_argument("--backbones", nargs="*", help="keys under backbones: (default: the first of each family)")
    parser.add_argument("--smoke", action="store_true", help="tiny dimensions: a few seconds on a CPU")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out, add these")
    parser.add_argument("--breakdown", action="store_true",
                        help="print what the decoder layers keep, per autograd op, shape and dtype")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sources = family_backbones(load_study(args.config), args.backbones)
    rows = []
    for family, source in sources:
        if args.families and family not in args.families:
            continue
        rows.extend(measure(family, source, args))
    if args.out:
        from vlm4vla_core.io import write_json

        if args.append and args.out.exists():
            rows = json.loads(args.out.read_text())["rows"] + rows
        write_json(args.out, dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  machine=platform.processor() or platform.machine(), torch=torch.__version__,
                                  rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
