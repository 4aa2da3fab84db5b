"""One name per thing: no two modules or folders of the package share a name unless they play the same part;
and one home per fact: the study config is read through its typed view (``vlm4vla_core.config.Study``)."""

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vlm4vla_core"
BENCHMARKS = PACKAGE / "benchmarks"

#: names that may repeat outside the benchmark plug-ins, each with the one thing it means
SHARED = {
    "__init__": "a package",
    "base": "the base class of a plug-in family (backbone families, benchmark plug-ins)",
    "rlds": "RLDS -> LeRobot conversion: the shared converter and each plug-in's layout of it",
    "vqa": "embodied VQA: the stage package and a plug-in's VQA scenes",
    "calvin": "CALVIN: its plug-in and the test fixtures that fake its data and simulator",
}

#: names that meant several things (the data stage, the published numbers, importers, VQA sets; backbone
#: cards, Bridge metrics, the small study) and must not come back
RETIRED = {"data", "dataset", "report"}


def _names() -> dict[str, list[Path]]:
    names = defaultdict(list)
    for p in sorted(PACKAGE.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        if p.is_dir():
            names[p.name].append(p)
        elif p.suffix == ".py":
            names[p.stem].append(p)
    return names


def _plug_in_part(path: Path) -> bool:
    """A module or folder directly inside one benchmark plug-in (``benchmarks/<kind>/<part>``)."""
    return path.parent.parent == BENCHMARKS and path.parent.is_dir() and (path.parent / "__init__.py").exists()


def test_a_name_repeats_only_for_the_same_part():
    clashes = {name: [str(p.relative_to(PACKAGE)) for p in paths] for name, paths in _names().items()
               if len(paths) > 1 and name not in SHARED and not all(map(_plug_in_part, paths))}
    assert not clashes, f"one name for several things (rename, or add to SHARED with its one meaning): {clashes}"


def test_the_retired_names_are_gone():
    back = {name: [str(p.relative_to(PACKAGE)) for p in paths] for name, paths in _names().items() if name in RETIRED}
    assert not back, back


def test_the_check_sees_a_clash(tmp_path, monkeypatch):
    """The check is not vacuous: two modules named ``io`` in unrelated places are reported."""
    for rel in ["io.py", "aggregate/io.py", "benchmarks/calvin/__init__.py", "benchmarks/calvin/sim.py",
                "benchmarks/metaworld/__init__.py", "benchmarks/metaworld/sim.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path)
    monkeypatch.setitem(globals(), "BENCHMARKS", tmp_path / "benchmarks")
    names = _names()
    assert [n for n, ps in names.items() if len(ps) > 1 and n not in SHARED and not all(map(_plug_in_part, ps))] == ["io"]


#: a study config read as a dict (indexed or ``.get``) under the names it is bound to
DICT_READ = re.compile(r"\b(config|cfg)(\[|\.get\()")
#: the folders whose Python reads the config through ``Study``, and the one file that builds it from the dict
#: (the workflow's glue, the Snakefile and its rules, is handed a dict by Snakemake and is not scanned)
TYPED_READERS = ("vlm4vla_core", "tools", "tests")
BUILDS_THE_VIEW = {"vlm4vla_core/config.py"}


def _dict_reads(root: Path) -> list[str]:
    found = []
    for folder in TYPED_READERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in BUILDS_THE_VIEW or "__pycache__" in path.parts:
                continue
            found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if DICT_READ.search(line)]
    return found


def test_the_config_is_read_through_its_typed_view():
    """Outside vlm4vla_core/config.py the package, the tools and the tests read a study's sections as attributes
    of ``Study`` (a dict a test writes as YAML is named ``raw``)."""
    found = _dict_reads(ROOT)
    assert not found, "the config read as a dict (use vlm4vla_core.config.Study):\n" + "\n".join(found)


def test_the_config_check_sees_a_dict_read(tmp_path):
    """The check is not vacuous: an index, a ``.get`` and a ``cfg`` read are each reported; config.py and
    other names are not."""
    planted = {"vlm4vla_core/stage.py": "lr = config" + '["training"]["lr"]\n',
               "tools/tool.py": "x = cfg" + '.get("seeds")\n',
               "tests/test_x.py": "y = cfg" + "[name]\nz = ds_config" + '["bf16"]\n',
               "vlm4vla_core/config.py": "w = config" + '["study"]\n'}
    for rel, text in planted.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert [f.split(":")[0] for f in _dict_reads(tmp_path)] == ["vlm4vla_core/stage.py", "tools/tool.py",
                                                                  "tests/test_x.py"]
