"""Per-run evaluation JSONs (or a results CSV) -> tidy long-format tables.

The long results table has one row per (backbone, benchmark, ablation, seed,
task): ``value`` is the benchmark's headline metric over the run's reported
mode (success in percent, or CALVIN's average completed length), ``task ==
"all"`` pools every episode of the run. The same table can come from a CSV
(published numbers, another group's results), so every analysis downstream
works on either source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlm4vla_core.aggregate.files import ResultsError, read_json
from vlm4vla_core.config import ABLATIONS, MODES, RENAMED_MODES, Study, held_out_values, renamed_modes
from vlm4vla_core.config import BASELINE as ZERO

ALL = "all"
KEYS = ["backbone", "benchmark", "ablation", "seed"]
COLUMNS = [*KEYS, "task", "metric", "value", "n_episodes", "mode"]
CSV_REQUIRED = ["backbone", "benchmark", "ablation", "seed", "metric", "value"]
RUN_REQUIRED = ["backbone", "benchmark", "ablation", "seed", "metric", "modes", "mode_selection", "reported_mode"]


def _success_pct(ep: dict) -> float:
    return 100.0 * bool(ep["success"])


def _completed(ep: dict) -> float:
    return float(ep["completed"])


#: metric name -> (value of one episode, the field that value needs, axis label, decimals)
METRICS = {
    "success_rate": (_success_pct, "success", "success rate (%)", 1),
    "avg_len": (_completed, "completed", "average completed length (0-5)", 3),
}


@dataclass
class Results:
    """Everything the analyses read. ``episodes``/``modes`` exist only for run JSON input."""

    results: pd.DataFrame
    episodes: pd.DataFrame | None = None
    modes: pd.DataFrame | None = None
    provenance: list[dict] = field(default_factory=list)
    source: str = ""
    mode_episodes: pd.DataFrame | None = None  # every mode's episodes (``episodes``: the reported mode's only)


def metric_label(metric: str) -> str:
    return METRICS[metric][2] if metric in METRICS else metric


def metric_decimals(metric: str) -> int:
    return METRICS[metric][3] if metric in METRICS else 2


# -- run JSONs --------------------------------------------------------------
def _episode_rows(path: Path, mode: str, episodes: list, metric: str) -> list[dict]:
    value_of, needed, _, _ = METRICS[metric]
    rows = []
    for i, ep in enumerate(episodes):
        for key in ("task", needed):
            if not isinstance(ep, dict) or key not in ep:
                raise ResultsError(f"{path}: modes.{mode}.episodes[{i}] has no {key!r}")
        rows.append(
            dict(
                task=str(ep["task"]),
                episode_seed=ep.get("episode_seed"),
                episode_id=episode_id(ep, i),
                success=bool(ep.get("success", False)),
                steps=ep.get("steps"),
                # time to success and how the episode ended (benchmarks.base: outcome, success_step); records
                # written before these fields: the steps of a success, and success / raised / failed
                success_step=ep.get("success_step", ep.get("steps") if ep.get("success") else None),
                outcome=ep.get("outcome") or ("success" if ep.get("success") else "raised" if ep.get("error")
                                              else "failed"),
                value=value_of(ep),
                video=(path.parent / ep["video"]).as_posix() if ep.get("video") else None,  # a rollout video
            )
        )
    return rows


def _best_mode(mean_by_mode: dict[str, float]) -> str:
    """The 'best' rule: the highest value; ties go to fewer re-plans (whole_chunk > half_chunk > single_step)."""
    order = [m for m in MODES if m in mean_by_mode] + [m for m in mean_by_mode if m not in MODES]
    return max(order, key=lambda m: (mean_by_mode[m], -order.index(m)))


def episode_id(ep: dict, position: int) -> str:
    """A stable id of an evaluation episode across seeds and arms: the task with its episode seed
    (Meta-World), initial state (LIBERO), episode id (SimplerEnv) or, failing those, the episode's index
    (CALVIN: the chain index); the position in the run's list when the record has none of them."""
    for key in ("episode_seed", "init_state", "episode_id"):
        if ep.get(key) is not None:
            return f"{ep['task']}/{ep[key]}"
    return f"{ep['task']}/{ep.get('index', position)}"


