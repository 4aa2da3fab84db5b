"""Rollout throughput against the bare simulator, and how full the policy server's batches are.

    envs/setup-libero-venv.sh .venv-libero                   # once: LIBERO's own environment
    envs/setup-calvin-venv.sh .venv-calvin ../calvin_env     # once: CALVIN's (calvin_env from a local clone)
    python tools/bench_rollouts.py [--benchmarks libero10 calvin] [--workers 2] [--episodes 4] [--max-steps 60]

In one run, per benchmark whose simulator environment exists, on the same episodes (the first
``--episodes`` of the benchmark's list, their step limit cut to ``--max-steps``), full-chunk execution:

- ``bare``: the episodes in one simulator process with zero actions and no policy server
  (``python -m vlm4vla_core.benchmarks.worker --bare``);
- through the policy server (``vlm4vla_core.evaluate.run_with_workers``) with 1 and ``--workers``
  simulator processes, for three policies: ``zero`` (the zero-action baseline: the bare run's actions,
  so the difference is the serving alone), ``tiny`` (a random-weight tiny Qwen2.5-VL policy, one torch
  thread) and ``tiny+sleep`` (the same with a sleep per batch of ``--slow-factor`` times the bare run's
  cycle, standing in for a large model's latency so that the policy is the slower side);
- ``tiny+sleep`` once more with the server's former fixed 5 ms batching window, for comparison;
- ``bare`` once more at the end: how much the shared cores' speed drifted during the run.

LIBERO-10's episodes are one task per worker from init state 0 (``--episodes`` a multiple of ``--workers``):
a worker that started at init state k would first replay the k earlier resets of its task's env
(``LiberoSim``), a cost of splitting one task's init states, not of serving.

Every run is timed from outside (process start, imports and environment builds included, as in an
evaluation job). Per simulator process: environment steps/s; steady, its policy steps/s from its first
policy request to its last (start-up left out); environment steps per CPU-second; each against the mean
of the two bare runs (the shared cores' speed drifts within a run). Also mean batch / workers, and
whether every episode's record (success, steps, re-plans) equals the one-worker run's. Also the worker
count ``eval_workers: auto`` would choose (``vlm4vla_core.serving.sizing``) from the bare run's cycle and
each policy's measured latency. Writes ``<out>/bench_rollouts.json``. The numbers depend on what else the
cores are doing: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: what must agree between a one-worker and an N-worker run of the same episode
SAME = ("index", "success", "steps", "plans", "completed", "wait_steps")


def entry_of(kind: str, args, python: str, tmp: Path) -> dict:
    common = dict(kind=kind, image_size=56, max_steps=args.max_steps, simulator_python=python)
    if kind == "libero10":  # one task per worker from init state 0: each builds one env and replays no resets
        if args.episodes % args.workers:
            raise SystemExit(f"--episodes {args.episodes}: LIBERO-10 needs a multiple of --workers {args.workers}")
        return dict(common, chunk=4, tasks=list(range(args.workers)), episodes_per_task=args.episodes // args.workers,
                    data_path=str(tmp / "unused"))
    if kind == "calvin":  # scene D composed from calvin_env's conf (no dataset here)
        return dict(common, chunk=10, chains=args.episodes, data_path=str(tmp / "no_dataset"))
    raise SystemExit(f"--benchmarks: no bench settings for kind {kind!r} (libero10, calvin)")


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tiny_policy(tmp: Path, chunk: int, action_dim: int):
    import torch

    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy

    torch.set_num_threads(1)
    get_adapter("qwen2_5_vl").make_tiny(tmp / "backbone", image_size=56, seed=0)
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(tmp / "backbone"), chunk=chunk, action_dim=action_dim,
                       image_size=56, head_hidden=64, arm_low=(-1.0,) * (action_dim - 1),
                       arm_high=(1.0,) * (action_dim - 1))
    return VLAPolicy(cfg).eval()


def bare_run(bench, entry: dict, episodes, tmp: Path) -> dict:
    from vlm4vla_core import evaluate

    (tmp / "bare_entry.json").write_text(json.dumps(entry))
    (tmp / "bare_episodes.json").write_text(json.dumps([e.as_dict() for e in episodes]))
    cmd = evaluate.worker_command(bench, entry, tmp / "bare_entry.json", tmp / "bare_episodes.json", entry["chunk"],
                                  tmp / "bare.jsonl", "--bare", str(tmp / "bare.json"), "--frame", str(tmp / "frame.npy"))
    (tmp / "bare.jsonl").unlink(missing_ok=True)  # the worker appends
    cpu0, t0 = cpu_children(), time.perf_counter()
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f"the bare simulator run failed: {' '.join(cmd)}")
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    summary = json.loads((tmp / "bare.json").read_text())
    records = [json.loads(line) for line in (tmp / "bare.jsonl").read_text().splitlines()]
    return dict(name="bare", policy="zero actions, no server", workers=1, wall_s=wall, sim_cpu_s=cpu, server_cpu_s=0.0,
                env_steps=summary["env_steps"], records=records, cycle_s=summary["cycle_s"],
                per_client=[(summary["requests"], summary["span_s"])], execute=int(entry["chunk"]))


def served_run(bench, entry: dict, episodes, infer, workers: int, tmp: Path, name: str, policy: str,
               max_wait_ms: float | None = None) -> dict:
    from vlm4vla_core import evaluate
    from vlm4vla_core.benchmarks.worker import env_steps

    entry = dict(entry, eval_workers=workers)
    parts = evaluate.Parts(tmp / f"{name}-w{workers}.json", dict(run=name, workers=workers))
    cpu0, own0, t0 = cpu_children(), time.process_time(), time.perf_counter()
    served = evaluate.run_with_workers(bench, entry, episodes, infer, entry["chunk"], entry["chunk"], parts,
                                       "whole_chunk", max_wait_ms=max_wait_ms)
    wall, cpu, own = time.perf_counter() - t0, cpu_children() - cpu0, time.process_time() - own0
    records = sorted(parts.done("whole_chunk").values(), key=lambda r: r["index"])
    stats = served["server"]
    return dict(name=name, policy=policy, workers=workers, wall_s=wall, sim_cpu_s=cpu, server_cpu_s=own,
                env_steps=sum(env_steps(r) for r in records), records=records, server=stats,
                per_client=[(c["requests"], c["span_s"]) for c in stats["per_client"]], execute=int(entry["chunk"]),
                window="fixed 5 ms (former rule)" if max_wait_ms is not None else "the policy's latency")


def steady(run: dict) -> float:
    """Policy steps/s per simulator process, from its first policy request to its last (process start and the
    first environment build left out; each request but the last is followed by ``execute`` steps), averaged
    over the processes."""
    rates = [(n - 1) * run["execute"] / span for n, span in run["per_client"] if span > 0]
    return sum(rates) / len(rates) if rates else 0.0


def rates(run: dict) -> dict:
    """Per simulator process: environment steps/s over the run, steady policy steps/s, steps per CPU-second."""
    return dict(wall=run["env_steps"] / run["wall_s"] / run["workers"], steady=steady(run),
                cpu=run["env_steps"] / run["sim_cpu_s"] if run["sim_cpu_s"] else 0.0)


def summarise(run: dict, base: dict, reference: dict | None) -> dict:
    """A run's figures, its rates against ``base`` (the bare runs' mean rates) and its records against
    ``reference``'s."""
    own = rates(run)
    out = dict(run=run["name"], policy=run["policy"], workers=run["workers"], env_steps=run["env_steps"],
               wall_s=round(run["wall_s"], 2), steps_per_s=round(run["env_steps"] / run["wall_s"], 2),
               steps_per_s_per_worker=round(own["wall"], 2), vs_bare=round(own["wall"] / base["wall"], 3),
               steady_steps_per_s_per_worker=round(own["steady"], 2),
               steady_vs_bare=round(own["steady"] / base["steady"], 3) if base["steady"] else None,
               steps_per_sim_cpu_s=round(own["cpu"], 2), cpu_vs_bare=round(own["cpu"] / base["cpu"], 3),
               sim_cpu_s=round(run["sim_cpu_s"], 2), server_cpu_s=round(run["server_cpu_s"], 2))
    if "server" in run:
        s = run["server"]
        out.update(requests=s["requests"], batches=s["batches"], batch_sizes=s["sizes"],
                   mean_batch=s["mean_batch_size"],
                   batch_fill=round(s["mean_batch_size"] / run["workers"], 3), window=run["window"],
                   server_wait_s=s["wait_s"], server_infer_s=s["infer_s"])
    if reference is not None:
        key = lambda r: {k: r.get(k) for k in SAME}  # noqa: E731
        out["same_records_as_1_worker"] = [key(r) for r in run["records"]] == [key(r) for r in reference["records"]]
    return out


