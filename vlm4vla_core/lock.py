"""``python -m vlm4vla_core lock-check``: the installed packages against the core environment's lock file.

``envs/vlm4vla-lock.txt`` (written by ``make lock`` with uv) pins every package of the core
environment with its hashes, except torch: torch is pinned by ``pyproject.toml`` alone (one
version, two builds: the CPU build for ``make setup`` and CI, PyPI's CUDA build on GPU nodes; a hash
would pin one build). The check compares the version of every locked package that is installed
with the lock, torch with its pin, and exits 1 on any difference; ``--drift`` prints what differs
(an environment with the newest versions the ranges allow, ``make test-latest``) and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "envs" / "vlm4vla-lock.txt"
PYPROJECT = ROOT / "pyproject.toml"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """The PEP 503 form of a distribution name (``Jinja2`` and ``jinja2``, ``typing_extensions`` and
    ``typing-extensions`` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path = LOCK) -> dict[str, str]:
    """{normalized name: version} of a pip requirements file of exact pins (``name==version``, hashes allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lock file (make lock writes it)")
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", "--")):
            continue
        match = _PIN.match(line.strip())
        if match is None:
            raise ValueError(f"{path}:{number}: not an exact pin (name==version): {line.strip()!r}")
        pins[normalize(match[1])] = match[2]
    if not pins:
        raise ValueError(f"{path}: no pinned package")
    return pins


def torch_pin(pyproject: str | Path = PYPROJECT) -> str:
    """The torch version ``pyproject.toml`` pins (``torch==X``), the one package the lock leaves out."""
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1].strip() for d in deps if normalize(d.split("==", 1)[0].strip()) == "torch" and "==" in d]
    if len(pins) != 1:
        raise ValueError(f"{pyproject}: project.dependencies must pin torch exactly once (torch==X), found {pins}")
    return pins[0]


def lock_sha256(path: str | Path = LOCK) -> str | None:
    """sha256 of the lock file's bytes (None where the package runs without its checkout's envs/ folder)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def installed() -> dict[str, str]:
    """{normalized name: version} of every distribution installed in this interpreter's environment."""
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(lock: dict[str, str], have: dict[str, str], torch: str | None = None) -> list[tuple[str, str, str]]:
    """(name, locked, installed) for every locked package (and torch, pinned to ``torch`` without its local
    build tag) whose installed version differs; ``"-"`` where it is missing."""
    wanted = dict(lock)
    if torch is not None:
        wanted["torch"] = torch
    out = []
    for name, version in sorted(wanted.items()):
        got = have.get(name, "-")
        if (got.split("+", 1)[0] if name == "torch" else got) != version:
            out.append((name, version, got))
    return out


def extras(lock: dict[str, str], have: dict[str, str]) -> list[tuple[str, str]]:
    """Installed packages the lock does not name (besides torch, pip and the project itself)."""
    skip = set(lock) | {"torch", "pip", "vlm4vla"}
    return sorted((n, v) for n, v in have.items() if n not in skip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core lock-check", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=LOCK, help="the lock file (default: envs/vlm4vla-lock.txt)")
    parser.add_argument("--drift", action="store_true", help="print what differs from the lock and exit 0")
    args = parser.parse_args(argv)
    try:
        lock, have, torch = read_lock(args.lock), installed(), torch_pin()
    except (OSError, ValueError, KeyError) as err:
        print(f"lock-check: {err}", file=sys.stderr)
        return 2
    diff = differences(lock, have, torch)
    digest = lock_sha256(args.lock)
    if args.drift:
        print(f"packages against {args.lock.name} (sha256 {digest[:12]}): {len(diff)} differ")
        for name, locked, got in diff:
            print(f"  {name:32s} {locked:>16s} -> {got}")
        for name, got in extras(lock, have):
            print(f"  {name:32s} {'(not locked)':>16s} -> {got}")
        return 0
    if diff:
        print(f"installed versions differ from {args.lock} (make setup installs the lock):", file=sys.stderr)
        for name, locked, got in diff:
            print(f"  {name}: locked {locked}, installed {got}", file=sys.stderr)
        return 1
    print(f"installed versions equal the lock: {len(lock)} packages of {args.lock.name} (sha256 {digest}) "
          f"and torch {have['torch']} (pinned {torch} in pyproject.toml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
