"""Data stage: build a benchmark's training set from the study config.

``python -m vlm4vla_core data --config C --benchmark K --out DIR`` runs the benchmark plug-in's
data stage: generated demonstrations (Meta-World) or an importer of the released dataset
(``data_path``). The output folder is the training set (see ``vlm4vla_core.episodes.source``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from vlm4vla_core import benchmarks, study
    from vlm4vla_core.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core data", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--benchmark", required=True, help="key under benchmarks:")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        config = study.load(args.config, benchmark=args.benchmark)
        bench, entry = benchmarks.of(config, args.benchmark)
        bench.build_data(entry, Path(args.out), workers=args.workers)
    except (ConfigError, ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0
