"""The cost plan (vlm4vla_core.plan_cost): its arithmetic on a small study computed by hand, the step
budgets of the paper's protocols, and the FLOPs facts of a real architecture on the meta device."""

from __future__ import annotations

import copy

import pytest

from vlm4vla_core import plan_cost
from vlm4vla_core.backbones.memory import GPUS
from vlm4vla_core.config import ConfigError, Study, load_study
from vlm4vla_core.study import check

MW = dict(kind="metaworld", chunk=4, tasks=["button-press-topdown-v3"], image_size=32, camera="corner4",
          demos_per_task=1, episodes_per_task=2, max_steps=10)
FACTS = dict(text_active=1000, vision_params=100, hidden=8, text_layers=2, vision_hidden=4, vision_layers=1,
             image_tokens=4, vision_patches=16)


def small_study() -> dict:
    return {
        "study": "cost", "seeds": [0],
        "backbones": {"a": {"family": "qwen2_5_vl", "source": "tiny"}, "b": {"family": "paligemma", "source": "tiny"}},
        # the simulator of mw_slow is the slower side of its evaluation, the policy that of mw_fast
        "benchmarks": {"mw_slow": dict(MW), "mw_fast": dict(MW, eval_shards=2)},
        "ablations": ["full", "freeze_vision"],
        "vqa_sets": {"mwvqa": {"generate": "metaworld", "benchmark": "mw_slow"}},
        "policy": {"head_hidden": 4, "head_layers": 2, "loss": "huber", "gripper_weight": 0.01, "arm_norm": 0.65},
        "training": {"zero_stage": 2, "precision": "bf16", "micro_batch": 2, "grad_accum": 1, "grad_clip": 1.0,
                     "lr": 1e-3, "warmup_steps": 1, "max_steps": 10, "checkpoint_every": 10, "global_batch": 8},
        "evaluation": {"modes": ["whole_chunk", "single_step"], "mode_selection": "best", "baseline": True},
        "resources": {"train": {"gpus": 2, "gpu_model": "A100-80GB"},
                      "evaluate": {"gpus": 1, "gpu_model": "H100-80GB"},
                      "vqa_eval": {"gpus": 1, "gpu_model": "A100-80GB"}},
        "cost": {"mfu": 0.5, "inference_mfu": 0.25,
                 "simulators": {"mw_slow": {"step_s": 0.01, "render_s": 0.1}, "mw_fast": {"step_s": 1e-12}},
                 "vqa": {"mwvqa": {"samples": 10, "new_tokens": 2}}},
    }


