"""Where a result came from: code version, config hash, software and hardware.

Every stage that writes a result stores ``provenance(config)`` next to it, and
the aggregate stage prints the commit and config hash under every table.
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


def hardware() -> dict:
    """Platform, CPU and (when torch is installed) GPU description."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    try:
        import torch
    except ImportError:
        return info
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["cuda_version"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def provenance(config: dict) -> dict:
    """Provenance record of a result produced under ``config``."""
    commit, dirty = git_commit()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash(config),
        "versions": versions(),
        "hardware": hardware(),
        "argv": list(sys.argv),
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
