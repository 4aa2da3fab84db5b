"""Mutation testing of the benchmark protocols, the policy's action maths and the statistics.

    python tests/helpers/mutants.py run [GROUP ...]     # mutmut 3 over the groups' functions (default: all)
    python tests/helpers/mutants.py run --sample 4 ...   # every 4th mutant of each group (by name), to save time
    python tests/helpers/mutants.py report [--out F]    # score per group, survivors, equivalents

mutmut's settings (the files it may mutate, the fast test selection each mutant runs against) are in
setup.cfg; the functions each group covers are ``SCOPE`` below; the mutants judged equivalent are the
table of docs/mutation.md (a mutant name in backticks, then the reason). The score of a group is
killed / (mutants run - equivalent); a timeout counts as killed, as mutmut counts it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "mutation.md"
B = "vlm4vla_core.benchmarks"
#: group -> mutmut name patterns (module.x_function / module.xǁClassǁmethod), in run order: policy.py last
SCOPE = {
    "protocols": [
        f"{B}.base.xǁAgentǁ*", f"{B}.base.x_*", f"{B}.base.xǁBenchmarkǁscore*", f"{B}.base.xǁBenchmarkǁaction_bounds*",
        *(f"{B}.calvin.xǁCalvinBenchmarkǁ{m}*" for m in
          ("check_values", "action_bounds", "episodes", "run_episode", "image_transform", "score")),
        f"{B}.calvin.x_*", f"{B}.calvin.protocol.*",
        *(f"{B}.libero10.xǁLibero10Benchmarkǁ{m}*" for m in ("check_values", "episodes", "run_episode", "image_transform")),
        f"{B}.libero10.x_*",
        *(f"{B}.simpler_bridge.xǁSimplerBridgeBenchmarkǁ{m}*" for m in
          ("action_bounds", "episodes", "run_episode", "image_transform")),
        f"{B}.simpler_bridge.x_*", f"{B}.simpler_bridge.convert.*",
    ],
    "statistics": ["vlm4vla_core.aggregate.stats.*"],
    "policy": [*(f"vlm4vla_core.policy.xǁVLAPolicyǁ{m}*" for m in
                 ("loss", "_bounds", "normalize_arm", "denormalize_arm", "predict")),
               "vlm4vla_core.policy.x_arm_to_label*", "vlm4vla_core.policy.x_label_to_arm*"],
}
KILLED, SURVIVED = {1, 3, 36, 24, -24, 152, 255}, {0}


def group_of(name: str) -> str | None:
    for group, patterns in SCOPE.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return group
    return None


def results() -> dict[str, int | None]:
    """mutant name -> mutmut's exit code (None: not run yet), from mutmut's own records under mutants/."""
    out: dict[str, int | None] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.meta")):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the rows of docs/mutation.md's equivalent-mutant table."""
    if not DOC.is_file():
        return {}
    rows = re.findall(r"^\|\s*`([^`]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$", DOC.read_text(), flags=re.M)
    return dict(rows)


def report() -> str:
    codes, equiv = results(), equivalents()
    unknown = sorted(set(equiv) - set(codes))
    lines, total_ok, unmeasured = [], True, []
    for group in SCOPE:
        names = sorted(n for n in codes if group_of(n) == group)
        run = [n for n in names if codes[n] is not None]
        killed = [n for n in run if codes[n] in KILLED]
        survived = [n for n in run if codes[n] not in KILLED]
        eq = [n for n in survived if n in equiv]
        live = [n for n in survived if n not in equiv]
        counted = len(run) - len(eq)
        score = 100.0 * len(killed) / counted if counted else float("nan")
        timeouts = sum(codes[n] not in (1, 3) for n in killed)
        lines.append(f"## {group}: {score:.1f}% of non-equivalent mutants killed "
                     f"({len(killed)} of {counted}, {timeouts} of them by timeout; {len(names)} mutants, "
                     f"{len(names) - len(run)} not run, {len(eq)} equivalent)")
        kinds = Counter("survived" if codes[n] in SURVIVED else f"exit {codes[n]}" for n in live)
        if live:
            lines.append(f"surviving ({', '.join(f'{v} {k}' for k, v in kinds.items())}):")
            lines += [f"- `{n}`" for n in live]
        if counted:
            total_ok &= score >= 90.0
        else:
            unmeasured.append(group)
        lines.append("")
    if unknown:
        lines.append(f"equivalents listed in docs/mutation.md but not among the mutants: {', '.join(unknown)}")
    lines.append("goal (>= 90% per group): " + ("met" if total_ok else "NOT met")
                 + (f" by the groups run; not run: {', '.join(unmeasured)}" if unmeasured else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/helpers/mutants.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("groups", nargs="*", choices=list(SCOPE))
    r.add_argument("--max-children", type=int, default=None)
    r.add_argument("--sample", type=int, default=1,
                   help="run every N-th mutant of a group, in name order (needs the mutants/ folder of a first run)")
    o = sub.add_parser("report")
    o.add_argument("--out", default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.cmd == "run":
        for group in args.groups or list(SCOPE):
            names = SCOPE[group]
            if args.sample > 1:
                names = sorted(n for n in results() if group_of(n) == group)[:: args.sample]
                if not names:
                    print(f"no mutants of {group} under mutants/: run once without --sample first", file=sys.stderr)
                    return 2
            cmd = [str(Path(sys.executable).with_name("mutmut")), "run", *names]
            if args.max_children:
                cmd[2:2] = ["--max-children", str(args.max_children)]
            print(f"mutmut: {group}", flush=True)
            res = subprocess.run(cmd, cwd=ROOT)
            if res.returncode not in (0,):
                print(f"mutmut run ({group}) exited {res.returncode}", file=sys.stderr)
                return res.returncode
        return 0
    text = report()
    print(text)
    if args.out:
        sys.path.insert(0, str(ROOT))
        from vlm4vla_core.io import write_text

        write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
