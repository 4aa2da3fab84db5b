"""Look at the results pages in a real browser: headless Chromium screenshots of a small study's pages.

    python tools/report_check.py --out /tmp/report-check [--report results/published/report.html]

Builds the small study of ``vlm4vla_core/testing/small_study.py`` (two backbones, a zero-action baseline, two
Meta-World tasks, training metrics, rollout videos, two claims), aggregates it into ``OUT/results``, runs
``snakemake --report`` on it with the project's landing page (workflow/report/workflow.rst, the pages
declared as aggregate.smk declares them) and takes screenshots of the report's landing page (the
findings), a table page (per_task_table, with its rollout links), figure pages (the training regimes
with their intervals, the contrasts, the task heatmap, how episodes ended, the learning curves) and the
rollout page (embedded MP4s). With ``--report``, also of another Snakemake report's landing page (e.g.
``snakemake published --report results/published/report.html``). For each page it prints the screenshot
and whether the page's videos loaded: the rollout page runs a script, in Chromium, that counts the
<video> elements that reached HAVE_METADATA.
Needs ``chromium`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("per_task_table", "ablation", "contrasts", "heatmap_metaworld", "outcomes", "learning_curves",
         "rollouts_metaworld")
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const v = [...document.querySelectorAll('video')];
  document.title = 'videos ' + v.filter(x => x.readyState >= 1).length + '/' + v.length;
}, 1500));
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium on PATH (Debian: apt-get install chromium)")


def shoot(browser: str, page: Path, png: Path, size: str = "1400,1000") -> None:
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", "--virtual-time-budget=5000", f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)


def videos_loaded(browser: str, page: Path, probe_dir: Path) -> str:
    """The rollout page with the probe script appended, its DOM dumped: 'videos k/n' from the title."""
    probed = probe_dir / page.name
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                          "--virtual-time-budget=8000", "--dump-dom", probed.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<title>(videos \d+/\d+)</title>", dom)
    return m.group(1) if m else "videos: probe did not run"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--report", type=Path, help="a Snakemake report to screenshot as well")
    args = p.parse_args(argv)
    import yaml

    from vlm4vla_core.config import Study
    from vlm4vla_core.testing.small_study import CLAIMS, SNAKEFILE, study_config, write_study  # the tests' small study

    from vlm4vla_core.aggregate import aggregate

    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "claims.yaml").write_text(CLAIMS)
    results = args.out / "results" / "pages"
    aggregate(write_study(args.out / "study"), Study.from_dict(study_config()), results, claims=args.out / "claims.yaml")
    shots = args.out / "screenshots"
    shots.mkdir(exist_ok=True)
    (args.out / "Snakefile").write_text(SNAKEFILE.format(rst=str(ROOT / "workflow" / "report" / "workflow.rst")))
    (args.out / "config.yaml").write_text(yaml.safe_dump(study_config()))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml", "--report",
                    "report.html"], cwd=args.out, check=True, capture_output=True, timeout=600)
    shoot(browser, args.out / "report.html", shots / "study_report_landing.png", "1400,1500")  # the app centres it
    print(f"small study's report landing page: {shots / 'study_report_landing.png'}")
    for name in PAGES:
        page = results / "html" / f"{name}.html"
        shoot(browser, page, shots / f"{name}.png")
        extra = f", {videos_loaded(browser, page, args.out)}" if "<video" in page.read_text() else ""
        print(f"{name}: {shots / f'{name}.png'}{extra}")
    if args.report:
        shoot(browser, args.report.resolve(), shots / "report_landing.png", "1400,1500")
        print(f"report landing page: {shots / 'report_landing.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
