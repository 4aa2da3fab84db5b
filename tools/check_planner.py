"""The memory planner's activation term, and a training step's speed, measured per paper family.

    python tools/check_planner.py [--device cpu|cuda] [--layers 2] [--micro-batch 2] [--dtypes fp32 bf16]
                                       [--families ...] [--smoke] [--out FILE.json]

For one backbone of each family of the paper study (config.yaml), the published config is built with
random weights at its real hidden size, its language model cut to ``--layers`` decoder layers (and its
vision tower to as many). One training step of the language model runs on ``--micro-batch`` sequences of
the planner's length (image tokens + prompt) fed as embeddings, and the script measures:

- activations: the bytes of the tensors autograd keeps for the backward pass (each storage counted
  once), per decoder layer, against the planner's ``34 x b x s x h`` bytes per layer
  (``vlm4vla_core.backbones.memory``, written for 16-bit activations);
- parameters and gradients of the cut language model: bytes held, against ``P x bytes per value``;
- on CUDA also the step time, tokens/s, MFU (6 x parameters x tokens / time over the GPU's dense peak,
  ``vlm4vla_core.plan_cost.PEAK_TFLOPS``; ``--gpu`` names it) and ``torch.cuda.max_memory_allocated``.

``--smoke`` shrinks every config to a few dimensions (a CPU run of seconds, for the test).
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
from vlm4vla_core.backbones.memory import PROMPT_TEXT_TOKENS, architecture_facts
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


def family_backbones(study: Study) -> dict[str, str]:
    """The first backbone of each family in the study: family -> hub id."""
    out = {}
    for entry in study.backbones.values():
        out.setdefault(entry.family, entry.source)
    return out


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


def saved_bytes(run, layers) -> tuple:
    """Bytes of the activations autograd saves inside the decoder ``layers`` while ``run()`` builds the graph:
    each storage counted once (the layer's input, saved by its first norm, counts in that layer), the
    parameters (saved by every matmul for the input's gradient) not at all."""
    seen, inside = {}, [False]
    weights = {p.untyped_storage().data_ptr() for layer in layers for p in layer.parameters()}

    def pack(t):
        if inside[0]:
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                seen[storage.data_ptr()] = storage.nbytes()
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
    return out, sum(seen.values())


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
        embeds = torch.randn(b, s, h, dtype=dtype, device=device, requires_grad=False)

        def forward():
            return lm(inputs_embeds=embeds, use_cache=False).last_hidden_state

        # the graph without any layer (embeddings in, final norm out), to count per layer
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out, act = saved_bytes(forward, layers)
        out.float().pow(2).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - start
        per_layer = act / max(n_layers, 1)
        planned = 34 * b * s * h
        param_bytes = sum(p.numel() * p.element_size() for p in params)
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
        n_params = sum(p.numel() for p in params)
        embedding = lm.get_input_embeddings().weight.numel()  # fed as embeddings here: no gradient
        row = dict(family=family, source=source, dtype=name, device=str(device), layers=n_layers, hidden=h,
                   micro_batch=b, sequence=s, smoke=args.smoke,
                   activation_bytes_per_layer=per_layer, planned_bytes_per_layer=planned,
                   activation_ratio=per_layer / planned,
                   parameter_bytes=param_bytes, planned_parameter_bytes=n_params * dtype.itemsize,
                   gradient_bytes=grad_bytes, planned_gradient_bytes=(n_params - embedding) * dtype.itemsize,
                   step_s=step_s, tokens_per_s=b * s / step_s)
        if device.type == "cuda":
            from vlm4vla_core.plan_cost import PEAK_TFLOPS

            peak = PEAK_TFLOPS[args.gpu][1 if name == "fp32" else 0] * 1e12
            row.update(mfu=6 * n_params * b * s / step_s / peak, peak_memory_bytes=torch.cuda.max_memory_allocated(),
                       device_name=torch.cuda.get_device_name())
        rows.append(row)
        print(f"{family:<13} {name:<5} layers {n_layers} h {h} s {s} b {b}: activations {per_layer / 2**20:8.1f} MiB "
              f"per layer, planned {planned / 2**20:8.1f} MiB (x{row['activation_ratio']:.2f}); step {step_s:.2f} s",
              flush=True)
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
    parser.add_argument("--smoke", action="store_true", help="tiny dimensions: a few seconds on a CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sources = family_backbones(load_study(args.config))
    rows = []
    for family, source in sources.items():
        if args.families and family not in args.families:
            continue
        rows.extend(measure(family, source, args))
    if args.out:
        from vlm4vla_core.io import write_json

        write_json(args.out, dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  machine=platform.processor() or platform.machine(), torch=torch.__version__,
                                  rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
