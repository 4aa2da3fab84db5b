"""Atomic file output: write next to the target, then ``os.replace``.

A reader (or Snakemake) never sees a half-written file: either the old file or
the complete new one is at the path.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_json(path: str | Path, what: str):
    """Parse a JSON file; a missing or malformed file raises ResultsError naming it (``what``: e.g. "run file")."""
    from vlm4vla_core.aggregate.results import ResultsError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON ({err})") from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> Path:
    """JSON with NaN/inf written as null (strict JSON), numpy values as Python values."""
    return write_text(path, json.dumps(clean(obj), indent=2, allow_nan=False, default=_jsonable) + "\n")


def clean(obj):
    """Recursively replace non-finite floats by None and numpy scalars/arrays by Python values."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_figure(fig, path: str | Path, note: str | None = None) -> Path:
    """Save a matplotlib figure atomically; the format comes from the path's suffix. ``note`` (e.g. the
    commit and config hash) goes into the file's metadata: PNG "Description", PDF "Subject"."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    meta = {"png": {"Description": note}, "pdf": {"Subject": note}}.get(fmt) if note else None
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=meta))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
