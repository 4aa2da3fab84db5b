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

import argparse
import sys
from pathlib import Path

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


def plan_job(config: dict, backbone: str, benchmark: str, gpu: str | None = None, ablation: str = "full") -> dict:
    """The plan of one (backbone, benchmark) job of a study config, with the verdict for its resources."""
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.report import meta_model
    from vlm4vla_core.config import ACTION_DIM, ConfigError, train_settings

    entry, bench = config["backbones"][backbone], config["benchmarks"][benchmark]
    resources = config["resources"].get("train", {})
    gpu = gpu or resources.get("gpu_model")
    if gpu not in GPUS:
        raise ConfigError(f"key 'resources.train.gpu_model': unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    settings = train_settings(config, backbone, benchmark)
    gpus = max(int(resources.get("gpus", 1) or 1), settings.num_processes)
    adapter = get_adapter(entry["family"])
    if entry["source"] == "tiny":
        raise ConfigError(f"key 'backbones.{backbone}.source': a tiny backbone has no published size to plan")
    vlm = meta_model(adapter, entry["source"])
    facts = architecture_facts(adapter, vlm, bench.get("image_size", 224))
    pol = config["policy"]
    result = plan(facts, chunk=bench["chunk"], action_dim=ACTION_DIM[bench["kind"]], head_hidden=pol["head_hidden"],
                  head_layers=pol.get("head_layers", 2), micro_batch=settings.micro_batch, gpus=gpus,
                  precision=settings.precision, gradient_checkpointing=settings.gradient_checkpointing,
                  ablation=ablation)
    limit = GPUS[gpu] * GIB * USABLE
    for stage in (2, 3):
        result[f"zero{stage}"]["fits"] = result[f"zero{stage}"]["total"] <= limit
    configured = result[f"zero{settings.zero_stage}"] if settings.zero_stage in (2, 3) else result["zero2"]
    return dict(backbone=backbone, benchmark=benchmark, gpu=gpu, gpus=gpus, gpu_gib=GPUS[gpu],
                limit_gib=GPUS[gpu] * USABLE, zero_stage=settings.zero_stage, precision=settings.precision,
                micro_batch=settings.micro_batch, gradient_checkpointing=settings.gradient_checkpointing,
                facts=facts, fits=bool(configured["total"] <= limit), **result)


def describe(p: dict) -> str:
    lines = [f"{p['backbone']} on {p['benchmark']}: {p['gpus']} x {p['gpu']}, {p['precision']}, micro-batch "
             f"{p['micro_batch']}, sequence {p['sequence']}, gradient checkpointing "
             f"{'on' if p['gradient_checkpointing'] else 'off'}; {p['params'] / 1e9:.2f}B parameters, "
             f"{p['trainable'] / 1e9:.2f}B trainable",
             "stage  parameters  gradients  optimizer  activations  total (GiB per GPU)"]
    for stage in (2, 3):
        z = p[f"zero{stage}"]
        lines.append(f"ZeRO-{stage} {z['parameters'] / GIB:10.1f} {z['gradients'] / GIB:10.1f} "
                     f"{z['optimizer'] / GIB:10.1f} {z['activations'] / GIB:12.1f} {z['total'] / GIB:8.1f}  "
                     f"{'fits' if z['fits'] else 'does not fit'} in {p['limit_gib']:.0f} GiB")
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    lines.append(f"configured: ZeRO-{p['zero_stage']} -> {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from vlm4vla_core.config import ConfigError, load_config
    from vlm4vla_core.io import write_json

    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core plan-memory", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--backbone", required=True, help="key under backbones:")
    parser.add_argument("--benchmark", required=True, help="key under benchmarks:")
    parser.add_argument("--gpu", help=f"GPU type (default: resources.train.gpu_model); one of {', '.join(GPUS)}")
    parser.add_argument("--ablation", default="full")
    parser.add_argument("--out", type=Path, help="plan JSON to write")
    parser.add_argument("--check", action="store_true", help="exit 1 when the configured job does not fit")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        for key, val in (("backbones", args.backbone), ("benchmarks", args.benchmark)):
            if val not in config[key]:
                raise ConfigError(f"{args.config}: no {val!r} under {key!r}")
        result = plan_job(config, args.backbone, args.benchmark, args.gpu, args.ablation)
    except (ConfigError, ValueError, OSError) as err:
        print(f"plan-memory: {err}", file=sys.stderr)
        return 2
    print(describe(result))
    if args.out:
        write_json(args.out, result)
    if args.check and not result["fits"]:
        print(f"plan-memory: {args.backbone} on {args.benchmark} does not fit {result['gpus']} x {result['gpu']} "
              f"under ZeRO-{result['zero_stage']}; raise zero_stage, enable gradient_checkpointing or lower "
              "micro_batch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