def test_the_plan_of_a_small_study_is_the_hand_computed_one():
    config = check(small_study())
    plan = plan_cost.plan_study(config, {"a": FACTS, "b": dict(FACTS, text_active=2000)})
    rows = {(r["rule"], r["backbone"]): r for r in plan["rows"]}
    # sequence 4 image tokens + 40 prompt tokens = 44; head: 8 + (8*4 + 4) + 4*(4 chunk * 4 dims) + 16 = 124
    head = 8 + 36 + 64 + 16
    text_a = 2 * 1000 * 44 + 4 * 2 * 44**2 * 8 + 2 * head       # 212,152
    text_b = 2 * 2000 * 44 + 4 * 2 * 44**2 * 8 + 2 * head       # 300,152
    vision = 2 * 100 * 16 + 4 * 1 * 16**2 * 4                  # 7,296
    assert (text_a, text_b, vision) == (212152, 300152, 7296)
    # training: 10 steps x global batch 8 (2 GPUs x micro-batch 2 x accumulation 2) = 80 samples a job, one job per
    # (benchmark, ablation): 3 passes, a frozen vision tower only its forward; A100 bf16 312 TFLOP/s at MFU 0.5
    per_job = {"a": 80 * (3 * (text_a + vision) + 3 * text_a + vision), "b": 80 * (3 * (text_b + vision) + 3 * text_b + vision)}
    for b in "ab":
        assert rows[("train", b)]["jobs"] == 4
        assert rows[("train", b)]["gpu_hours"] == pytest.approx(2 * per_job[b] / (312e12 * 0.5) / 3600, rel=1e-12)
    # evaluation of one run: 2 episodes x 10 steps x 2 modes = 40 env steps; calls: 2 x ceil(10 / 4) (whole_chunk)
    # + 2 x 10 (single_step) = 26
    slow_core = 40 * 0.01 + 26 * 0.1                            # 3.0 core-seconds, > the policy's
    fast_core = 40 * 1e-12
    policy = {b: 26 * (t + vision) / (989e12 * 0.25) for b, t in (("a", text_a), ("b", text_b))}  # H100 bf16
    assert policy["a"] > fast_core
    for b in "ab":
        r = rows[("evaluate", b)]
        assert r["jobs"] == 2 * (1 + 2)  # 2 ablations x (1 shard of mw_slow + 2 of mw_fast)
        assert r["core_hours"] == pytest.approx(2 * (slow_core + fast_core) / 3600, rel=1e-12)
        assert r["gpu_hours"] == pytest.approx(2 * (slow_core + policy[b]) / 3600, rel=1e-12)
    base = rows[("evaluate_baseline", "zero-action")]
    assert base["jobs"] == 3 and base["core_hours"] == pytest.approx((slow_core + fast_core) / 3600, rel=1e-12)
    assert base["gpu_hours"] == pytest.approx((slow_core + fast_core) / 3600, rel=1e-12)
    # VQA: 10 questions, each a forward over 44 + 2 generated tokens (no policy head), A100 at MFU 0.25
    vqa_a = 10 * (2 * 1000 * 46 + 4 * 2 * 46**2 * 8 + vision)
    assert rows[("vqa_eval", "a")]["gpu_hours"] == pytest.approx(vqa_a / (312e12 * 0.25) / 3600, rel=1e-12)
    total = sum(r["gpu_hours"] for r in plan["rows"])
    assert plan["total"]["gpu_hours"] == pytest.approx(total) and plan["total"]["jobs"] == 8 + 12 + 3 + 2
    per_b = {b: sum(r["gpu_hours"] for r in plan["rows"] if r["backbone"] == b) for b in "ab"}
    assert plan["one_more_backbone"]["min"] == pytest.approx(min(per_b.values()))
    assert plan["one_more_backbone"]["max"] == pytest.approx(max(per_b.values()))
    assert "GPU-hours" in plan_cost.describe(plan) and "GPU-hours" in plan_cost.summary_line(plan)


def test_one_more_backbone_leaves_the_sft_variants_aside():
    raw = small_study()
    raw["vqa_sets"]["mwvqa"]["train_episodes_per_task"] = 1
    raw["embodied_sft"] = {"a-sft": {"base": "a", "dataset": "mwvqa"}}
    plan = plan_cost.plan_study(check(raw), {"a": FACTS, "b": dict(FACTS, text_active=2000)})
    per = {b: sum(r["gpu_hours"] for r in plan["rows"] if r["backbone"] == b) for b in ("a", "b", "a-sft")}
    assert per["a-sft"] < per["a"]  # full fine-tuning only: half the jobs
    assert plan["one_more_backbone"]["min"] == pytest.approx(per["a"])
    assert plan["one_more_backbone"]["max"] == pytest.approx(per["b"])


def test_missing_assumptions_name_their_key():
    raw = small_study()
    del raw["cost"]["simulators"]["mw_fast"]
    with pytest.raises(ConfigError, match="cost.simulators.mw_fast"):
        plan_cost.plan_study(Study.from_dict(raw), {"a": FACTS, "b": FACTS})
    raw = small_study()
    raw["resources"]["evaluate"]["gpu_model"] = "B300"
    with pytest.raises(ConfigError, match="resources.evaluate.gpu_model"):
        plan_cost.plan_study(Study.from_dict(raw), {"a": FACTS, "b": FACTS})
    raw = small_study()
    del raw["cost"]
    with pytest.raises(ConfigError, match="'cost'"):
        plan_cost.plan_study(Study.from_dict(raw), {"a": FACTS, "b": FACTS})
    raw = small_study()
    del raw["cost"]["mfu"]
    with pytest.raises(ConfigError, match="missing key 'cost.mfu'"):
        plan_cost.plan_study(Study.from_dict(raw), {"a": FACTS, "b": FACTS})


