"""Layers that hold by test: the simulator side imports without torch, and nothing outside tests/ imports
from tests/ (shared fixture factories live in vlm4vla_core.testing)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import vlm4vla_core.benchmarks
import vlm4vla_core.serving

ROOT = Path(__file__).resolve().parents[1]

# What runs inside a simulator's environment, which has no torch: the policy server's wire format and
# client, the simulator worker and the episode driver, every plug-in's protocol, sim, data and metric
# modules. All of vlm4vla_core.benchmarks and vlm4vla_core.serving, found by walking the packages.
SIMULATOR_SIDE = sorted(
    ["vlm4vla_core.benchmarks", "vlm4vla_core.serving"]
    + [m.name for pkg in (vlm4vla_core.benchmarks, vlm4vla_core.serving)
       for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")])

BLOCKED = ("torch", "torchvision", "transformers", "deepspeed", "accelerate")

_PROBE = """
import importlib, json, sys
blocked = set(sys.argv[1].split(","))

class NoTorch:  # what a simulator environment lacks: importing it fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, NoTorch())
result = {}
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
        result[name] = "ok"
    except Exception as exc:
        result[name] = f"{type(exc).__name__}: {exc}"
result["<loaded>"] = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
print(json.dumps(result))
"""


def _probe(modules: list[str]) -> dict:
    res = subprocess.run([sys.executable, "-c", _PROBE, ",".join(BLOCKED), json.dumps(modules)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_the_simulator_side_imports_without_torch():
    assert {"vlm4vla_core.serving.wire", "vlm4vla_core.serving.client", "vlm4vla_core.benchmarks.worker",
            "vlm4vla_core.benchmarks.base", "vlm4vla_core.benchmarks.calvin.protocol",
            "vlm4vla_core.benchmarks.calvin.sim", "vlm4vla_core.benchmarks.libero10.sim",
            "vlm4vla_core.benchmarks.simpler_bridge.sim", "vlm4vla_core.benchmarks.simpler_bridge.convert",
            "vlm4vla_core.benchmarks.metaworld.env"} <= set(SIMULATOR_SIDE)
    # the control: the policy side needs torch, so the blocker makes its import fail
    result = _probe([*SIMULATOR_SIDE, "vlm4vla_core.policy"])
    assert result.pop("vlm4vla_core.policy").startswith("ImportError"), "the torch blocker blocks nothing"
    loaded = result.pop("<loaded>")
    failed = {name: why for name, why in result.items() if why != "ok"}
    assert not failed, failed
    assert loaded == [], loaded


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_nothing_outside_tests_imports_from_tests():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    test_modules = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"tests"}
    bad = {}
    for name in files:
        if name.startswith("tests/"):
            continue
        path = ROOT / name
        text = path.read_text()
        hits = sorted(m for m in _imports(path) if m.split(".")[0] in test_modules)
        if '"tests"' in text and "sys.path" in text:
            hits.append("puts tests/ on sys.path")
        if hits:
            bad[name] = hits
    assert not bad, bad
