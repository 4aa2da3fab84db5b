"""Stage ``make-vqa-data``: write the train and held-out splits of a generated set of ``vqa_sets``.

A set's ``generate`` key names its generator:

- ``metaworld``: embodied VQA from the scenes of a Meta-World benchmark of the study
  (``vlm4vla_core.vqa.metaworld``; keys ``benchmark``, ``train_episodes_per_task``,
  ``heldout_episodes_per_task``, ``frames_per_episode``);
- ``shapes``: the general shapes corpus (``vlm4vla_core.vqa.shapes``; keys ``train_scenes``,
  ``heldout_scenes``, ``questions_per_scene``, ``image_size``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GENERATORS = ("metaworld", "shapes")


def write_set(config: dict, name: str, out: Path) -> dict[str, int]:
    """Both splits of the generated set ``name``; returns the record count per split."""
    from vlm4vla_core.config import ConfigError

    entry = (config.get("vqa_sets") or {}).get(name)
    if entry is None or entry.get("generate") not in GENERATORS:
        raise ConfigError(f"'vqa_sets.{name}' is not a generated set (generate: {' or '.join(GENERATORS)})")
    counts = {}
    if entry["generate"] == "shapes":
        from vlm4vla_core.vqa import shapes

        for split, key in (("train", "train_scenes"), ("heldout", "heldout_scenes")):
            counts[split] = shapes.generate(out, split, entry[key], entry.get("image_size", 112),
                                            entry.get("questions_per_scene", 3))
    else:
        from vlm4vla_core.vqa import metaworld

        bench = config["benchmarks"][entry["benchmark"]]
        for split, key in (("train", "train_episodes_per_task"), ("heldout", "heldout_episodes_per_task")):
            counts[split] = metaworld.generate(bench["tasks"], out, split, entry[key], entry.get("frames_per_episode", 2),
                                               bench.get("image_size", 112), bench.get("camera", "corner4"),
                                               bench.get("max_steps", 150))
    return counts


def main(argv: list[str] | None = None) -> int:
    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core make-vqa-data", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", required=True, help=f"key under vqa_sets: (generate: {' or '.join(GENERATORS)})")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        config = study.load(args.config)
        counts = write_set(config, args.set, args.out)
    except (ConfigError, KeyError) as err:
        print(f"error: {args.config}: {err}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        print(f"{args.out / split}: {n} questions", flush=True)
    return 0
