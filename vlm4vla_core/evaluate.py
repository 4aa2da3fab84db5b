"""Evaluation stage: closed-loop rollouts of one trained policy (or the zero-action baseline).

``python -m vlm4vla_core evaluate --config C --benchmark K --seed S --policy DIR --shard I --shards N --out F``
runs shard I of N of the benchmark's episode list in each of its execution modes (the whole
action chunk, half of it, or a single step before re-planning: ``benchmarks.modes_of``, by default
the modes VLM4VLA's scripts run); ``merge-eval`` joins the shards into the run's ``eval.json``, picks
the reported mode by the benchmark's mode selection and records it in ``selection``, with the
held-out number beside a best-of-modes one.

The simulator runs in this process when the benchmark allows it (Meta-World) and no
``simulator_python`` is set; otherwise this process serves the policy over a websocket and
``eval_workers`` simulator processes (``vlm4vla_core.benchmarks.worker``, in the simulator's own
environment) run the episodes, their requests batched into one policy call (``eval_workers: auto``
sizes the pool from the bare simulator's cycle and the policy's latency: ``serving.sizing``; what was
chosen and how full the batches were is the record's ``serving``). Finished episodes
are kept in ``<out>.parts/`` as they finish: a job that is stopped and run again runs only the
episodes it has not finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from vlm4vla_core import benchmarks
from vlm4vla_core.benchmarks.base import AUTO, Benchmark, Episode, check_failures, run_episodes, shard, zero_infer
from vlm4vla_core.benchmarks.video import RolloutVideos
from vlm4vla_core.config import BASELINE as ZERO
from vlm4vla_core.config import (MAX_FAILED_SHARE, ConfigError, Study, execute_steps, held_out_values, renamed_modes,
                                 select_mode)
from vlm4vla_core.io import read_json, write_json

#: rollout videos land in <result folder>/videos/<result stem>/<mode>/ (how many per task: evaluation.videos_per_task)
VIDEOS = "videos"


class Parts:
    """Finished episodes of an interrupted job, one JSON line each, under ``<out>.parts/``."""

    def __init__(self, out: Path, key: dict):
        self.dir = out.with_name(out.name + ".parts")
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        stamp = self.dir / "key"
        if self.dir.exists() and (not stamp.is_file() or stamp.read_text() != digest):
            shutil.rmtree(self.dir)  # written by another policy, config or shard: not ours
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)

    def done(self, mode: str, retry_failed: bool = False) -> dict[int, dict]:
        """Finished episodes by index; an episode that raised counts unless ``retry_failed`` (a job run
        again retries them), and a record without an error wins over one with."""
        found = {}
        for path in sorted(self.dir.glob(f"{mode}.*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed process was writing
                if record["index"] not in found or found[record["index"]].get("error"):
                    found[record["index"]] = record
        if retry_failed:
            found = {i: r for i, r in found.items() if not r.get("error")}
        return found

    def file(self, mode: str, name: str) -> Path:
        return self.dir / f"{mode}.{name}.jsonl"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def policy_infer(policy):
    def infer(requests: list[dict]) -> list[np.ndarray]:
        return list(policy.predict([r["image"] for r in requests], [r["instruction"] for r in requests]))

    return infer


def serve_batches(infer):
    """The server's batch function: each request holds the images of one worker tick."""

    def infer_batch(requests: list[dict]) -> list[np.ndarray]:
        flat = [dict(image=img, instruction=text) for r in requests for img, text in zip(r["images"], r["instructions"])]
        chunks = np.asarray(infer(flat), dtype=np.float32)
        out, i = [], 0
        for r in requests:
            out.append(chunks[i : i + len(r["images"])])
            i += len(r["images"])
        return out

    return infer_batch


#: ``eval_workers: auto``: the bare-simulator probe's step limit, and the most workers one policy process serves
PROBE_STEPS, MAX_BATCH = 40, 64


