"""Study config validation, and the DAG planning the paper and demo studies."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlm4vla_core.config import (RENAMED_RESOURCES, RESOURCE_FALLBACK, RESOURCE_RULES, ConfigError, Study, execute_steps,
                                 load_config, select_mode)
from vlm4vla_core.config import load_study as load_typed
from vlm4vla_core.study import check as validate
from vlm4vla_core.study import load as load_study

ROOT = Path(__file__).resolve().parents[1]
PAPER, DEMO = ROOT / "config.yaml", ROOT / "config" / "demo.yaml"


@pytest.fixture(scope="module")
def paper():
    return load_typed(PAPER)


def test_paper_and_demo_configs_are_valid(paper):
    assert len(paper.backbones) == 10
    assert {b.kind for b in paper.benchmarks.values()} == {"calvin", "simpler_bridge", "libero10"}
    assert len(paper.jobs()) == 10 * 3 * 4 * 3
    demo = load_typed(DEMO)
    assert len({b.family for b in demo.backbones.values()}) >= 2


def test_the_typed_view_reads_every_section_and_is_frozen(paper):
    """Study: the sections as typed attributes, the schema's defaults where a key is absent, the dict it was
    built from unchanged (raw), and no attribute can be set."""
    import dataclasses

    raw = load_config(PAPER)
    assert Study.from_dict(raw).raw is raw and Study.from_dict(paper) is paper
    assert (paper.name, paper.seeds, paper.ablations) == (raw["study"], tuple(raw["seeds"]), tuple(raw["ablations"]))
    assert paper.policy.head_hidden == raw["policy"]["head_hidden"] and paper.policy.head_layers == 2
    assert paper.evaluation.modes == tuple(raw["evaluation"]["modes"]) and paper.evaluation.max_failed_share == 0.1
    calvin = paper.benchmarks["calvin"]
    assert (calvin.kind, calvin.chunk, calvin.eval_shards) == ("calvin", raw["benchmarks"]["calvin"]["chunk"],
                                                               raw["benchmarks"]["calvin"].get("eval_shards", 1))
    assert dict(calvin.entry) == raw["benchmarks"]["calvin"]  # the plug-in's own keys too
    assert paper.cost.mfu == raw["cost"]["mfu"] and paper.claims == raw.get("claims")
    assert list(paper.embodied_sft) == list(raw["embodied_sft"])
    assert paper.vqa_sets and all(
        (v.name, v.generate, v.benchmark, v.framework, dict(v.entry)) == (n, raw["vqa_sets"][n].get("generate"),
         raw["vqa_sets"][n].get("benchmark"), raw["vqa_sets"][n].get("framework"), raw["vqa_sets"][n])
        for n, v in paper.vqa_sets.items())
    assert paper.variants()["qwen2.5-vl-3b-bridgevqa"].base == "qwen2.5-vl-3b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.seeds = (0,)
    with pytest.raises(TypeError):
        paper.backbones["x"] = paper.backbones["kosmos-2"]
    with pytest.raises(TypeError):
        paper.benchmarks["calvin"].entry["chunk"] = 1
    with pytest.raises(TypeError):
        paper.backbones["kosmos-2"].training["lr"] = 1.0
    partial = Study.from_dict({"backbones": {"b": {"family": "f", "source": "tiny"}}})  # results read alone
    assert (partial.name, partial.seeds, partial.evaluation, partial.cost) == (None, None, None, None)
    assert list(partial.benchmarks) == [] and partial.backbones["b"].ablations is None


def test_overrides_merge_benchmark_then_backbone(paper):
    s = paper.train_settings("paligemma-1", "calvin")
    assert (s.lr, s.precision, s.micro_batch, s.max_steps) == (5e-5, "fp16", 16, 41000)
    assert paper.train_settings("qwen2.5-vl-3b", "libero10").micro_batch == 64


def test_execute_steps_and_the_mode_rule():
    assert [execute_steps(m, 4) for m in ("whole_chunk", "half_chunk", "single_step")] == [4, 2, 1]
    assert [execute_steps(m, 10) for m in ("whole_chunk", "half_chunk", "single_step")] == [10, 5, 1]
    assert select_mode({"whole_chunk": 0.5, "half_chunk": 0.7, "single_step": 0.7}, "best") == "half_chunk"  # ties: fewer re-plans
    assert select_mode({"whole_chunk": 0.5, "half_chunk": 0.5, "single_step": 0.5}, "best") == "whole_chunk"
    assert select_mode({"whole_chunk": 0.9, "single_step": 0.1}, "single_step") == "single_step"
    with pytest.raises(ValueError, match="half_chunk"):
        select_mode({"whole_chunk": 0.9}, "half_chunk")


def _error(config) -> str:
    with pytest.raises(ConfigError) as err:
        validate(config)
    return str(err.value)


def test_unknown_family_names_the_key(paper):
    bad = copy.deepcopy(paper.raw)
    bad["backbones"]["qwen2.5-vl-3b"]["family"] = "qwen25vl"
    msg = _error(bad)
    assert "backbones.qwen2.5-vl-3b.family" in msg and "qwen25vl" in msg


def test_misspelt_key_is_named_with_a_suggestion(paper):
    bad = copy.deepcopy(paper.raw)
    bad["training"]["learning_rate"] = bad["training"].pop("lr")
    msg = _error(bad)
    assert "training.learning_rate" in msg and "missing key 'training.lr'" in msg
    bad = copy.deepcopy(paper.raw)
    bad["seedz"] = bad.pop("seeds")
    msg = _error(bad)
    assert "'seedz'" in msg and "did you mean 'seeds'" in msg


def test_wrong_type_and_unknown_benchmark(paper):
    bad = copy.deepcopy(paper.raw)
    bad["training"]["max_steps"] = "many"
    assert "training.max_steps" in _error(bad)
    bad = copy.deepcopy(paper.raw)
    bad["benchmarks"]["calvin"]["kind"] = "calvin_abc"
    assert "benchmarks.calvin.kind" in _error(bad)
    bad = copy.deepcopy(paper.raw)
    bad["ablations"] = ["full", "frozen"]
    assert "ablations.1" in _error(bad)
    bad = copy.deepcopy(paper.raw)
    bad["benchmarks"]["libero10"]["wait_step"] = 10
    msg = _error(bad)
    assert "benchmarks.libero10.wait_step" in msg and "did you mean 'wait_steps'" in msg
    bad = copy.deepcopy(paper.raw)
    bad["benchmarks"]["libero10"]["episodes_per_task"] = 51  # 50 init states per task
    assert "benchmarks.libero10.episodes_per_task" in _error(bad)
    bad = copy.deepcopy(paper.raw)
    del bad["benchmarks"]["libero10"]["data_path"]
    assert "missing key 'benchmarks.libero10.data_path'" in _error(bad)


def test_checks_beyond_the_schema():
    demo = load_config(DEMO)
    bad = copy.deepcopy(demo)
    bad["evaluation"].update(modes=["half_chunk"], mode_selection="whole_chunk")
    assert "evaluation.mode_selection" in _error(bad)
    bad = copy.deepcopy(demo)
    bad["benchmarks"]["metaworld"]["tasks"][1] = "drawer-opn-v3"
    msg = _error(bad)
    assert "benchmarks.metaworld.tasks.1" in msg and "did you mean 'drawer-open-v3'" in msg
    bad = copy.deepcopy(demo)
    bad["benchmarks"]["metaworld"]["max_steps"] = 900
    assert "benchmarks.metaworld.max_steps" in _error(bad)


def test_missing_config_file_and_names_a_stage_needs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'libero' under 'benchmarks'"):
        load_study(PAPER, benchmark="libero")
    with pytest.raises(ConfigError, match="ablation 'frozen'"):
        load_study(PAPER, ablation="frozen")


def _snakemake(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _clone(tmp_path) -> Path:
    """A copy of the workflow files, so planning never touches the checkout's results/."""
    dst = tmp_path / "wf"
    dst.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "config", "profiles", "envs"):
        src = ROOT / name
        if src.is_dir():
            subprocess.run(["cp", "-r", str(src), str(dst / name)], check=True)
        else:
            (dst / name).write_text(src.read_text())
    return dst