def platform_id(prov: dict | None) -> str:
    """The machine a run was evaluated on, from its provenance's hardware record: platform, processor,
    CPU count and GPUs (not the host name: two hosts of one build are one platform); 'unknown' without."""
    hw = (prov or {}).get("hardware")
    if not hw:
        return "unknown"
    parts = [hw.get("platform"), hw.get("processor"), f"{hw.get('cpu_count')} cpus", *(hw.get("gpus") or [])]
    return " / ".join(str(p) for p in parts if p)


def _check_mode_rule(path: Path, rule: str, reported: str, mean_by_mode: dict[str, float]) -> None:
    """The reported mode must follow the run's own selection rule."""
    if rule == "best":
        if reported != _best_mode(mean_by_mode):
            raise ResultsError(
                f"{path}: reported_mode {reported!r} breaks mode_selection 'best' "
                f"(per-mode values {mean_by_mode}; ties go to fewer re-plans: whole_chunk > half_chunk > single_step)"
            )
    elif rule != reported:
        raise ResultsError(f"{path}: mode_selection {rule!r} but reported_mode {reported!r}")


def _check_against_config(path: Path, run: dict, config: Study) -> None:
    known = [*config.backbones, *config.variants()]
    if run["backbone"] != ZERO and run["backbone"] not in known:
        raise ResultsError(f"{path}: backbone {run['backbone']!r} is not a key of the config's 'backbones'"
                           " or a pretraining or embodied-SFT variant")
    if run["benchmark"] not in benchmark_names(config):
        raise ResultsError(f"{path}: benchmark {run['benchmark']!r} is not in the config's 'benchmarks'")
    allowed = ["none"] if run["backbone"] == ZERO else list(ABLATIONS if config.ablations is None else config.ablations)
    if run["ablation"] not in allowed:
        raise ResultsError(f"{path}: ablation {run['ablation']!r} is not in the config's 'ablations' {allowed}")
    if config.seeds is not None and run["seed"] not in config.seeds:
        raise ResultsError(f"{path}: seed {run['seed']} is not in the config's 'seeds' {list(config.seeds)}")
    if config.name is not None and "study" in run and run["study"] != config.name:
        raise ResultsError(f"{path}: study {run['study']!r} differs from the config's study {config.name!r}")


