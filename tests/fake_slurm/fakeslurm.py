"""A fake Slurm on one machine, for the tests: sbatch, squeue, sacct, scancel, srun, sinfo, scontrol,
sacctmgr and sshare as commands (bin/<name> -> this module) that run jobs here.

- State lives in $FAKE_SLURM_DIR (jobs/<id>/meta.json, the job script, its log, its steps).
- Time: -t minutes, scaled by $FAKE_SLURM_SECONDS_PER_MINUTE (default 60); ``--signal=[B:]SIG@T``
  (T scaled alike) goes T before the limit to the job's steps (the srun processes and their tasks),
  or to the batch shell with ``B:``, as Slurm does; at the limit the job gets SIGTERM, then SIGKILL
  after $FAKE_SLURM_KILL_WAIT seconds (default 5), and ends as TIMEOUT.
- ``srun`` inside a job runs its tasks here with SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
  SLURM_NODEID set (the "nodes" are all this machine), returns the highest exit status, and with
  ``--kill-on-bad-exit`` stops the other tasks when one fails.
- Test hook: $FAKE_SLURM_SIGNAL_WHEN="<regex>::<glob>" sends the job's --signal to the first job
  whose comment (Snakemake's rule and wildcards) matches <regex>, as soon as <glob> (relative to the
  job's working directory) exists: a pre-timeout signal in the middle of a chosen job.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SIGNALS = {"USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2, "TERM": signal.SIGTERM, "INT": signal.SIGINT,
           "KILL": signal.SIGKILL, "HUP": signal.SIGHUP}


def state_dir() -> Path:
    d = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))
    (d / "jobs").mkdir(parents=True, exist_ok=True)
    return d


def job_dir(jobid) -> Path:
    return state_dir() / "jobs" / str(jobid)


def read_meta(jobid) -> dict:
    return json.loads((job_dir(jobid) / "meta.json").read_text())


def write_meta(jobid, meta: dict) -> None:
    tmp = job_dir(jobid) / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, job_dir(jobid) / "meta.json")


def scale() -> float:
    return float(os.environ.get("FAKE_SLURM_SECONDS_PER_MINUTE", "60")) / 60.0


def minutes(text: str) -> float:
    """Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(x) for x in text.split(":")]
        h, m, s = (parts + [0, 0])[:3]
    else:
        parts = [int(x) for x in text.split(":")]
        h, m, s = (0, parts[0], 0) if len(parts) == 1 else (0, *parts) if len(parts) == 2 else tuple(parts)
    return days * 1440 + h * 60 + m + s / 60


def _options(argv: list[str], flags_with_value: set[str]) -> tuple[dict, list[str]]:
    """--key=value, --key value and -k value options up to the first positional argument."""
    opts, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-") or a == "-":
            break
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            opts[k] = v
        else:
            k = a.lstrip("-")
            if k in flags_with_value and i + 1 < len(argv):
                opts[k] = argv[i + 1]
                i += 1
            else:
                opts[k] = True
        i += 1
    return opts, argv[i:]


# -- sbatch ---------------------------------------------------------------------------------------
SBATCH_VALUES = {"job-name", "J", "output", "o", "error", "e", "comment", "A", "account", "p", "partition", "t",
                 "time", "mem", "mem-per-cpu", "nodes", "N", "ntasks", "n", "ntasks-per-node", "cpus-per-task", "c",
                 "cpus-per-gpu", "gpus", "G", "gres", "D", "chdir", "C", "constraint", "qos", "clusters", "M",
                 "signal", "exclude", "x", "reservation", "ntasks-per-gpu", "array", "a"}


def sbatch(argv: list[str]) -> int:
    opts, rest = _options(argv, SBATCH_VALUES)
    if "wrap" in opts:
        script = "#!/bin/sh\n" + opts["wrap"] + "\n"
    elif rest and rest[0] != "/dev/stdin":
        script = Path(rest[0]).read_text()
    else:
        script = sys.stdin.read()
    d = state_dir()
    with open(d / "counter.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = d / "counter"
        jobid = int(counter.read_text()) + 1 if counter.exists() else 1000
        counter.write_text(str(jobid))
    jd = job_dir(jobid)
    jd.mkdir(parents=True)
    (jd / "script.sh").write_text(script)
    workdir = opts.get("D") or opts.get("chdir") or os.getcwd()
    output = (opts.get("output") or opts.get("o") or f"slurm-{jobid}.out").replace("%j", str(jobid))
    limit = opts.get("t") or opts.get("time")
    nodes = int(opts.get("nodes") or opts.get("N") or 1)
    meta = dict(id=jobid, name=opts.get("job-name") or opts.get("J") or "sbatch", comment=opts.get("comment", ""),
                workdir=workdir, output=str(Path(workdir, output)), state="PENDING", nodes=nodes,
                limit_s=minutes(limit) * 60 * scale() if limit else None, signal=opts.get("signal"),
                requeue="requeue" in opts, argv=argv, submitted=time.time(),
                ntasks_per_node=opts.get("ntasks-per-node"), cpus_per_task=opts.get("cpus-per-task"))
    write_meta(jobid, meta)
    with open(jd / "supervisor.log", "w") as log:
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "_supervise", str(jobid)], cwd=workdir,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    print(jobid if "parsable" in opts else f"Submitted batch job {jobid}", flush=True)
    return 0