def worker_command(bench: Benchmark, entry: dict, entry_file: Path, episodes_file: Path, execute: int, out: Path,
                   *options: str) -> list[str]:
    """One simulator worker process (``vlm4vla_core.benchmarks.worker``) in the simulator's environment: the
    entry and episodes from JSON files, records appended to ``out``; ``options`` add ``--url`` (a policy
    server) or ``--bare`` and the rest."""
    return [*bench.simulator_command(entry), "-m", "vlm4vla_core.benchmarks.worker", "--kind", bench.kind,
            "--entry", str(entry_file), "--episodes", str(episodes_file), "--execute", str(execute),
            "--out", str(out), *options]


def choose_workers(bench: Benchmark, entry: dict, episodes: list[Episode], infer, execute: int, tmp: Path) -> dict:
    """The worker count of a job: ``eval_workers`` from the config, or for ``auto`` the rule of
    ``serving.sizing`` on this job's first episode run on the bare simulator (its step limit cut to
    ``PROBE_STEPS``) and the policy's latency on that episode's first frame. The policy is only timed: it
    holds no state between calls, so the episodes' results do not change."""
    from vlm4vla_core.serving import sizing

    setting = bench.workers(entry)
    if setting != AUTO:
        return dict(workers=max(1, min(setting, len(episodes))), rule="config eval_workers")
    probe = dict(entry, max_steps=min(entry["max_steps"], PROBE_STEPS)) if "max_steps" in entry else entry
    (tmp / "probe_entry.json").write_text(json.dumps(probe))
    (tmp / "probe_episodes.json").write_text(json.dumps([episodes[0].as_dict()]))
    cmd = worker_command(bench, entry, tmp / "probe_entry.json", tmp / "probe_episodes.json", execute,
                         tmp / "probe.jsonl", "--bare", str(tmp / "probe.json"), "--frame", str(tmp / "frame.npy"))
    if subprocess.run(cmd).returncode != 0 or not (tmp / "frame.npy").is_file():
        raise RuntimeError(f"eval_workers auto: the bare-simulator probe failed ({' '.join(cmd)}); see the log above")
    bare = read_json(tmp / "probe.json", "bare-simulator probe")
    if bare["cycle_s"] is None:
        raise RuntimeError("eval_workers auto: the probe episode asked the policy once; no simulator cycle to time")
    cap = min(len(os.sched_getaffinity(0)), len(episodes), MAX_BATCH)
    request = {"images": np.load(tmp / "frame.npy")[None], "instructions": [bare["instruction"]]}
    latency = sizing.measure_latency(serve_batches(infer), request, sizing.batch_sizes(cap))
    choice = sizing.choose_workers(latency, bare["cycle_s"], cap)
    print(f"eval_workers auto: {choice['workers']} of at most {cap} (simulator cycle {choice['cycle_ms']} ms, policy "
          f"latency {choice['latency_ms']} ms by batch size)", flush=True)
    return dict(choice, rule="auto: serving.sizing", probe=bare)


