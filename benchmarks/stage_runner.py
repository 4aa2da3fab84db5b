"""Run a stage of the pipeline as the DAG would, its output in a log file, and time it (for the checks)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, log: Path) -> float:
    """``python -m vlm4vla_core ARGS`` from the repository root; exits with the log's name on failure.
    Returns the wall time in seconds."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        res = subprocess.run([sys.executable, "-m", "vlm4vla_core", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode:
        sys.exit(f"{args[0]} failed (exit {res.returncode}); see {log}")
    return time.perf_counter() - t0