def batch_invariance(policy, frame, instruction: str) -> float:
    """Largest difference between a request's actions alone and inside a batch of two (with another frame)."""
    import numpy as np

    alone = policy.predict([frame], [instruction])[0]
    other = np.ascontiguousarray(frame[::-1])
    together = policy.predict([frame, other], [instruction, "another instruction"])[0]
    return float(np.abs(alone - together).max())


def bench_one(kind: str, python: str, args, out: Path) -> dict:
    import numpy as np

    from vlm4vla_core import benchmarks, evaluate
    from vlm4vla_core.config import Study
    from vlm4vla_core.serving import sizing

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-", dir=out))
    raw_entry = entry_of(kind, args, python, tmp)
    study = Study.from_dict(dict(study="bench_rollouts", benchmarks={kind: raw_entry}))
    bench, entry = benchmarks.of(study, kind)
    bench.check(kind, raw_entry)
    episodes = bench.episodes(entry, 0)[: args.episodes]
    print(f"== {kind}: {len(episodes)} episodes, max_steps {args.max_steps}, chunk {entry['chunk']}", flush=True)
    bare = bare_run(bench, entry, episodes, tmp)
    print(f"bare: {bare['env_steps']} env steps in {bare['wall_s']:.1f} s", flush=True)
    policy = tiny_policy(tmp, entry["chunk"], bench.action_dim)
    tiny = evaluate.policy_infer(policy)

    slow_s = args.slow_factor * bare["cycle_s"]

    def slow(requests):
        time.sleep(slow_s)
        return tiny(requests)

    policies = [("zero", "zero actions (the bare run's)", bench_zero(entry, bench)),
                ("tiny", "tiny random-weight Qwen2.5-VL", tiny),
                ("tiny+sleep", f"tiny + {1000 * slow_s:.0f} ms per batch ({args.slow_factor:g}x the simulator's "
                                f"cycle: a stand-in for a large model's latency)", slow)]
    runs, order = {}, []  # (run, its reference for the records)
    for name, label, infer in policies:
        for workers in (1, args.workers):
            run = served_run(bench, entry, episodes, infer, workers, tmp, name, label)
            runs[name, workers] = run
            # one worker: against the bare run where the actions are the same (zero); N: against one worker
            order.append((run, runs[name, 1] if workers > 1 else bare if name == "zero" else None))
            print(f"{name}, {workers} worker(s): {run['env_steps']} env steps in {run['wall_s']:.1f} s", flush=True)
    former = served_run(bench, entry, episodes, slow, args.workers, tmp, "tiny+sleep, former window",
                        policies[2][1], max_wait_ms=5.0)
    order.append((former, runs["tiny+sleep", 1]))
    again = bare_run(bench, entry, episodes, tmp)  # the bare simulator once more: the drift of the shared cores
    again["name"] = "bare, again"
    order.append((again, bare))
    first, last = rates(bare), rates(again)
    base = {k: (first[k] + last[k]) / 2 for k in first}
    rows = [summarise(bare, base, None)] + [summarise(run, base, reference) for run, reference in order]
    frame = np.load(tmp / "frame.npy")
    request = {"images": frame[None], "instructions": [episodes[0].instruction]}
    cap = min(len(os.sched_getaffinity(0)), len(episodes), evaluate.MAX_BATCH)
    choices = {}
    for name, _, infer in policies[1:]:
        latency = sizing.measure_latency(evaluate.serve_batches(infer), request, sizing.batch_sizes(cap))
        choices[name] = sizing.choose_workers(latency, bare["cycle_s"], cap)
    return dict(kind=kind, episodes=len(episodes), max_steps=args.max_steps, chunk=entry["chunk"],
                bare_cycle_ms=round(1000 * bare["cycle_s"], 2), bare_mean={k: round(v, 3) for k, v in base.items()},
                runs=rows, auto_workers=choices,
                batch_invariance=batch_invariance(policy, frame, episodes[0].instruction))


