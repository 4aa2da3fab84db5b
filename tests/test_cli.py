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


def test_a_stage_stopped_by_bad_input_prints_one_error_line(tmp_path, capsys, monkeypatch):
    """Every stage's InputError (a ConfigError, a ResultsError) goes through one wrapper: one line
    'error: ...' on stderr, exit 1; any other exception still raises with its traceback."""
    import types

    from vlm4vla_core import __main__ as cli
    from vlm4vla_core.aggregate.files import ResultsError
    from vlm4vla_core.config import ConfigError, InputError

    assert issubclass(ConfigError, InputError) and issubclass(ResultsError, InputError)
    missing = tmp_path / "nowhere.yaml"
    assert main(["validate-config", str(missing)]) == cli.ERROR_EXIT == 1
    assert capsys.readouterr().err == f"error: config file not found: {missing}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    assert main(["sft", "--config", str(bad), "--variant", "v", "--source", "s", "--data", "d",
                 "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not valid YAML") and "Traceback" not in err

    def stage(argv):
        raise {"config": ConfigError("key 'seeds': bad"), "results": ResultsError("runs/x.json: no episodes"),
               "bug": RuntimeError("a bug")}[argv[0]]

    monkeypatch.setitem(sys.modules, "fake_stage", types.SimpleNamespace(main=stage))
    monkeypatch.setitem(cli.STAGES, "fake", ("fake_stage", "main", "A stage that stops"))
    assert main(["fake", "config"]) == 1 and capsys.readouterr().err == "error: key 'seeds': bad\n"
    assert main(["fake", "results"]) == 1 and capsys.readouterr().err == "error: runs/x.json: no episodes\n"
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fake", "bug"])


@pytest.mark.parametrize("stage, args", [
    ("make-vqa-data", ["--set", "nothing", "--out", "OUT"]),
    ("published-results", ["--out", "OUT"]),
    ("evaluate", ["--benchmark", "metaworld", "--seed", "0", "--policy", "zero-action", "--out", "OUT"]),
])
def test_the_stages_print_a_bad_config_through_the_wrapper(stage, args, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: 3\n")
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert main([stage, "--config", str(bad), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: invalid config") and err.count("\n") == 1 and f"{bad}: {bad}" not in err
    assert not (tmp_path / "out").exists()