def _step_groups(jobid) -> list[int]:
    out = []
    for f in (job_dir(jobid) / "steps").glob("*.pid"):
        try:
            out.append(int(f.read_text()))
        except ValueError:
            pass
    return out


def _signal_groups(groups, sig) -> None:
    for g in groups:
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            pass


def supervise(jobid: str) -> int:
    meta = read_meta(jobid)
    jd = job_dir(jobid)
    (jd / "steps").mkdir(exist_ok=True)
    env = dict(os.environ, SLURM_JOB_ID=str(jobid), SLURM_JOBID=str(jobid), SLURM_JOB_NAME=meta["name"],
               SLURM_JOB_NODELIST="localhost", SLURM_NODELIST="localhost", SLURM_NNODES=str(meta["nodes"]),
               SLURM_JOB_NUM_NODES=str(meta["nodes"]), SLURM_SUBMIT_DIR=meta["workdir"], SLURM_CLUSTER_NAME="fake",
               FAKE_SLURM_JOB_DIR=str(jd))
    if meta.get("cpus_per_task"):
        env["SLURM_CPUS_PER_TASK"] = str(meta["cpus_per_task"])
    Path(meta["output"]).parent.mkdir(parents=True, exist_ok=True)
    meta.update(state="RUNNING", started=time.time())
    write_meta(jobid, meta)
    with open(meta["output"], "a") as out:
        proc = subprocess.Popen(["/bin/sh", str(jd / "script.sh")], cwd=meta["workdir"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    sig_name, sig_at, batch_only = None, None, False
    if meta.get("signal"):
        m = re.fullmatch(r"(?:(B|R):)?(?:SIG)?(\w+?)(?:@(\d+))?", meta["signal"])
        batch_only = m.group(1) == "B"
        sig_name = m.group(2)
        sig_at = float(m.group(3) or 60) * scale()
    when = os.environ.get("FAKE_SLURM_SIGNAL_WHEN", "")
    signalled, state, t0 = False, None, time.time()

    def deliver(sig):
        if batch_only:
            _signal_groups([proc.pid], sig)
        else:
            _signal_groups(_step_groups(jobid), sig)

    while proc.poll() is None:
        time.sleep(0.2)
        elapsed = time.time() - t0
        if (jd / "cancel").exists():
            _signal_groups([proc.pid, *_step_groups(jobid)], signal.SIGTERM)
            time.sleep(1)
            _signal_groups([proc.pid, *_step_groups(jobid)], signal.SIGKILL)
            state = "CANCELLED"
            break
        if sig_name and not signalled:
            early = False
            if when and "::" in when:
                pattern, pathglob = when.split("::", 1)
                marker = state_dir() / "early_signal_sent"
                if re.search(pattern, meta["comment"]) and not marker.exists() \
                        and glob.glob(os.path.join(meta["workdir"], pathglob)):
                    marker.write_text(str(jobid))
                    early = True
            due = meta["limit_s"] is not None and elapsed >= meta["limit_s"] - sig_at
            if early or due:
                deliver(SIGNALS[sig_name])
                signalled = True
                with open(jd / "events", "a") as ev:
                    ev.write(f"signal {sig_name} at {elapsed:.1f}s ({'test hook' if early else 'before the limit'})\n")
        if meta["limit_s"] is not None and elapsed >= meta["limit_s"]:
            _signal_groups([proc.pid, *_step_groups(jobid)], signal.SIGTERM)
            deadline = time.time() + float(os.environ.get("FAKE_SLURM_KILL_WAIT", "5"))
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.1)
            _signal_groups([proc.pid, *_step_groups(jobid)], signal.SIGKILL)
            state = "TIMEOUT"
            break
    rc = proc.wait()
    if state is None:
        state = "COMPLETED" if rc == 0 else "FAILED"
    meta = read_meta(jobid)
    meta.update(state=state, exit_code=rc, ended=time.time())
    write_meta(jobid, meta)
    return 0


# -- srun -----------------------------------------------------------------------------------------
SRUN_VALUES = {"n", "ntasks", "N", "nodes", "ntasks-per-node", "c", "cpus-per-task", "gpus", "G", "cpu-bind",
               "J", "job-name", "export", "gres", "mem", "t", "time", "jobid", "mpi"}


def srun(argv: list[str]) -> int:
    opts, cmd = _options(argv, SRUN_VALUES)
    if not cmd:
        print("srun: no command", file=sys.stderr)
        return 2
    nodes = int(opts.get("nodes") or opts.get("N") or 1)
    per_node = opts.get("ntasks-per-node")
    ntasks = int(opts.get("ntasks") or opts.get("n") or (int(per_node) * nodes if per_node else 1))
    per_node = int(per_node) if per_node else max(1, -(-ntasks // nodes))
    os.setpgid(0, 0)  # the step: this process group gets the job's --signal
    jobid = os.environ.get("SLURM_JOB_ID")
    pidfile = None
    if jobid and job_dir(jobid).is_dir():
        (job_dir(jobid) / "steps").mkdir(exist_ok=True)
        pidfile = job_dir(jobid) / "steps" / f"{os.getpid()}.pid"
        pidfile.write_text(str(os.getpid()))
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # the tasks get the signal themselves (same group)
    procs = []
    try:
        for rank in range(ntasks):
            env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks), SLURM_NPROCS=str(ntasks),
                       SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node),
                       SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_STEP_NUM_NODES=str(nodes),
                       SLURM_JOB_NODELIST=os.environ.get("SLURM_JOB_NODELIST", "localhost"))
            if opts.get("cpus-per-task") or opts.get("c"):
                env["SLURM_CPUS_PER_TASK"] = str(opts.get("cpus-per-task") or opts.get("c"))
            procs.append(subprocess.Popen(cmd, env=env, stdin=None if rank == 0 else subprocess.DEVNULL,
                                          preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in
                                                              (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM,
                                                               signal.SIGINT)]))
        codes = {}
        while len(codes) < len(procs):
            for i, p in enumerate(procs):
                if i not in codes and p.poll() is not None:
                    codes[i] = p.returncode
                    if p.returncode != 0 and "kill-on-bad-exit" in opts:
                        for q in procs:
                            if q.poll() is None:
                                q.terminate()
            time.sleep(0.05)
        worst = max((128 - c if c < 0 else c) for c in codes.values())
        return worst
    finally:
        if pidfile:
            pidfile.unlink(missing_ok=True)


