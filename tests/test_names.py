"""One name per thing: no two modules or folders of the package share a name unless they play the same part."""

from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vlm4vla_core"
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
