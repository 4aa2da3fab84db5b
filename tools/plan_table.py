"""Per-GPU memory of the paper study's train jobs (config.yaml) under ZeRO-2 and ZeRO-3, as a Markdown table.

    python tools/plan_table.py [config.yaml]

One row per backbone at the heaviest benchmark (the largest micro-batch); the last column gives the
verdict of the configured stage on every benchmark. Meta device only: no weights are read.
"""

import sys
import warnings

from vlm4vla_core.backbones.memory import GIB
from vlm4vla_core.plan_memory import plan_job
from vlm4vla_core.config import load_study

warnings.filterwarnings("ignore")
config = load_study(sys.argv[1] if len(sys.argv) > 1 else "config.yaml")
print("| backbone | benchmark | params (B) | ZeRO-2: params / grads / optim / act = total (GiB) | "
      "ZeRO-3: total (GiB) | configured | fits (calvin, simpler_bridge, libero10) |")
print("|---|---|---|---|---|---|---|")
for backbone in config.backbones:
    plans = {b: plan_job(config, backbone, b) for b in config.benchmarks}
    worst = max(plans.values(), key=lambda p: p[f"zero{p['zero_stage']}"]["total"])
    z2, z3 = worst["zero2"], worst["zero3"]
    fmt = lambda z: f"{z['parameters'] / GIB:.1f} / {z['gradients'] / GIB:.1f} / {z['optimizer'] / GIB:.1f} / " \
                    f"{z['activations'] / GIB:.1f} = **{z['total'] / GIB:.1f}**"
    conf = f"ZeRO-{worst['zero_stage']}" + (", ckpt" if worst["gradient_checkpointing"] else "")
    verdicts = ", ".join("yes" if p["fits"] else "**no**" for p in plans.values())
    print(f"| {backbone} | {worst['benchmark']} (b={worst['micro_batch']}) | {worst['params'] / 1e9:.2f} | {fmt(z2)} "
          f"({'fits' if z2['fits'] else 'no'}) | {z3['total'] / GIB:.1f} ({'fits' if z3['fits'] else 'no'}) | "
          f"{conf} | {verdicts} |")