# -- queries ----------------------------------------------------------------------------------------
def _jobs():
    for d in sorted((state_dir() / "jobs").iterdir(), key=lambda p: int(p.name)):
        try:
            yield read_meta(d.name)
        except (OSError, ValueError):
            continue


def sacct(argv: list[str]) -> int:
    opts, _ = _options(argv, {"name", "format", "o", "starttime", "S", "endtime", "E", "clusters", "M", "j", "jobs",
                              "u", "user"})
    name = opts.get("name")
    ids = set(str(opts.get("j") or opts.get("jobs") or "").split(",")) - {""}
    for m in _jobs():
        if (name and m["name"] != name) or (ids and str(m["id"]) not in ids):
            continue
        print(f"{m['id']}|{m['state']}")
    return 0


def squeue(argv: list[str]) -> int:
    opts, _ = _options(argv, {"name", "format", "o", "states", "t", "u", "user", "j", "jobs"})
    name = opts.get("name")
    for m in _jobs():
        if name and m["name"] != name:
            continue
        if opts.get("states") != "all" and m["state"] not in ("PENDING", "RUNNING"):
            continue
        print(f"{m['id']}|{m['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    _, ids = _options([a for a in argv if not a.startswith("--clusters")], set())
    for jobid in " ".join(ids).replace(",", " ").split():
        if job_dir(jobid).is_dir():
            (job_dir(jobid) / "cancel").write_text("")
    return 0


def sinfo(argv: list[str]) -> int:
    print("PARTITION AVAIL TIMELIMIT NODES STATE NODELIST\nfake* up infinite 1 idle localhost")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["show", "hostnames"]:
        print("localhost")
    elif argv[:2] == ["show", "config"]:
        print("MinJobAge               = 300 sec")
    return 0


def account(argv: list[str]) -> int:
    print("fake")
    return 0


COMMANDS = dict(sbatch=sbatch, srun=srun, sacct=sacct, squeue=squeue, scancel=scancel, sinfo=sinfo,
                scontrol=scontrol, sacctmgr=account, sshare=account)

if __name__ == "__main__":
    if sys.argv[1] == "_supervise":
        sys.exit(supervise(sys.argv[2]))
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
