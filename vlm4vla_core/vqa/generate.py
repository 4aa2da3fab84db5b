"""Stage ``make-vqa-data``: write the train and held-out splits of a generated set of ``vqa_sets``.

A set's ``generate`` key names its generator:

- ``shapes``: the general shapes corpus (``vlm4vla_core.vqa.shapes``; keys ``train_scenes``,
  ``heldout_scenes``, ``questions_per_scene``, ``image_size``);
- a generator a benchmark plug-in provides (its ``vqa_generators``, written by its
  ``write_vqa_split``, which reads the set's further keys): the set's ``benchmark`` names a
  benchmark of that kind, whose scenes the questions are built from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlm4vla_core.config import Study

#: the generator of this stage's own (not a benchmark's scenes)
SHAPES = "shapes"
SPLITS = ("train", "heldout")


def generators() -> tuple[str, ...]:
    """Every value of ``vqa_sets.<set>.generate``: ``shapes`` and the plug-ins' generators."""
    from vlm4vla_core import benchmarks

    return (SHAPES, *sorted(benchmarks.vqa_generators()))


def write_set(config: Study, name: str, out: Path) -> dict[str, int]:
    """Both splits of the generated set ``name``; returns the record count per split."""
    from vlm4vla_core.config import ConfigError

    vset = config.vqa_sets.get(name)
    known = generators()
    if vset is None or vset.generate not in known:
        raise ConfigError(f"'vqa_sets.{name}' is not a generated set (generate: {' or '.join(known)})")
    entry = vset.entry  # the generator's own keys
    counts = {}
    if vset.generate == SHAPES:
        from vlm4vla_core.vqa import shapes

        for split in SPLITS:
            counts[split] = shapes.generate(out, split, entry[f"{split}_scenes"], entry.get("image_size", 112),
                                            entry.get("questions_per_scene", 3))
    else:
        from vlm4vla_core import benchmarks

        plugin = benchmarks.vqa_generators()[vset.generate]
        bench = dict(config.benchmarks[vset.benchmark].entry)
        for split in SPLITS:
            counts[split] = plugin.write_vqa_split(vset.generate, bench, dict(entry), out, split)
    return counts


def main(argv: list[str] | None = None) -> int:
    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core make-vqa-data", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", required=True, help=f"key under vqa_sets: (generate: {' or '.join(generators())})")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    config = study.load(args.config)  # a ConfigError names the file: one line 'error: ...' (__main__.run)
    try:
        counts = write_set(config, args.set, args.out)
    except ConfigError as err:
        raise ConfigError(f"{args.config}: {err}") from None
    for split, n in counts.items():
        print(f"{args.out / split}: {n} questions", flush=True)
    return 0