def test_paper_study_plans(tmp_path):
    wf = _clone(tmp_path)
    res = _snakemake("-n", "--quiet", "rules", cwd=wf)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    # 10 backbones x 3 benchmarks x 4 ablations x 3 seeds, and 7 embodied-SFT variants x 3 benchmarks x full x 3
    # seeds; LIBERO-10 in 10 evaluation shards, CALVIN in 8
    counts = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    runs = 360 + 7 * 3 * 3
    assert counts["train"] == str(runs) and counts["merge_eval"] == str(runs) and counts["data"] == "3"
    assert counts["evaluate"] == str(runs // 3 * (10 + 8 + 1))  # LIBERO-10 10 shards, CALVIN 8, Simpler 1
    assert counts["sft"] == "6"  # RoboBrain2.0 is a published checkpoint: no SFT job
    res = _snakemake("results/paper/runs/kosmos-2/libero10/freeze_vision/seed2/eval.json", "-n", "--quiet", "rules",
                     cwd=wf)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = dict(line.split()[:2] for line in (res.stdout + res.stderr).splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert (counts["data"], counts["train"], counts["evaluate"], counts["merge_eval"]) == ("1", "1", "10", "1")


def test_vqa_scores_come_from_the_published_numbers(paper):
    from vlm4vla_core import study
    from vlm4vla_core.aggregate.results import vqa_scores

    scores = vqa_scores(paper)  # every paper backbone with a published MMMU score, each with its source
    assert set(scores) == set(paper.backbones) - {"paligemma-1", "paligemma-2"}
    assert scores["qwen2.5-vl-3b"]["score"] == 53.1 and scores["kosmos-2"]["score"] == 24.4
    assert all(s["source"].startswith("MMMU") and "published.yaml" in s["source"] for s in scores.values())
    bad = copy.deepcopy(paper.raw)
    bad["backbones"]["paligemma-1"]["vqa"] = {"published": "paligemma-1"}  # null in published.yaml: its reason
    with pytest.raises(ConfigError, match=r"backbones\.paligemma-1\.vqa\.published.*no VQA score.*fine-tuning"):
        study.check(bad)
    bad["backbones"]["paligemma-1"]["vqa"] = {"published": "paligemma-3"}
    with pytest.raises(ConfigError, match=r"backbones\.paligemma-1\.vqa\.published.*no model 'paligemma-3'"):
        study.check(bad)
    bad["backbones"]["paligemma-1"]["vqa"] = {"published": "paligemma-1", "score": 50.0}  # one or the other
    assert "backbones.paligemma-1.vqa" in _error(bad)


def test_embodied_sft_variants_become_backbones(paper):
    full = paper.with_sft_variants()
    assert full.with_sft_variants().raw == full.raw  # idempotent: the stages re-read the expanded config
    v = full.backbones["qwen2.5-vl-3b-bridgevqa"]
    assert (v.family, v.source, v.sft, v.ablations) == ("qwen2_5_vl", "sft", "qwen2.5-vl-3b", ("full",))
    assert v.training == paper.backbones["qwen2.5-vl-3b"].training
    assert full.backbones["qwen2.5-vl-7b-robobrain2"].source == "BAAI/RoboBrain2.0-7B"
    assert "qwen2.5-vl-3b-bridgevqa" not in paper.backbones and "qwen2.5-vl-3b-bridgevqa" not in paper.raw["backbones"]
    validate(copy.deepcopy(dict(full.raw)))
    assert len(full.jobs()) == 360 + 7 * 3 * 3
    assert {j["ablation"] for j in full.jobs() if j["backbone"] == "qwen2.5-vl-3b-bridgevqa"} == {"full"}
    bad = copy.deepcopy(paper.raw)
    del bad["embodied_sft"]["qwen2.5-vl-3b-robopoint"]["data_path"]
    assert "embodied_sft.qwen2.5-vl-3b-robopoint" in _error(bad)
    bad = copy.deepcopy(load_config(DEMO))
    bad["vqa_sets"]["metaworld-vqa"]["benchmark"] = "libero"
    assert "vqa_sets.metaworld-vqa.benchmark" in _error(bad)


def test_the_workflow_stops_at_an_old_mode_name_with_the_new_one(tmp_path):
    """Before the schema's enum error: the key and the new name of the execution mode."""
    wf = _clone(tmp_path)
    demo = wf / "config" / "demo.yaml"
    text = demo.read_text()
    assert "  modes: [whole_chunk, half_chunk]\n" in text
    demo.write_text(text.replace("  modes: [whole_chunk, half_chunk]\n", "  modes: [full, half]\n"))
    res = _snakemake("--configfile", "config/demo.yaml", "-n", "--quiet", "rules", cwd=wf)
    assert res.returncode != 0
    assert ("key 'evaluation.modes' (item 0): execution mode 'full' is now called 'whole_chunk'; "
            "key 'evaluation.modes' (item 1): execution mode 'half' is now called 'half_chunk'") in res.stdout + res.stderr


def test_an_old_resources_key_stops_with_the_rule_name(paper):
    for old, new in RENAMED_RESOURCES.items():
        bad = copy.deepcopy(paper.raw)
        bad["resources"][old] = bad["resources"].pop(new)
        assert f"key 'resources.{old}' is now called 'resources.{new}'" in _error(bad)


def test_resources_are_keyed_by_the_rules_that_read_them():
    """Every rule of the workflow reads resources.<its own name>; the schema allows exactly those keys."""
    schema = yaml.safe_load((ROOT / "vlm4vla_core" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]["resources"]["properties"]) == set(RESOURCE_RULES)
    with_resources = set()
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        # a rule's body: from 'rule <name>:' to the next line that starts in column 0
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            read = set(re.findall(r"\b(?:res|resources_of)\(\"(\w+)\"", body))
            if "train_resources()" in body:
                read.add("train")
            assert read <= {name}, f"{smk.name}: rule {name} reads the resources of {sorted(read - {name})}"
            if "resources:" in body:
                with_resources.add(name)
    assert with_resources == set(RESOURCE_RULES)
    cluster = (ROOT / "docs" / "cluster.md").read_text()
    assert all(f"`{rule}`" in cluster for rule in RESOURCE_RULES), "docs/cluster.md lists the resource keys"


def test_a_rule_reads_the_shared_entry_for_a_key_its_own_lacks():
    study = Study.from_dict({"resources": {"evaluate": {"cpus": 4, "mem_mb": 9000}, "evaluate_baseline": {"cpus": 1}}})
    assert study.resource("evaluate_baseline", "cpus", 2) == 1
    assert study.resource("evaluate_baseline", "mem_mb", 2) == 9000
    assert study.resource("evaluate_baseline", "runtime", 60) == 60
    assert study.resource("published", "runtime", 30) == 30  # neither published nor aggregate set
    assert set(RESOURCE_FALLBACK) <= set(RESOURCE_RULES) and set(RESOURCE_FALLBACK.values()) <= set(RESOURCE_RULES)
    with pytest.raises(KeyError, match="collect_data"):
        study.resource("collect_data", "cpus")


def test_the_workflow_stops_at_an_old_resources_key(tmp_path):
    wf = _clone(tmp_path)
    demo = wf / "config" / "demo.yaml"
    text = demo.read_text()
    assert "\n  data: {cpus: 2," in text
    demo.write_text(text.replace("\n  data: {cpus: 2,", "\n  collect_data: {cpus: 2,"))
    res = _snakemake("--configfile", "config/demo.yaml", "-n", "--quiet", "rules", cwd=wf)
    assert res.returncode != 0
    assert "key 'resources.collect_data' is now called 'resources.data'" in res.stdout + res.stderr


def test_demo_study_plans_the_pretraining_levels_and_the_sft_axis(tmp_path):
    wf = _clone(tmp_path)
    res = _snakemake("--configfile", "config/demo.yaml", "-n", "--quiet", "rules", cwd=wf)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = dict(line.split()[:2] for line in (res.stdout + res.stderr).splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    # per family: levels 0 and 300 (full), level 800 (full, freeze_vision, from_scratch) and its SFT variant
    # (full), x 2 seeds: 2 x 6 x 2 = 24 train jobs; 4 pretraining + 2 SFT jobs; 8 backbones x 2 VQA sets
    assert (counts["vqa_data"], counts["sft"], counts["vqa_eval"], counts["train"]) == ("2", "6", "16", "24")
    # the level-800 run continues the level-300 checkpoint, and the SFT variant starts from level 800
    res = _snakemake("--configfile", "config/demo.yaml", "-n", "-p",
                     "results/demo/sft/tiny-paligemma-gen800-mwvqa/checkpoint", cwd=wf)
    assert res.returncode == 0, res.stderr[-3000:]
    plan = res.stdout + res.stderr
    assert "--variant tiny-paligemma-gen800-mwvqa --source results/demo/sft/tiny-paligemma-gen800/checkpoint" in plan
    assert "--variant tiny-paligemma-gen800 --source results/demo/sft/tiny-paligemma-gen300/checkpoint" in plan
    assert "--variant tiny-paligemma-gen300 --source results/demo/backbones/tiny-paligemma/checkpoint" in plan


def test_bad_config_stops_before_any_job(tmp_path):
    wf = _clone(tmp_path)
    raw = yaml.safe_load((wf / "config.yaml").read_text())
    raw["backbones"]["kosmos-2"]["family"] = "kosmos3"
    (wf / "config.yaml").write_text(yaml.safe_dump(raw))
    res = _snakemake("-n", cwd=wf)
    assert res.returncode != 0
    assert "backbones.kosmos-2.family" in res.stderr + res.stdout
    assert not (wf / "results" / "paper" / "runs").exists()


def test_the_ablation_names_and_the_baseline_name_have_one_home():
    """config.ABLATIONS and config.BASELINE are the only spelling in the package and the workflow; the
    schema's enum is checked against them."""
    import ast

    from vlm4vla_core.config import ABLATIONS, BASELINE

    schema = yaml.safe_load((ROOT / "vlm4vla_core" / "schemas" / "config.schema.yaml").read_text())
    assert schema["$defs"]["ablation"]["enum"] == list(ABLATIONS)
    found = []
    for path in sorted((ROOT / "vlm4vla_core").rglob("*.py")):
        if path == ROOT / "vlm4vla_core" / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if names >= set(ABLATIONS):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: the list of ablations")
            elif isinstance(node, ast.Constant) and node.value == BASELINE:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {BASELINE!r}")
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if BASELINE in code or all(a in code for a in ABLATIONS):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "spelt outside vlm4vla_core/config.py:\n" + "\n".join(found)


def test_a_plugin_generated_vqa_set_names_a_benchmark_of_its_kind(paper):
    demo = load_config(DEMO)
    name = next(n for n, e in demo["vqa_sets"].items() if e.get("generate") == "metaworld")
    bad = copy.deepcopy(demo)
    bad["vqa_sets"][name]["benchmark"] = "nowhere"
    assert f"key 'vqa_sets.{name}.benchmark': 'nowhere' is not a metaworld benchmark" in _error(bad)
    bad["vqa_sets"][name].pop("generate")
    assert f"key 'vqa_sets.{name}': give 'heldout_path'" in _error(bad)
