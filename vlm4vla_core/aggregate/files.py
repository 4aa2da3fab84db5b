"""Reading run files and saving figures; both go through the project's atomic writes (vlm4vla_core.io)."""

from __future__ import annotations

from pathlib import Path

from vlm4vla_core.config import InputError
from vlm4vla_core.io import atomic_write, clean, read_json as _read_json, write_json, write_text  # noqa: F401


class ResultsError(InputError):
    """Results that cannot be aggregated; the message names the file or the row."""


def read_json(path: str | Path, what: str):
    """Parse a JSON file; a missing or malformed file raises ResultsError naming it (``what``: e.g. "run file")."""
    return _read_json(path, what, ResultsError)


def save_figure(fig, path: str | Path, note: str | None = None) -> Path:
    """Save a matplotlib figure atomically; the format comes from the path's suffix. ``note`` (e.g. the
    commit and config hash) goes into the file's metadata: PNG "Description", PDF "Subject"."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    meta = {"png": {"Description": note}, "pdf": {"Subject": note}}.get(fmt) if note else None
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=meta))
