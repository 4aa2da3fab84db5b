"""The documentation: the README as a short front page, the site under docs/ built strictly (a broken
internal link or anchor fails), and no file of the repository pointing outside it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for command in ("make demo", "make test", ". .venv/bin/activate", "snakemake --profile slurm",
                    "snakemake --configfile config/demo.yaml --report results/demo/report.html"):
        assert command in text, command
    # every page of the site is on the README's map
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    linked = {p for p in pages if f"(docs/{p})" in text}
    assert linked == pages, sorted(pages - linked)


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_docs_page_is_in_the_nav_and_validation_is_strict():
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert sorted(_nav_pages(site["nav"])) == sorted(pages)
    assert site["strict"] is True
    assert {k: site["validation"][k] for k in ("not_found", "anchors", "absolute_links", "unrecognized_links",
                                              "omitted_files")} == dict.fromkeys(
        ("not_found", "anchors", "absolute_links", "unrecognized_links", "omitted_files"), "warn")


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the core lock (the docs extra); make setup installs it")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "benchmarks" / "calvin" / "index.html").is_file()


def test_no_file_refers_to_a_path_outside_the_repository():
    """No tracked text file names the folder the checkout sits in, and every relative Markdown link of the
    README and the docs resolves to a file inside the repository."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    # the checkout's own path and the folder it sits in, computed here so that this file does not name them; a
    # checkout in a system folder (/tmp, a home folder) leaves only its own path, as examples name those folders
    here, parent = ROOT.resolve(), ROOT.resolve().parent
    generic = {Path("/"), Path(tempfile.gettempdir()).resolve(), Path("/tmp"), Path("/home"), Path.home().resolve()}
    needles = [here.as_posix() + "/"] + ([] if parent in generic else [parent.as_posix() + "/"])
    bad = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".smk", ".sh", ".txt", ".rst", ".cfg", ".toml", ""}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        bad += [f"{name}: {n}" for n in needles if n in text]
        if path.suffix == ".md":
            for target in re.findall(r"\]\(([^)#\s]+)", text):
                if "://" in target or target.startswith("mailto:"):
                    continue
                resolved = (path.parent / target).resolve()
                if not resolved.is_relative_to(ROOT.resolve()) or not resolved.exists():
                    bad.append(f"{name}: link {target}")
    assert not bad, bad


def _code(text: str) -> list[str]:
    """The documentation's code: fenced blocks' lines and inline code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        out += [line] if fenced else re.findall(r"`([^`]+)`", line)
    return out


def test_the_commands_the_docs_show_name_what_exists():
    """Every stage of `vlm4vla <stage>` / `python -m vlm4vla_core <stage>`, every module run with
    `python -m`, every script run with `python PATH` and every make target the docs show exists."""
    from vlm4vla_core.__main__ import STAGES

    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    bad, seen = [], 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for code in _code(page.read_text()):
            code = code.split("#")[0]
            for stage in re.findall(r"(?:python -m vlm4vla_core|\bvlm4vla) ([a-z][\w-]*)", code):
                seen += 1
                bad += [] if stage in STAGES else [f"{page.name}: stage {stage}"]
            for module in re.findall(r"python -m (vlm4vla_core\.[\w.]+)", code):
                seen += 1
                bad += [] if importlib.util.find_spec(module) else [f"{page.name}: module {module}"]
            for script in re.findall(r"python ((?:tools|tests)/[\w/]+\.py)", code):
                seen += 1
                bad += [] if (ROOT / script).is_file() else [f"{page.name}: script {script}"]
            for target in re.findall(r"^\s*make ([a-z][\w-]*)", code):
                seen += 1
                bad += [] if target in targets else [f"{page.name}: make {target}"]
    assert seen > 50 and not bad, bad


def test_the_map_names_every_top_level_folder_and_every_module():
    index = (ROOT / "docs" / "index.md").read_text()
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {f.split("/")[0] for f in files if "/" in f}
    missing = [f"{d}/" for d in sorted(folders) if f"`{d}/`" not in index]
    modules = [f.removeprefix("vlm4vla_core/") for f in files if f.startswith("vlm4vla_core/") and f.endswith(".py")]
    missing += [m for m in modules if f"| `{m}` |" not in index]
    assert not missing, missing