def test_every_gpu_of_the_memory_planner_has_a_peak():
    assert set(plan_cost.PEAK_TFLOPS) == set(GPUS)


def test_step_budgets_of_the_paper_protocols():
    config = load_study("config.yaml")
    calvin, libero, bridge = (plan_cost.step_budget(config, k) for k in ("calvin", "libero10", "simpler_bridge"))
    # 1000 chains x 5 subtasks x 360 steps, 3 modes; calls per subtask: ceil(360/10) + 360/5 + 360
    assert calvin["env_steps"] == 1000 * 5 * 360 * 3
    assert calvin["calls"] == 1000 * 5 * (36 + 72 + 360)
    # 500 episodes x (10 wait + 520 policy steps); calls on the 520 policy steps, chunk 4: 130 + 260 + 520
    assert libero["env_steps"] == 500 * 530 * 3 and libero["calls"] == 500 * (130 + 260 + 520)
    # 3 tasks x 24 episodes x 60 steps + 24 x 120 (eggplant), chunk 4
    assert bridge["env_steps"] == 3 * (72 * 60 + 24 * 120)
    assert bridge["calls"] == 72 * (15 + 30 + 60) + 24 * (30 + 60 + 120)


def test_moe_experts_count_at_top_k():
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.memory import architecture_facts
    from vlm4vla_core.backbones.card import meta_model

    adapter = get_adapter("qwen3_vl_moe")
    vlm = meta_model(adapter, "Qwen/Qwen3-VL-30B-A3B-Instruct")
    f, a = plan_cost.flops_facts(adapter, vlm, 224), architecture_facts(adapter, vlm, 224)
    text = a["backbone_params"] - a["vision_params"] - a["embedding_params"]
    experts = sum(p.numel() for n, p in vlm.named_parameters() if ".experts." in n)
    assert f["text_active"] == int(text - experts * (1 - 8 / 128))
    # the published "A3B": about 3B parameters active per token (embeddings and vision included)
    assert 2.5e9 < f["text_active"] + a["embedding_params"] + a["vision_params"] < 3.6e9


def test_the_dry_run_line_shows_a_plan_of_the_same_config_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = small_study()
    config = Study.from_dict(raw)
    assert "is not made yet" in plan_cost.dry_run_line(config, "c.yaml")
    plan = plan_cost.plan_study(config, {"a": FACTS, "b": FACTS})
    from vlm4vla_core.io import write_json

    write_json(plan_cost.plan_path(config), dict(plan, config_digest=plan_cost.config_digest(config)))
    assert plan_cost.dry_run_line(config, "c.yaml") == plan_cost.summary_line(plan)
    raw["seeds"] = [0, 1]
    assert "is for another config" in plan_cost.dry_run_line(Study.from_dict(raw), "c.yaml")
    del raw["cost"]
    assert plan_cost.dry_run_line(Study.from_dict(raw), "c.yaml") == ""


def test_auto_workers_are_planned_at_the_jobs_cores():
    """``eval_workers: auto`` chooses at most the job's cores: the plan spreads the simulator over all of them."""
    raw = small_study()
    raw["benchmarks"]["mw_slow"]["eval_workers"] = "auto"
    raw["resources"]["evaluate"]["cpus"] = 4
    plan = plan_cost.plan_study(check(raw), {"a": FACTS, "b": dict(FACTS, text_active=2000)})
    rows = {(r["rule"], r["backbone"]): r for r in plan["rows"]}
    policy_a = 26 * (212152 + 7296) / (989e12 * 0.25)  # as in the hand-computed plan above
    # mw_slow: 3.0 core-seconds over 4 workers; mw_fast: its policy's time; 2 ablations
    assert rows[("evaluate", "a")]["gpu_hours"] == pytest.approx(2 * (3.0 / 4 + policy_a) / 3600, rel=1e-12)