def bench_zero(entry: dict, bench):
    from vlm4vla_core.benchmarks.base import zero_infer

    return zero_infer(entry["chunk"], bench.action_dim)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmarks", nargs="+", default=["libero10", "calvin"])
    p.add_argument("--workers", type=int, default=2, help="simulator processes of the N-worker runs")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--slow-factor", type=float, default=2.0,
                   help="the stand-in large model's latency per batch, in bare simulator cycles")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench_rollouts")
    args = p.parse_args()
    pythons = {"libero10": ROOT / ".venv-libero" / "bin" / "python", "calvin": ROOT / ".venv-calvin" / "bin" / "python"}
    args.out.mkdir(parents=True, exist_ok=True)
    from vlm4vla_core.io import write_json

    report = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cores=len(os.sched_getaffinity(0)),
                  load_average_before=os.getloadavg()[0], results={}, skipped={})
    for kind in args.benchmarks:
        python = pythons.get(kind)
        if python is None or not python.exists():
            report["skipped"][kind] = f"no simulator environment at {python}"
            print(f"== {kind}: skipped, {report['skipped'][kind]}", flush=True)
            continue
        report["results"][kind] = bench_one(kind, str(python), args, args.out)
    report["load_average_after"] = os.getloadavg()[0]
    write_json(args.out / "bench_rollouts.json", report)
    for kind, res in report["results"].items():
        mean = res["bare_mean"]
        print(f"\n{kind}: the bare runs' mean, per process: {mean['wall']:.2f} env steps/s, {mean['steady']:.2f} "
              f"steady policy steps/s, {mean['cpu']:.2f} env steps per CPU-second; cycle {res['bare_cycle_ms']} ms")
        print(f"{'run':<28}{'workers':>8}{'steps/s':>9}{'vs bare':>9}{'steady':>8}{'vs bare':>9}{'/CPU-s':>8}"
              f"{'vs bare':>9}{'batch':>7}{'fill':>7}  same")
        for r in res["runs"]:
            print(f"{r['run']:<28}{r['workers']:>8}{r['steps_per_s_per_worker']:>9}{r['vs_bare']:>9}"
                  f"{r['steady_steps_per_s_per_worker']:>8}{r['steady_vs_bare']!s:>9}{r['steps_per_sim_cpu_s']:>8}"
                  f"{r['cpu_vs_bare']:>9}{r.get('mean_batch', ''):>7}{r.get('batch_fill', ''):>7}  "
                  f"{r.get('same_records_as_1_worker', '')}")
        print("auto workers: " + ", ".join(f"{k}: {v['workers']} (latency {v['latency_ms']} ms)"
                                            for k, v in res["auto_workers"].items()))
        print(f"batch invariance of the tiny policy: {res['batch_invariance']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
