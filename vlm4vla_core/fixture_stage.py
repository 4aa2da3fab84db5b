"""Fixture stage: a benchmark's synthetic dataset in its native layout, for ``fixture: synthetic``.

``python -m vlm4vla_core fixture --config C --benchmark K --out DIR`` asks the benchmark plug-in to
write a small synthetic dataset (its ``write_fixture``) into ``DIR``, the folder the entry's
``data_path`` names, so that the data stage imports it as it would the released dataset. The
simulator checks (config/checks/) run the whole chain on it: fixture, data, train, evaluate.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    from vlm4vla_core import benchmarks, study
    from vlm4vla_core.config import ConfigError
    from vlm4vla_core.io import atomic_dir

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core fixture", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--benchmark", required=True, help="key under benchmarks:")
    p.add_argument("--frame-size", type=int, default=None, help="side of the frames (default: the plug-in's)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    config = study.load(args.config, benchmark=args.benchmark)
    bench, entry = benchmarks.of(config, args.benchmark)
    if entry.get("fixture") != "synthetic":
        raise ConfigError(f"key 'benchmarks.{args.benchmark}.fixture': not synthetic; the entry's data_path is "
                          "the released dataset")
    with atomic_dir(args.out) as tmp:
        bench.write_fixture(entry, Path(tmp), frame_size=args.frame_size)
    print(f"wrote {args.out}")
    return 0