def run_with_workers(bench: Benchmark, entry: dict, episodes: list[Episode], infer, execute: int, chunk: int,
                     parts: Parts, mode: str, max_failed_share: float = MAX_FAILED_SHARE,
                     videos: tuple[Path, int] | None = None, max_wait_ms: float | None = None) -> dict:
    """Serve ``infer`` and run ``episodes`` in simulator processes (``choose_workers``); records land in
    ``parts``. Returns the worker choice and the server's batching figures (``ServerStats.as_dict``).
    ``max_wait_ms``: the server's batching window (None: the policy's latency, ``PolicyServer``)."""
    from vlm4vla_core.serving import PolicyServer

    python = bench.simulator_command(entry)
    with tempfile.TemporaryDirectory(prefix="vlm4vla-eval-") as tmp:
        choice = choose_workers(bench, entry, episodes, infer, execute, Path(tmp))
        workers = choice["workers"]
        with PolicyServer(serve_batches(infer), {"chunk": chunk, "action_dim": bench.action_dim},
                          max_batch=MAX_BATCH, max_wait_ms=max_wait_ms) as server:
            entry_file = Path(tmp) / "entry.json"
            entry_file.write_text(json.dumps(entry))
            procs = []
            for w in range(workers):
                eps_file = Path(tmp) / f"episodes{w}.json"
                block = episodes[w * len(episodes) // workers : (w + 1) * len(episodes) // workers]
                eps_file.write_text(json.dumps([e.as_dict() for e in block]))  # contiguous: a worker sees few tasks
                cmd = worker_command(bench, entry, entry_file, eps_file, execute, parts.file(mode, f"w{w}"),
                                     "--url", server.url, "--slots", str(bench.slots(entry)),
                                     "--max-failed-share", str(max_failed_share))
                if videos and videos[1] > 0:
                    cmd += ["--videos", str(videos[0]), "--videos-per-task", str(videos[1])]
                procs.append(subprocess.Popen(cmd))
            failed = [(w, p.wait()) for w, p in enumerate(procs)]
    failed = [(w, rc) for w, rc in failed if rc != 0]
    if failed:
        ids = {e.index for e in episodes}
        check_failures([r for i, r in parts.done(mode).items() if i in ids], len(episodes), max_failed_share)
        raise RuntimeError(f"simulator worker(s) failed: {failed} (python: {' '.join(python)}); see the log above")
    stats = server.stats
    print(f"policy server: {stats.requests} requests in {stats.batches} batches (mean batch "
          f"{stats.mean_batch_size:.2f} for {stats.clients} workers)", flush=True)
    return dict(choice, server=stats.as_dict())


def evaluate(config: Study, benchmark: str, seed: int, infer, chunk: int, modes: list[str], out: Path,
             shard_index: int = 0, shards: int = 1, key: dict | None = None,
             serving: dict | None = None) -> tuple[dict[str, dict], "Parts"]:
    """Roll out ``infer`` on the shard's episodes in each mode; returns ({mode: {execute_steps, episodes}},
    the finished-episode store, removed by the caller once the result is written). ``serving``: a dict that
    gets, per mode run through the policy server, the worker choice and the batching figures."""
    bench, entry = benchmarks.of(config, benchmark)
    episodes = shard(bench.episodes(entry, seed), shard_index, shards)
    parts = Parts(out, dict(key or {}, entry=entry, seed=seed, shard=[shard_index, shards], modes=modes))
    in_process = bench.runs_in_process(entry)
    evaluation = config.evaluation
    share = float(evaluation.max_failed_share if evaluation is not None else MAX_FAILED_SHARE)
    # a study config always has an evaluation section; a bare benchmark config (tests, tools) films nothing
    per_task = int(evaluation.videos_per_task) if evaluation is not None else 0
    results = {}
    for mode in modes:
        steps = execute_steps(mode, chunk)
        done = parts.done(mode, retry_failed=True)
        todo = [e for e in episodes if e.index not in done]
        if done:
            print(f"mode={mode} (executes {steps} of {chunk}): {len(done)} episodes already finished, "
                  f"{len(todo)} to run", flush=True)
        films = out.parent / VIDEOS / out.stem / mode  # the record's ``video`` is relative to this folder
        if todo and in_process:
            with parts.file(mode, "main").open("a") as f:
                run_episodes(bench, entry, todo, infer, steps, slots=bench.slots(entry),
                             on_record=lambda r: (f.write(json.dumps(r) + "\n"), f.flush()), max_failed_share=share,
                             videos=RolloutVideos(films, per_task) if per_task else None, mode=mode)
        elif todo:
            served = run_with_workers(bench, entry, todo, infer, steps, chunk, parts, mode, share, (films, per_task))
            if serving is not None:
                serving[mode] = served
        done = parts.done(mode)
        missing = [e.index for e in episodes if e.index not in done]
        if missing:
            raise RuntimeError(f"{mode}: episodes {missing[:10]} have no record")
        records = [done[e.index] for e in episodes]
        check_failures(records, len(records), share)  # over the whole shard (each worker checked its own block)
        failed = sum(bool(r.get("error")) for r in records)
        for r in records:  # relative to the result file's folder, where merge-eval rebases them
            if r.get("video"):
                r["video"] = (films / r["video"]).relative_to(out.parent).as_posix()
        results[mode] = dict(execute_steps=steps, episodes=records, failed_episodes=failed)
        print(f"{benchmark} seed {seed} mode={mode} (executes {steps} of {chunk}): "
              f"{sum(r['success'] for r in records)}/{len(records)} successful"
              + (f" ({failed} raised, counted as failures with their error)" if failed else ""), flush=True)
    return results, parts


def main(argv: list[str]) -> int:
    from vlm4vla_core import study

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core evaluate", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--seed", type=int, required=True, help="training seed of the run (selects its evaluation episodes)")
    p.add_argument("--policy", required=True, help=f"a trained policy folder, or {ZERO!r} for the zero-action baseline")
    p.add_argument("--backbone", default=ZERO)
    p.add_argument("--ablation", default="none")
    p.add_argument("--shard", type=int, default=0, help="this job's shard (0-based)")
    p.add_argument("--shards", type=int, default=1, help="shards the episodes are split over")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, help="result JSON (a whole run's eval.json when --shards is 1)")
    args = p.parse_args(argv)
    # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    config = study.load(args.config, benchmark=args.benchmark)
    if not 0 <= args.shard < args.shards:
        raise ConfigError(f"--shard {args.shard} is not in [0, --shards {args.shards})")

    import torch

    from vlm4vla_core.provenance import provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    bench, entry = benchmarks.of(config, args.benchmark)
    try:
        bench.preflight(entry)  # before the policy loads: a simulator that cannot run stops here
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    chunk, family = entry["chunk"], None
    if args.policy == ZERO:
        infer, modes, rule = zero_infer(chunk, bench.action_dim), ["whole_chunk"], "whole_chunk"
        source = "the zero-action baseline: one mode"
        key = dict(policy=ZERO)
    else:
        from vlm4vla_core.policy import load_policy

        policy = load_policy(args.policy, device="cuda" if torch.cuda.is_available() else "cpu")
        if policy.cfg.chunk != chunk or policy.cfg.action_dim != bench.action_dim:
            print(f"error: {args.policy}: chunk {policy.cfg.chunk} x action_dim {policy.cfg.action_dim} differs from "
                  f"benchmarks.{args.benchmark} (chunk {chunk}, action_dim {bench.action_dim})", file=sys.stderr)
            return 1
        infer, family = policy_infer(policy), policy.cfg.family
        modes, rule, source = benchmarks.modes_of(config, args.benchmark)
        weights = Path(args.policy) / "policy.safetensors"
        key = dict(policy=str(Path(args.policy).resolve()), weights=hashlib.sha256(weights.read_bytes()).hexdigest())
    out = Path(args.out)
    serving: dict[str, dict] = {}
    try:
        results, parts = evaluate(config, args.benchmark, args.seed, infer, chunk, modes, out, args.shard, args.shards,
                                  key, serving)
    except (ConfigError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    record = dict(
        study=config.name, backbone=args.backbone, family=family, benchmark=args.benchmark, kind=bench.kind,
        ablation=args.ablation, seed=args.seed, metric=bench.metric, checkpoint=args.policy, modes=results,
        mode_selection=rule, modes_source=source, shard=[args.shard, args.shards],
        episodes_total=len(bench.episodes(entry, args.seed)),
        simulator="in-process" if bench.runs_in_process(entry)
        else f"{bench.workers(entry)} worker process(es): {' '.join(bench.simulator_command(entry))}",
        provenance=provenance(config.raw),
    )
    if serving:
        record["serving"] = serving
    if args.shards == 1:
        record["reported_mode"] = select_mode({m: bench.score(r["episodes"]) for m, r in results.items()}, rule)
        record["selection"] = selection(bench, results, rule, record["reported_mode"])
    write_json(out, record, indent=1)
    parts.remove()
    return 0


def selection(bench: Benchmark, modes: dict[str, dict], rule: str, reported: str) -> dict:
    """The reported number beside the rule that produced it and, for ``best`` over several modes, the
    held-out number without that choice's upward bias (``config.held_out_values``: each episode scored in
    the mode that is best on the other half of the episodes)."""
    key = "completed" if bench.metric == "avg_len" else "success"
    out = dict(rule=rule, reported_mode=reported, value=bench.score(modes[reported]["episodes"]), metric=bench.metric)
    if rule == "best" and len(modes) > 1:
        values = {m: [float(e[key]) for e in r["episodes"]] for m, r in modes.items()}
        held, chosen = held_out_values(values)
        out.update(label="best of modes (the paper's rule; biased upward)", heldout=float(np.mean(held)),
                   heldout_label="held-out: mode chosen on the other half of the episodes (even / odd positions)",
                   heldout_modes=dict(even=chosen[0], odd=chosen[1]))
    else:
        out["label"] = "one mode" if len(modes) == 1 else f"fixed mode {rule!r}, declared before the run (unbiased)"
    return out


def merge(shards: list[dict], names: list[str]) -> dict:
    """One run's record from its shards: the episodes of every mode in episode order, checked complete."""
    first = shards[0]
    count = first["shard"][1]
    got = sorted(s["shard"][0] for s in shards)
    if got != list(range(count)):
        raise ValueError(f"shards {got} of {count}: expected each of 0..{count - 1} once ({', '.join(names)})")
    for s, name in zip(shards, names):
        for key in ("backbone", "benchmark", "ablation", "seed", "checkpoint", "episodes_total", "mode_selection"):
            if s.get(key) != first.get(key):
                raise ValueError(f"{name}: {key} {s.get(key)!r} differs from {names[0]} ({first.get(key)!r})")
        if set(s["modes"]) != set(first["modes"]):
            raise ValueError(f"{name}: modes {sorted(s['modes'])} differ from {names[0]} ({sorted(first['modes'])})")
    bench = benchmarks.get(first["kind"])
    modes = {}
    for mode, entry in first["modes"].items():
        episodes = sorted((e for s in shards for e in s["modes"][mode]["episodes"]), key=lambda e: e["index"])
        if [e["index"] for e in episodes] != list(range(first["episodes_total"])):
            raise ValueError(f"mode {mode}: the shards' episodes are not 0..{first['episodes_total'] - 1} once each")
        modes[mode] = dict(execute_steps=entry["execute_steps"], episodes=episodes,
                           failed_episodes=sum(bool(e.get("error")) for e in episodes))
    merged = {k: v for k, v in first.items() if k not in ("shard", "reported_mode", "serving")}
    if any("serving" in s for s in shards):  # each job's worker choice and batching, by shard
        merged["serving"] = {f"shard{s['shard'][0]}": s["serving"] for s in shards if "serving" in s}
    merged.update(modes=modes, shards=count,
                  reported_mode=select_mode({m: bench.score(r["episodes"]) for m, r in modes.items()},
                                            first["mode_selection"]))
    merged["selection"] = selection(bench, modes, first["mode_selection"], merged["reported_mode"])
    return merged


def merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core merge-eval", description="Join evaluation shards into eval.json")
    p.add_argument("shards", nargs="+", help="shard result files")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        shards = []
        for name in args.shards:  # a shard written before the execution modes were renamed: the new names
            try:
                shards.append(renamed_modes(read_json(name, "evaluation shard")))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        for data, name in zip(shards, args.shards):  # videos: relative to the shard's folder -> to the output's
            for mode in data.get("modes", {}).values():
                for e in mode.get("episodes", []):
                    if e.get("video"):
                        e["video"] = os.path.relpath(Path(name).parent / e["video"], Path(args.out).parent)
        merged = merge(shards, args.shards)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_json(args.out, merged, indent=1)
    return 0
