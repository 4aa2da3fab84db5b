"""``python -m vlm4vla_core plan-memory``: GPU memory per rank of one training job of a study, and
whether it fits the GPUs its config gives it (the model is ``vlm4vla_core.backbones.memory``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlm4vla_core.backbones.memory import GIB, GPUS, USABLE, architecture_facts, plan
from vlm4vla_core.config import Study


def plan_job(config: Study, backbone: str, benchmark: str, gpu: str | None = None, ablation: str = "full") -> dict:
    """The plan of one (backbone, benchmark) job of a study config, with the verdict for its resources."""
    from vlm4vla_core import benchmarks
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.card import meta_model
    from vlm4vla_core.config import ConfigError

    entry, bench = config.backbones[backbone], config.benchmarks[benchmark]
    resources = config.resources.get("train", {})
    gpu = gpu or resources.get("gpu_model")
    if gpu not in GPUS:
        raise ConfigError(f"key 'resources.train.gpu_model': unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    settings = config.train_settings(backbone, benchmark)
    gpus = max(int(resources.get("gpus", 1) or 1), settings.num_processes)
    adapter = get_adapter(entry.family)
    if entry.source == "tiny":
        raise ConfigError(f"key 'backbones.{backbone}.source': a tiny backbone has no published size to plan")
    vlm = meta_model(adapter, entry.source)
    facts = architecture_facts(adapter, vlm, bench.image_size or 224)
    pol = config.policy
    result = plan(facts, chunk=bench.chunk, action_dim=benchmarks.get(bench.kind).action_dim, head_hidden=pol.head_hidden,
                  head_layers=pol.head_layers, micro_batch=settings.micro_batch, gpus=gpus,
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
    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError
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
        config = study.load(args.config, benchmark=args.benchmark, backbone=args.backbone)
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
