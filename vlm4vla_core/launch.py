"""Launcher of a training job: one DeepSpeed process per GPU, on one machine or across a Slurm allocation.

``python -m vlm4vla_core.launch --nodes N --procs-per-node G -- <stage> <args>`` runs
``python -m vlm4vla_core <stage> <args>`` as N x G processes:

- inside a Slurm job (``SLURM_JOB_ID`` set, ``srun`` on PATH): one ``srun`` step of N x G tasks,
  G per node; every task reads RANK / WORLD_SIZE / LOCAL_RANK from ``SLURM_PROCID`` /
  ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (``vlm4vla_core.training.slurm_rank_env``), and the
  rendezvous (MASTER_ADDR: the allocation's first node, MASTER_PORT: derived from the job id) is
  taken from the Slurm environment here. A single process runs as a one-task step too, so that
  ``--signal=USR1@T`` (sent to job steps, not to the batch shell) reaches it.
- elsewhere: ``torchrun --standalone --nproc_per_node G`` for G > 1, plain ``python`` for one; more
  than one node needs Slurm.

The exit status is the step's (75 when the processes stopped on a signal with a checkpoint).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[003-005,007],cpu1`` -> ``gpu003``."""
    head = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not head:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = head.group(1), head.group(3)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def rendezvous(env=os.environ) -> dict:
    """MASTER_ADDR / MASTER_PORT of the job's processes, from the Slurm environment."""
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    addr = env.get("MASTER_ADDR")
    if not addr:
        addr = socket.gethostname()
        if nodes and shutil.which("scontrol"):
            out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True)
            addr = out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else first_host(nodes)
        elif nodes:
            addr = first_host(nodes)
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000)
    return dict(MASTER_ADDR=addr, MASTER_PORT=port)


def command(nodes: int, per_node: int, args: list[str], env=os.environ, cpus: int = 1) -> tuple[list[str], dict]:
    """The command line and the extra environment of the launch."""
    procs = nodes * per_node
    module = [sys.executable, "-m", "vlm4vla_core", *args]
    if env.get("SLURM_JOB_ID") and shutil.which("srun"):
        step = ["srun", f"--nodes={nodes}", f"--ntasks={procs}", f"--ntasks-per-node={per_node}",
                f"--cpus-per-task={cpus}", "--kill-on-bad-exit=1", "--export=ALL"]
        return step + module, rendezvous(env)
    if nodes > 1:
        raise SystemExit(f"launch: {nodes} nodes need a Slurm allocation (no SLURM_JOB_ID or no srun here)")
    if procs == 1:
        return module, {}
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [torchrun, "--standalone", f"--nproc_per_node={procs}", "-m", "vlm4vla_core", *args], {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--procs-per-node", type=int, default=1, help="processes (GPUs) per node")
    p.add_argument("--cpus-per-task", type=int, default=1, help="CPUs of each process (inside Slurm)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- <stage> <arguments>")
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        p.error("no stage to run (-- train ...)")
    cmd, extra = command(a.nodes, a.procs_per_node, args, cpus=a.cpus_per_task)
    print("launch:", " ".join(cmd), " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
    proc = subprocess.Popen(cmd, env={**os.environ, **extra})

    def forward(num, _frame):  # a signal to the launcher reaches the processes it started
        try:
            proc.send_signal(num)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, forward)
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