def load_runs(paths, config: Study | None = None) -> Results:
    """Read evaluation JSONs; check each against its own mode rule and (if given) the config."""
    rows, episodes, modes, prov, seen, all_modes = [], [], [], [], {}, []
    paths = [Path(p) for p in paths]
    if not paths:
        raise ResultsError("no run files given")
    for path in paths:
        run = read_json(path, "run file")
        try:  # a run written before the execution modes were renamed: read under the new names
            run = renamed_modes(run) if isinstance(run, dict) else run
        except ValueError as err:
            raise ResultsError(f"{path}: {err}") from None
        missing = [k for k in RUN_REQUIRED if k not in run]
        if missing:
            raise ResultsError(f"{path}: missing key(s) {', '.join(map(repr, missing))}")
        if run["metric"] not in METRICS:
            raise ResultsError(f"{path}: unknown metric {run['metric']!r} (known: {', '.join(METRICS)})")
        if not isinstance(run["modes"], dict) or not run["modes"]:
            raise ResultsError(f"{path}: 'modes' must map mode names to their episodes")
        if run["reported_mode"] not in run["modes"]:
            raise ResultsError(f"{path}: reported_mode {run['reported_mode']!r} is not one of 'modes' ({', '.join(run['modes'])})")
        if config is not None:
            _check_against_config(path, run, config)
        key = tuple(run[k] for k in KEYS)
        if key in seen:
            raise ResultsError(f"{path}: duplicate run {dict(zip(KEYS, key))}, also in {seen[key]}")
        seen[key] = path
        ids = {k: run[k] for k in KEYS}
        mean_by_mode, values_by_mode, index_by_mode = {}, {}, {}
        for mode, entry in run["modes"].items():
            eps = entry.get("episodes") if isinstance(entry, dict) else None
            if not eps:
                raise ResultsError(f"{path}: modes.{mode}.episodes is missing or empty")
            ep_rows = _episode_rows(path, mode, eps, run["metric"])
            values = np.array([r["value"] for r in ep_rows])
            mean_by_mode[mode] = float(values.mean())
            values_by_mode[mode], index_by_mode[mode] = values, [e.get("index", i) for i, e in enumerate(eps)]
            modes.append(
                dict(**ids, metric=run["metric"], mode=mode, execute_steps=entry.get("execute_steps"),
                     value=float(values.mean()), n_episodes=len(ep_rows),
                     successes=int(sum(r["success"] for r in ep_rows)),
                     reported=mode == run["reported_mode"], mode_selection=run["mode_selection"],
                     run_file=path.as_posix())
            )
            rows_of_mode = [dict(**ids, metric=run["metric"], mode=mode, platform=platform_id(run.get("provenance")), **r)
                            for r in ep_rows]
            all_modes += rows_of_mode
            if mode == run["reported_mode"]:
                reported_rows = rows_of_mode
        # best of several modes: each episode also carries its held-out value (config.held_out_values)
        best_of = run["mode_selection"] == "best" and len(run["modes"]) > 1
        same = len({tuple(v) for v in index_by_mode.values()}) == 1
        held = held_out_values(values_by_mode)[0] if best_of and same else np.full(len(reported_rows), np.nan)
        episodes += [dict(r, heldout=h) for r, h in zip(reported_rows, held)]
        _check_mode_rule(path, run["mode_selection"], run["reported_mode"], mean_by_mode)
        prov.append(dict(file=str(path), **(run.get("provenance") or {})))

    episodes = pd.DataFrame(episodes)
    episodes["seed"] = episodes["seed"].astype(int)
    rows = _pool(episodes)
    all_modes = pd.DataFrame(all_modes).assign(seed=lambda d: d["seed"].astype(int))
    return Results(rows, episodes, pd.DataFrame(modes), prov, source=f"{len(paths)} run file(s)", mode_episodes=all_modes)


def _pool(episodes: pd.DataFrame) -> pd.DataFrame:
    """Episode rows -> per-task rows and one pooled 'all' row per run."""
    group = [*KEYS, "metric", "mode"]
    agg = dict(value=("value", "mean"), n_episodes=("value", "size"),
               heldout=("heldout", lambda v: v.mean(skipna=False)))
    per_task = episodes.groupby([*group, "task"], sort=False).agg(**agg).reset_index()
    pooled = episodes.groupby(group, sort=False).agg(**agg).reset_index().assign(task=ALL)
    out = pd.concat([per_task, pooled], ignore_index=True).assign(_all=lambda d: d["task"] == ALL)
    # heldout: the value without the best-of-modes selection bias (NaN when the run had no such choice)
    return out.sort_values([*KEYS, "_all", "task"], ignore_index=True)[[*COLUMNS, "heldout"]]


def results_from_runs(paths) -> pd.DataFrame:
    """Long-format results table of evaluation JSONs (see module docstring)."""
    return load_runs(paths).results


