"""Where a result came from: code version, config hash, software, its lock, and the platform.

Every stage that writes a result stores ``provenance(config)`` next to it, and
the aggregate stage prints the commit and config hash under every table. The platform
is named as far as it changes numbers: the CPU model, the instruction-set level torch
dispatches to, its thread counts, the BLAS and oneDNN it was built with, the accelerator
and its driver where one is used. Episode outcomes are deterministic on one platform, not
across platforms (docs/environments.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "deepspeed", "numpy")


def config_hash(config: dict) -> str:
    """First 12 hex digits of the sha256 of the config's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_commit(path: str | Path | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository holding ``path`` (default: this package); ("unknown", None) outside one."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit or "unknown", bool(status.strip())


def versions() -> dict[str, str]:
    """Installed versions of python and of the packages in PACKAGES that are installed."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux: /proc/cpuinfo's ``model name``; elsewhere ``platform.processor()``)."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model name") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def torch_build(show: str) -> dict:
    """BLAS, LAPACK, oneDNN, OpenMP and the CPU capability of torch's build, from ``torch.__config__.show()``."""
    settings = {}
    for line in show.splitlines():
        line = line.strip().lstrip("- ")
        if line.startswith("Build settings:"):
            for item in line.split(":", 1)[1].split(","):
                key, _, value = item.partition("=")
                settings[key.strip()] = value.strip()
    lines = [line.strip().lstrip("- ") for line in show.splitlines()]

    def first(*needles: str) -> str | None:
        return next((line for line in lines if any(n in line for n in needles)), None)

    return {"torch_commit": settings.get("COMMIT_SHA"), "blas": settings.get("BLAS_INFO"),
            "lapack": settings.get("LAPACK_INFO"), "mkl": first("Math Kernel Library"),
            "onednn": first("MKL-DNN", "oneDNN"), "openmp": first("OpenMP"),
            "built_capability": first("CPU capability usage")}


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def hardware() -> dict:
    """Platform, CPU (model, and how torch runs on it) and, where one is used, the accelerator and its driver."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["torch_threads"] = torch.get_num_threads()
    info["torch_interop_threads"] = torch.get_num_interop_threads()
    info["torch_build"] = torch_build(torch.__config__.show())
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["driver_version"] = _nvidia_driver()
    info["platform_id"] = platform_id(info)
    return info


PLATFORM_KEYS = ("machine", "cpu_model", "torch_cpu_capability", "torch_threads", "torch_build", "gpus",
                 "driver_version", "cuda_version")


def platform_id(info: dict) -> str:
    """First 12 hex digits of the sha256 of what decides the floating-point results on a platform (CPU model,
    torch's instruction-set level, threads, BLAS/oneDNN build, accelerator and driver): equal ids, equal numbers."""
    return config_hash({key: info.get(key) for key in PLATFORM_KEYS})


def environment_lock() -> dict:
    """The core environment's lock file (its sha256) and whether the installed versions equal it."""
    from vlm4vla_core import lock

    digest = lock.lock_sha256()
    if digest is None:
        return {"file": None, "sha256": None, "matches": None, "differences": []}
    diff = lock.differences(lock.read_lock(), lock.installed(), lock.torch_pin())
    return {"file": "envs/vlm4vla-lock.txt", "sha256": digest, "matches": not diff,
            "differences": [f"{name} {locked} -> {got}" for name, locked, got in diff]}


def provenance(config: dict) -> dict:
    """Provenance record of a result produced under ``config``."""
    commit, dirty = git_commit()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash(config),
        "versions": versions(),
        "hardware": hardware(),
        "lock": environment_lock(),
        "argv": list(sys.argv),
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
