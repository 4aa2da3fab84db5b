"""One command line: the `vlm4vla` console script is `python -m vlm4vla_core`, with the same stages."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vlm4vla_core.__main__ import STAGES, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_the_package_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"vlm4vla": "vlm4vla_core.__main__:main"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_names_a_function_of_its_module(stage):
    module, func, help_ = STAGES[stage]
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text())
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (module, func)
    assert help_ and not help_.endswith(".")


def test_help_and_unknown_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in STAGES)
    assert main(["no-such-stage"]) == 2
    assert "unknown stage 'no-such-stage'" in capsys.readouterr().err


def test_the_installed_script_prints_the_same_stages():
    script = Path(sys.executable).parent / "vlm4vla"
    if not script.exists():
        pytest.skip(f"{script} is not installed: the environment predates [project.scripts] (make setup reinstalls)")
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    by_module = subprocess.run([sys.executable, "-m", "vlm4vla_core", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert by_script.startswith("usage: vlm4vla <stage>")
    assert by_module.startswith("usage: python -m vlm4vla_core <stage>")
    assert by_script.split("stages:", 1)[1] == by_module.split("stages:", 1)[1]
    res = subprocess.run([str(script), "calvin-metrics", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "eval_json" in res.stdout