# -- results CSV ------------------------------------------------------------
def load_results_csv(path: str | Path, config: Study | None = None) -> Results:
    """Read a long-format results CSV (columns as ``COLUMNS``; task, n_episodes, mode optional)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results CSV not found: {path}")
    df = pd.read_csv(path, comment="#")
    missing = [c for c in CSV_REQUIRED if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} (required: {', '.join(CSV_REQUIRED)})")
    for col in ("task", "n_episodes", "mode"):
        if col not in df.columns:
            df[col] = ALL if col == "task" else np.nan
    df["task"] = df["task"].fillna(ALL).astype(str)
    df["mode"] = df["mode"].replace(RENAMED_MODES)  # a CSV written before the execution modes were renamed
    for col in ("value", "seed", "n_episodes"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna() if col == "n_episodes" else num.isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise ResultsError(f"{path}: line {line}: column {col!r} is not a number ({df[col][bad].iloc[0]!r})")
        df[col] = num
    df["seed"] = df["seed"].astype(int)
    unknown = sorted(set(df["metric"]) - set(METRICS))
    if unknown:
        raise ResultsError(f"{path}: unknown metric(s) {unknown} (known: {', '.join(METRICS)})")
    dup = df.duplicated([*KEYS, "task"])
    if dup.any():
        row = df[dup].iloc[0]
        raise ResultsError(f"{path}: duplicate row for {dict(row[[*KEYS, 'task']])}")
    if config is not None:
        names = benchmark_names(config)
        unknown = sorted(set(df["benchmark"]) - set(names))
        if unknown:
            raise ResultsError(f"{path}: benchmark(s) {unknown} are not in the config's 'benchmarks' {names}")
    df = _add_missing_all_rows(df)
    return Results(df[COLUMNS].reset_index(drop=True), source=str(path))


def _add_missing_all_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Runs given only per task get an 'all' row: the episode-weighted (else plain) mean of their tasks."""
    have_all = df[df["task"] == ALL].set_index(KEYS).index
    extra = []
    for key, g in df[df["task"] != ALL].groupby(KEYS):
        if key in have_all:
            continue
        n = g["n_episodes"]
        value = np.average(g["value"], weights=n) if n.notna().all() and n.sum() > 0 else g["value"].mean()
        extra.append(dict(zip(KEYS, key), task=ALL, metric=g["metric"].iloc[0], value=value,
                          n_episodes=n.sum() if n.notna().all() else np.nan, mode=g["mode"].iloc[0]))
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True) if extra else df


# -- config helpers ---------------------------------------------------------
def benchmark_names(config: Study) -> list[str]:
    """Benchmark names of a config, in its order."""
    return list(config.benchmarks)


def vqa_scores(config: Study) -> dict[str, dict]:
    """{backbone: {"score", "source"}} for backbones whose config entry carries a VQA score: given in
    the entry, or ``{published: KEY}``, the published score of model KEY (vlm4vla_core/published/published.yaml)."""
    from vlm4vla_core.published import sourced_vqa

    out = {}
    for name, entry in config.backbones.items():
        vqa = entry.vqa
        if vqa is not None and "published" in vqa:
            try:
                out[name] = sourced_vqa(vqa["published"])
            except KeyError as err:
                raise ResultsError(f"key 'backbones.{name}.vqa.published': {err.args[0]}") from None
        elif vqa is not None and vqa.get("score") is not None:
            out[name] = {"score": float(vqa["score"]), "source": vqa.get("source", ""), "n": vqa.get("n")}
    return out


def measured_vqa(paths) -> dict[str, dict[str, dict]]:
    """{set: {backbone: {"score", "source"}}} from vqa-eval JSONs at ``.../vqa/<backbone>/<set>.json``."""
    out: dict[str, dict[str, dict]] = {}
    for path in map(Path, paths):
        rep = read_json(path, "VQA score")
        if rep.get("score") is None:
            raise ResultsError(f"{path}: no 'score' (a VQA set without questions?)")
        name = rep.get("set") or path.stem
        out.setdefault(name, {})[path.parent.name] = dict(
            score=float(rep["score"]), source=f"{rep.get('source', 'measured')} (n={rep.get('n')})",
            n=rep.get("n"))
    return out
