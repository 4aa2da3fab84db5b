"""Execution modes per benchmark as VLM4VLA's scripts run them, and the held-out number beside best-of-modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.aggregate import load_runs
from vlm4vla_core.aggregate.tables import BEST_OF, HELD_OUT, main_table
from vlm4vla_core.config import ConfigError, execute_steps, held_out_values

#: execute steps of VLM4VLA's scripts (CladernyJorn/VLM4VLA 20fedc9): eval/calvin/evaluate_ddp.py line 303
#: (``execute_step=10``, chunk 10); eval/libero/eval_ckpts_libero.py line 17 (``[4, 2]``, chunk 4);
#: eval/simpler/eval_ckpts_bridge.py line 25 (``[4, 2, 1]``, chunk 4)
OFFICIAL_STEPS = {"calvin": (10, [10]), "libero10": (4, [4, 2]), "simpler_bridge": (4, [4, 2, 1])}


def study(**benches):
    return {"study": "t", "evaluation": {"modes": ["whole_chunk", "half_chunk"], "mode_selection": "best"},
            "benchmarks": {name: dict(kind=kind, chunk=chunk, data_path="x", **kw)
                           for name, (kind, chunk, kw) in benches.items()}}


@pytest.mark.parametrize("kind", list(OFFICIAL_STEPS))
def test_each_benchmark_runs_the_official_modes_by_default(kind):
    chunk, steps = OFFICIAL_STEPS[kind]
    modes, rule, source = benchmarks.modes_of(study(b=(kind, chunk, {})), "b")
    assert [execute_steps(m, chunk) for m in modes] == steps and rule == "best" and "official" in source


def test_modes_are_configurable_and_a_fixed_rule_must_name_one():
    config = study(mw=("metaworld", 4, {}), lib=("libero10", 4, {"modes": ["single_step"], "mode_selection": "single_step"}))
    assert benchmarks.modes_of(config, "mw") == (["whole_chunk", "half_chunk"], "best", "evaluation.modes")
    assert benchmarks.modes_of(config, "lib") == (["single_step"], "single_step", "benchmarks.lib.modes")
    config["benchmarks"]["cal"] = dict(kind="calvin", chunk=10, data_path="x", mode_selection="half_chunk")
    with pytest.raises(ConfigError, match=r"benchmarks\.cal\.mode_selection.*\['full'\]"):
        benchmarks.modes_of(config, "cal")


def test_held_out_values_by_hand():
    # mode a wins on the even positions only by luck; b is better on the odd ones
    a = np.array([1, 0, 1, 0, 1, 0])
    b = np.array([0, 1, 0, 1, 1, 1])
    held, chosen = held_out_values({"whole_chunk": a, "half_chunk": b})
    # even positions take the best on the odd ones (b: 3/3 > a: 0/3); odd take the best on the even (a: 3/3 > b 1/3)
    assert chosen == ["half_chunk", "whole_chunk"]
    assert held.tolist() == [0, 0, 0, 0, 1, 0]
    assert max(a.mean(), b.mean()) == pytest.approx(4 / 6) and held.mean() == pytest.approx(1 / 6)


def test_best_of_modes_is_biased_and_the_held_out_number_is_not():
    """Three modes of equal true success 0.5 on 100 episodes: the best of them averages about 0.85 standard
    errors too high; the held-out number averages the true rate."""
    rng = np.random.default_rng(0)
    runs, n, p = 3000, 100, 0.5
    se = np.sqrt(p * (1 - p) / n)
    best, held = [], []
    for _ in range(runs):
        values = {m: (rng.random(n) < p).astype(float) for m in ("whole_chunk", "half_chunk", "single_step")}
        best.append(max(v.mean() for v in values.values()))
        held.append(held_out_values(values)[0].mean())
    sem = np.std(held) / np.sqrt(runs)
    assert (np.mean(best) - p) / se == pytest.approx(0.85, abs=0.1)
    assert abs(np.mean(held) - p) < 3 * sem


def _counting(monkeypatch):
    from test_benchmarks import CountingBench

    monkeypatch.setitem(benchmarks.registry(), "counting", CountingBench())
    return benchmarks.get("counting")


def test_eval_record_reports_the_rule_beside_the_number(monkeypatch, tmp_path):
    bench = _counting(monkeypatch)
    config = {"study": "t", "benchmarks": {"c": dict(kind="counting", chunk=2, n=10)},
              "evaluation": {"modes": ["whole_chunk", "single_step"], "mode_selection": "best"}}
    odd = lambda requests: [np.full((2, 2), 1.0 if r["image"][0, 0, 0] % 2 else -1.0, np.float32) for r in requests]
    results, parts = evaluate.evaluate(config, "c", 0, odd, 2, ["whole_chunk", "single_step"], tmp_path / "e.json")
    parts.remove()
    sel = evaluate.selection(bench, results, "best", "whole_chunk")
    assert sel["value"] == 0.5 and sel["heldout"] == 0.5 and "biased" in sel["label"]
    assert sel["heldout_modes"] == {"even": "whole_chunk", "odd": "whole_chunk"}  # ties go to fewer re-plans
    fixed = evaluate.selection(bench, results, "single_step", "single_step")
    assert "heldout" not in fixed and "declared before the run" in fixed["label"]


def _run(tmp, seed, modes, rule, reported):
    eps = lambda vals: [dict(index=i, task="reach-v3", episode_seed=i, success=bool(v), steps=5)
                        for i, v in enumerate(vals)]
    rec = dict(study="unit", backbone="qwen", family="f", benchmark="metaworld", ablation="full", seed=seed,
               metric="success_rate", mode_selection=rule, reported_mode=reported,
               modes={m: {"execute_steps": 1, "episodes": eps(v)} for m, v in modes.items()})
    path = tmp / f"run{seed}.json"
    path.write_text(json.dumps(rec))
    return path


def test_a_best_of_modes_cell_shows_the_held_out_number_beside_it(tmp_path):
    a, b = [1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 1]  # as by hand above: best 66.7%, held-out 16.7%
    config = {"study": "unit", "seeds": [0], "ablations": ["full"], "benchmarks": {"metaworld": {"kind": "metaworld"}},
              "backbones": {"qwen": {"family": "f"}}}
    res = load_runs([_run(tmp_path, 0, {"whole_chunk": a, "half_chunk": b}, "best", "half_chunk")], config)
    _, shown = main_table(res.results, config, ["metaworld"])
    assert shown.loc[0, "metaworld"] == f"{BEST_OF} 66.7 ± n/a (n=6); {HELD_OUT} 16.7"
    fixed = load_runs([_run(tmp_path, 0, {"whole_chunk": a, "half_chunk": b}, "whole_chunk", "whole_chunk")], config)
    assert HELD_OUT not in main_table(fixed.results, config, ["metaworld"])[1].loc[0, "metaworld"]
