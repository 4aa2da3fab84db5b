"""Benchmark plug-ins, registered by their ``kind``.

Each sub-package here is one benchmark; its ``__init__`` sets ``BENCHMARK`` to an instance of
its ``vlm4vla_core.benchmarks.base.Benchmark`` subclass and imports nothing heavy (simulators
and importers are imported by the methods that need them). ``get(kind)`` finds it by scanning
this folder, so adding a benchmark adds a folder and touches no other module.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import cache

from vlm4vla_core.benchmarks.base import Benchmark, Episode
from vlm4vla_core.config import ConfigError, Study

#: keys every benchmark entry may have (the kind-specific ones are declared by the plug-in)
COMMON_KEYS = {
    "kind": "the plug-in (a folder of vlm4vla_core/benchmarks)",
    "chunk": "action chunk K predicted per policy call",
    "image_size": "side of the square frame the policy sees",
    "data_path": "dataset folder for benchmarks imported from disk",
    "fixture": "synthetic: data_path is written by the workflow's fixture rule, a small synthetic set in the native layout",
    "training": "training settings that override the study's",
    "eval_shards": "evaluation jobs the episodes are split over (merged into one result)",
    "eval_workers": "simulator processes per evaluation job, served by one policy process (auto: sized from the "
                    "simulator's cycle and the policy's latency)",
    "eval_batch": "episodes each simulator process runs in lockstep",
    "simulator_python": "Python of the simulator's own environment (default: the policy's own)",
    "modes": "execution modes of this benchmark (default: those VLM4VLA's scripts run on it, else evaluation.modes)",
    "mode_selection": "best, or a fixed mode declared before the run (default: evaluation.mode_selection)",
    "arm_range": "official (VLM4VLA's clip to the norm range) or full (the whole percentile range); default per kind",
}


@cache
def registry() -> dict[str, Benchmark]:
    found: dict[str, Benchmark] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            bench = getattr(importlib.import_module(f"{__name__}.{info.name}"), "BENCHMARK", None)
            if isinstance(bench, Benchmark):
                found[bench.kind] = bench
    return found


def get(kind: str) -> Benchmark:
    """The plug-in of ``kind``; ConfigError names the known kinds."""
    kinds = registry()
    if kind not in kinds:
        close = difflib.get_close_matches(kind, list(kinds), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown benchmark kind {kind!r} (known: {', '.join(sorted(kinds))}){hint}")
    return kinds[kind]


def vqa_generators() -> dict[str, Benchmark]:
    """Each VQA-set generator a plug-in provides (``Benchmark.vqa_generators``) -> that plug-in."""
    return {g: bench for bench in registry().values() for g in bench.vqa_generators}


def of(study: Study, name: str) -> tuple[Benchmark, dict]:
    """The plug-in and the settings (defaults filled in) of benchmark ``name`` of a study."""
    entry = study.benchmarks[name]
    bench = get(entry.kind)
    return bench, bench.settings(dict(entry.entry))


def modes_of(study: Study, name: str) -> tuple[list[str], str, str]:
    """(execution modes, selection rule, where the modes come from) of benchmark ``name``: the entry's
    ``modes``, else the plug-in's ``official_modes``, else ``evaluation.modes``; the entry's
    ``mode_selection``, else ``evaluation.mode_selection``. A fixed rule must name one of the modes."""
    bench, entry = of(study, name)
    evaluation = study.evaluation
    if entry.get("modes"):
        modes, source = list(entry["modes"]), f"benchmarks.{name}.modes"
    elif bench.official_modes:
        modes, source = list(bench.official_modes), f"the official scripts' modes for {bench.kind}"
    else:
        modes, source = list(evaluation.modes), "evaluation.modes"
    rule = entry.get("mode_selection") or evaluation.mode_selection
    if rule != "best" and rule not in modes:
        key = f"benchmarks.{name}.mode_selection" if entry.get("mode_selection") else "evaluation.mode_selection"
        raise ConfigError(f"key '{key}': {rule!r} is not one of the execution modes {modes} of benchmark {name!r} "
                          f"({source}); set benchmarks.{name}.modes or .mode_selection")
    return modes, rule, source


__all__ = ["Benchmark", "COMMON_KEYS", "Episode", "get", "modes_of", "of", "registry"]
