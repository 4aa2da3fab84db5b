"""Execution modes per benchmark as VLM4VLA's scripts run them, and the held-out number beside best-of-modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm4vla_core import benchmarks, evaluate
from vlm4vla_core.aggregate import load_runs
from vlm4vla_core.aggregate.tables import BEST_OF, HELD_OUT, main_table
from vlm4vla_core.config import ConfigError, Study, execute_steps, held_out_values

#: execute steps of VLM4VLA's scripts (CladernyJorn/VLM4VLA 20fedc9): eval/calvin/evaluate_ddp.py line 303
#: (``execute_step=10``, chunk 10); eval/libero/eval_ckpts_libero.py line 17 (``[4, 2]``, chunk 4);
#: eval/simpler/eval_ckpts_bridge.py line 25 (``[4, 2, 1]``, chunk 4)
OFFICIAL_STEPS = {"calvin": (10, [10]), "libero10": (4, [4, 2]), "simpler_bridge": (4, [4, 2, 1])}


def study(**benches):
    return Study.from_dict(raw_study(**benches))


def raw_study(**benches):
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
    config = study(cal=("calvin", 10, {"mode_selection": "half_chunk"}))
    with pytest.raises(ConfigError, match=r"benchmarks\.cal\.mode_selection.*\['whole_chunk'\]"):
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
    config = Study.from_dict({"study": "t", "benchmarks": {"c": dict(kind="counting", chunk=2, n=10)},
              "evaluation": {"modes": ["whole_chunk", "single_step"], "mode_selection": "best"}})
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
    config = Study.from_dict({"study": "unit", "seeds": [0], "ablations": ["full"],
                              "benchmarks": {"metaworld": {"kind": "metaworld"}}, "backbones": {"qwen": {"family": "f"}}})
    res = load_runs([_run(tmp_path, 0, {"whole_chunk": a, "half_chunk": b}, "best", "half_chunk")], config)
    _, shown = main_table(res, config, ["metaworld"])
    # one seed: the episodes' interval alone (4 of 6: se sqrt(1e4 * 2/9 * 6/5 / 6) = 21.1, t(5)), labelled so
    assert shown.loc[0, "metaworld"] == f"{BEST_OF} 66.7 [12, 100], 1 seed x 6 ep, episodes only; {HELD_OUT} 16.7"
    fixed = load_runs([_run(tmp_path, 0, {"whole_chunk": a, "half_chunk": b}, "whole_chunk", "whole_chunk")], config)
    assert HELD_OUT not in main_table(fixed, config, ["metaworld"])[1].loc[0, "metaworld"]


def test_a_config_with_an_old_mode_name_stops_with_the_new_name():
    """The modes were called full, half and single; 'full' is also a training regime, which keeps its name."""
    from vlm4vla_core.config import ROOT, load_config
    from vlm4vla_core.study import check

    raw = load_config(ROOT / "config" / "demo.yaml")
    assert "full" in check(raw).ablations
    raw["evaluation"]["modes"] = ["full", "half_chunk"]
    raw["benchmarks"]["metaworld"]["mode_selection"] = "single"
    with pytest.raises(ConfigError) as err:
        check(raw)
    msg = str(err.value)
    assert "key 'evaluation.modes' (item 0): execution mode 'full' is now called 'whole_chunk'" in msg
    assert "key 'benchmarks.metaworld.mode_selection': execution mode 'single' is now called 'single_step'" in msg
    with pytest.raises(ValueError, match="'half' is now called 'half_chunk'"):
        execute_steps("half", 4)


def test_results_written_with_the_old_mode_names_are_read_under_the_new_ones(tmp_path):
    from vlm4vla_core.aggregate import ResultsError, load_results_csv

    a, b = [1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 1]
    config = Study.from_dict({"study": "unit", "seeds": [0, 1], "ablations": ["full"],
                              "benchmarks": {"metaworld": {"kind": "metaworld"}}, "backbones": {"qwen": {"family": "f"}}})
    old = load_runs([_run(tmp_path, 0, {"full": a, "half": b}, "best", "half")], config)
    new = load_runs([_run(tmp_path, 1, {"whole_chunk": a, "half_chunk": b}, "best", "half_chunk")], config)
    assert list(old.modes["mode"]) == list(new.modes["mode"]) == ["whole_chunk", "half_chunk"]
    assert list(old.modes["value"]) == list(new.modes["value"])
    assert set(old.episodes["mode"]) == {"half_chunk"} and list(old.results["value"]) == list(new.results["value"])
    fixed = load_runs([_run(tmp_path, 0, {"full": a, "single": b}, "single", "single")], config)
    assert list(fixed.modes["mode"]) == ["whole_chunk", "single_step"]
    assert set(fixed.modes["mode_selection"]) == {"single_step"}
    both = _run(tmp_path, 0, {"full": a, "whole_chunk": b}, "best", "full")
    with pytest.raises(ResultsError, match=r"run0\.json: modes \['full'\] are there under their old and their new"):
        load_runs([both], config)
    csv = tmp_path / "old.csv"
    csv.write_text("backbone,benchmark,ablation,seed,metric,value,mode\nqwen,metaworld,full,0,success_rate,50,half\n")
    got = load_results_csv(csv).results
    assert list(got["mode"]) == ["half_chunk"] and list(got["ablation"]) == ["full"]


def test_an_old_shard_merges_and_reports_under_the_new_names(tmp_path):
    from vlm4vla_core.benchmarks.calvin.metrics import summarise

    subtasks = ["open_drawer", "push_red_block_left", "turn_on_lightbulb", "move_slider_left", "lift_blue_block_table"]
    eps = [dict(index=i, task="t", completed=c, success=c == 5, subtasks=subtasks) for i, c in enumerate([5, 2])]
    shard = dict(backbone="b", benchmark="calvin", kind="calvin", ablation="full", seed=0, checkpoint="p",
                 episodes_total=2, mode_selection="full", shard=[0, 1],
                 modes={"full": dict(execute_steps=10, episodes=eps)})
    (tmp_path / "s0.json").write_text(json.dumps(shard))
    assert evaluate.merge_main([str(tmp_path / "s0.json"), "--out", str(tmp_path / "eval.json")]) == 0
    merged = json.loads((tmp_path / "eval.json").read_text())
    assert list(merged["modes"]) == ["whole_chunk"]
    assert merged["mode_selection"] == merged["reported_mode"] == merged["selection"]["reported_mode"] == "whole_chunk"
    assert summarise(shard, "full", n_boot=0)["mode"] == "whole_chunk"
    assert summarise(shard, n_boot=0)["avg_len"] == 3.5


def test_the_log_names_the_mode_and_the_steps_it_executes(monkeypatch, tmp_path, capsys):
    _counting(monkeypatch)
    monkeypatch.setenv("VLM4VLA_PROGRESS_SECONDS", "0")
    config = Study.from_dict({"study": "t", "benchmarks": {"c": dict(kind="counting", chunk=4, n=2)},
              "evaluation": {"modes": ["half_chunk"], "mode_selection": "best"}})
    ones = lambda requests: [np.ones((4, 2), np.float32) for _ in requests]
    _, parts = evaluate.evaluate(config, "c", 0, ones, 4, ["half_chunk"], tmp_path / "e.json")
    parts.remove()
    out = capsys.readouterr()
    assert "c seed 0 mode=half_chunk (executes 2 of 4): " in out.out
    assert "counting mode=half_chunk (executes 2 of 4): " in out.err and "exec=" not in out.err + out.out
