"""Time of ``snakemake -n`` on a study (default: the paper study, config.yaml), this tree against a baseline
revision in the same run.

    python tools/bench_dryrun.py [--baseline REV] [--repeats 3] [--configfile FILE]

The baseline (default: ``git merge-base HEAD main``) is exported with ``git archive`` into a temporary
folder; each tree plans with its own package on PYTHONPATH. Runs alternate between the two trees, and
the script prints, per tree, the median wall time and the median CPU time (user + system of snakemake
and its children: what the planning costs on an idle machine), and the ratios baseline / this tree.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(rev: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def dry_run(tree: Path, configfile: str | None) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
    if configfile:
        cmd += ["--configfile", configfile]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"snakemake -n failed in {tree}:\n{out.stderr[-2000:]}")
    jobs = next((int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("total ")), -1)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to compare with (default: git merge-base HEAD main)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configfile", help="study config, relative to each tree (default: config.yaml)")
    args = parser.parse_args()
    rev = args.baseline or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True,
                                          text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export(rev, base)
        trees = {"baseline": base, "this tree": ROOT}
        times = {name: [] for name in trees}
        jobs = {}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                wall, cpu, n = dry_run(tree, args.configfile)
                times[name].append((wall, cpu))
                jobs[name] = n
    print(f"snakemake -n, {args.configfile or 'config.yaml'}; baseline {rev[:12]}; {args.repeats} runs each; "
          f"load average {os.getloadavg()[0]:.1f}")
    med = {}
    for name, runs in times.items():
        med[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        print(f"{name:>10}: {jobs[name]} jobs, wall {med[name][0]:.2f} s, CPU {med[name][1]:.2f} s (median)")
    print(f"ratio baseline / this tree: wall {med['baseline'][0] / med['this tree'][0]:.2f}x, "
          f"CPU {med['baseline'][1] / med['this tree'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
