"""General pretraining works: a tiny PaliGemma trained on the shapes corpus to the demo's top level
(800 steps, the demo's settings) reads colour on held-out scenes above chance, where the untrained
checkpoint does not. Minutes of training on 2 cores: marked `long` (make test-long), not in the
default run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "tiny-paligemma-gen800"
CHANCE = 1 / 5  # five colours in the corpus (vlm4vla_core/vqa/shapes.py)


def _run(*args, timeout=1800):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "vlm4vla_core", *map(str, args)], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, (args[0], res.stderr[-3000:])
    return res


def _colour(result: dict) -> tuple[int, int]:
    rows = [r for r in result["predictions"] if r["type"] == "color"]
    return sum(bool(r["correct"]) for r in rows), len(rows)


@pytest.mark.long
def test_the_top_pretraining_level_reads_colour_above_chance(tmp_path):
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    size = demo["benchmarks"]["metaworld"]["image_size"]
    # one variant trained for the top level's 800 steps in one run, with the demo's pretraining settings
    level = dict(demo["pretraining"]["tiny-paligemma-gen300"])
    level["training"] = {**level["training"], "max_steps": 800, "checkpoint_every": 800}
    demo["pretraining"] = {VARIANT: level}
    demo["embodied_sft"] = {}
    for entry in demo["backbones"].values():
        entry["ablations"] = ["full"]
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(demo))

    base, data = tmp_path / "base", tmp_path / "shapes"
    _run("make-tiny-backbone", "--family", "paligemma", "--image-size", size, "--out", base)
    _run("make-vqa-data", "--config", cfg, "--set", "shapes", "--out", data)
    heldout = data / "heldout"

    scores = {}
    for name, source in (("level 0", base), ("level 800", None)):
        if source is None:
            _run("sft", "--config", cfg, "--variant", VARIANT, "--source", base, "--data", data / "train",
                 "--image-size", size, "--run-dir", tmp_path / "sft")
            source = tmp_path / "sft" / "checkpoint"
        out = tmp_path / f"{name.replace(' ', '')}.json"
        _run("vqa-eval", "--family", "paligemma", "--source", source, "--data", heldout, "--image-size", size,
             "--max-new-tokens", demo["vqa_sets"]["shapes"]["max_new_tokens"], "--out", out)
        scores[name] = _colour(json.loads(out.read_text()))

    print("colour read on held-out scenes:", ", ".join(f"{name} {k}/{n}" for name, (k, n) in scores.items()))
    k, n = scores["level 800"]
    assert n >= 30, f"only {n} colour questions in the held-out split"
    p = binomtest(k, n, CHANCE, alternative="greater").pvalue
    assert p < 0.001, f"level 800 reads colour {k}/{n} (chance {CHANCE:.0%}), one-sided binomial p {p:.3g}"
    k0, n0 = scores["level 0"]
    assert k0 / n0 < k / n, f"the untrained checkpoint ({k0}/{n0}) reads colour as well as level 800 ({k}/{n})"
