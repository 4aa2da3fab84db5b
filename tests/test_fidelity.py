"""The action range, the normalisation statistics and the gripper sign, against VLM4VLA's code.

The official formulas are transcribed below from VLM4VLA's public repository (CladernyJorn/VLM4VLA,
commit 20fedc9082004c90c96da3221be5a5f38c4f266c), each naming its file and lines. The project's
executed-action bounds, computed from hand-made asymmetric per-dimension statistics, must equal
theirs on every benchmark that has official code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlm4vla_core import benchmarks
from vlm4vla_core.config import ConfigError, Study
from vlm4vla_core.policy import PolicyConfig, arm_to_label, label_to_arm

NORM_MIN, NORM_MAX = -0.65, 0.65  # every configs/oxe_training/*/*.json and configs/calvin_finetune/*.json: 125-127 / 135-137


# -- the official formulas (transcribed) ------------------------------------------------------------------
def official_bounds_q99(x, q01, q99):
    """OpenVLA's BOUNDS_Q99 normalisation of the RLDS pipeline VLM4VLA trains on:
    openvla/prismatic/vla/datasets/rlds/utils/data_utils.py lines 76-93
    (``tf.clip_by_value(2 * (x - low) / (high - low + 1e-8) - 1, -1, 1)``)."""
    return np.clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)


def official_normalize_action(action, action_min, action_max):
    """vlm4vla/data/data_utils.py lines 568-574 (``normalize_action``, arm dimensions), called from
    vlm4vla/data/base_action_prediction_dataset.py line 116 with norm_min / norm_max."""
    action = np.clip(action, a_min=float(action_min), a_max=float(action_max))
    return 2 * (action - action_min) / (action_max - action_min) - 1


def official_unnormalize_action(action, action_min, action_max):
    """vlm4vla/data/data_utils.py lines 577-582 (``unnoramalize_action``), applied to the head's tanh
    output in eval/calvin/model_wrapper.py lines 357-366 (the parent of the Simpler and LIBERO wrappers)."""
    return 0.5 * (action + 1) * (action_max - action_min) + action_min


def official_percentile_inverse(action, q01, q99):
    """eval/simpler/model_wrapper.py lines 215-222 and eval/libero/model_wrapper.py lines 187-194
    (``0.5 * (action + 1) * (action_high - action_low) + action_low``)."""
    return 0.5 * (action + 1) * (q99 - q01) + q01


def official_label(x, q01, q99, percentiles: bool):
    """The training label of an arm action: Bridge / LIBERO-10 (RLDS) pass the percentiles first; the
    CALVIN dataset (vlm4vla/data/calvin_dataset.py line 689) normalises rel_actions directly."""
    unit = official_bounds_q99(x, q01, q99) if percentiles else x
    return official_normalize_action(unit, NORM_MIN, NORM_MAX)


def official_executed(head, q01, q99, percentiles: bool):
    """The executed arm action of a head output ``head`` (the official head ends in a tanh:
    vlm4vla/model/policy_head/base_policy.py lines 8-24, so its output lies in [-1, 1])."""
    z = official_unnormalize_action(head, NORM_MIN, NORM_MAX)
    return official_percentile_inverse(z, q01, q99) if percentiles else z


# -- hand-made asymmetric statistics ------------------------------------------------------------------------
Q01 = np.array([-0.03, -0.05, -0.01, -0.08, -0.20, -0.30])
Q99 = np.array([0.02, 0.04, 0.05, 0.12, 0.10, 0.15])
STATS = {"action": {"q01": [*Q01, 0.0], "q99": [*Q99, 1.0]}}
PAPER = {  # benchmark kind -> (entry, the official pipeline passes percentiles)
    "simpler_bridge": (dict(kind="simpler_bridge", chunk=4, data_path="x", norm_stats="data"), True),
    "libero10": (dict(kind="libero10", chunk=4, data_path="x", norm_stats="data"), True),
    "calvin": (dict(kind="calvin", chunk=10, data_path="x"), False),
}


def _bounds(kind: str):
    entry, _ = PAPER[kind]
    bench = benchmarks.get(kind)
    low, high = bench.action_bounds(bench.settings(entry), STATS)
    return bench, bench.settings(entry), np.array(low), np.array(high)


@pytest.mark.parametrize("kind", list(PAPER))
def test_executed_action_bounds_equal_the_official_formula(kind):
    bench, entry, low, high = _bounds(kind)
    assert bench.arm_range_of(entry) == "official"  # the default on the paper's three benchmarks
    percentiles = PAPER[kind][1]
    q01, q99 = (Q01, Q99) if percentiles else (-np.ones(6), np.ones(6))
    for head in (-1.0, 1.0):
        ours = label_to_arm(np.full(6, head), low, high, 0.65, "official")
        np.testing.assert_allclose(ours, official_executed(np.full(6, head), q01, q99, percentiles), atol=1e-9)
    # executed actions stay inside the middle 65% of the percentile range, whatever the head says
    width = q99 - q01
    for head in (-50.0, -1.0, -0.3, 0.0, 0.7, 1.0, 50.0):
        a = label_to_arm(np.full(6, head), low, high, 0.65, "official")
        assert np.all(a >= q01 + 0.175 * width - 1e-12) and np.all(a <= q99 - 0.175 * width + 1e-12)
    if percentiles:  # Bridge x: the full range would be 1 / 0.65 = 1.54 times wider
        full = label_to_arm(np.ones(6), low, high, 0.65, "full") - label_to_arm(-np.ones(6), low, high, 0.65, "full")
        ours = label_to_arm(np.ones(6), low, high, 0.65, "official") - label_to_arm(-np.ones(6), low, high, 0.65,
                                                                                   "official")
        np.testing.assert_allclose(full / ours, 1 / 0.65)


@pytest.mark.parametrize("kind", list(PAPER))
def test_training_labels_and_round_trip_equal_the_official_composition(kind):
    _, _, low, high = _bounds(kind)
    percentiles = PAPER[kind][1]
    q01, q99 = (Q01, Q99) if percentiles else (-np.ones(6), np.ones(6))
    rng = np.random.default_rng(0)
    x = q01 + (q99 - q01) * rng.uniform(-0.3, 1.3, size=(200, 6))  # inside and outside the percentiles
    if not percentiles:
        x = np.clip(x, -1, 1)  # CALVIN's rel_actions are clipped to [-1, 1] by the dataset
    label = arm_to_label(x, low, high, 0.65, "official")
    np.testing.assert_allclose(label, official_label(x, q01, q99, percentiles), atol=1e-6)
    # inside the bounds the round trip is exact; outside, actions come back on the bound
    inner = q01 + (q99 - q01) * rng.uniform(0.18, 0.82, size=(200, 6))
    np.testing.assert_allclose(label_to_arm(arm_to_label(inner, low, high, 0.65, "official"), low, high, 0.65,
                                            "official"), inner, atol=1e-12)
    outer = label_to_arm(arm_to_label(x, low, high, 0.65, "official"), low, high, 0.65, "official")
    np.testing.assert_allclose(outer, np.clip(x, q01 + 0.175 * (q99 - q01), q99 - 0.175 * (q99 - q01)), atol=1e-12)
    # torch and numpy give the same labels (the policy runs the torch path)
    t = arm_to_label(torch.tensor(x), torch.tensor(low), torch.tensor(high), 0.65, "official").numpy()
    np.testing.assert_allclose(t, label, atol=1e-12)


def test_metaworld_keeps_the_full_range_and_the_key_overrides():
    mw = benchmarks.get("metaworld")
    assert mw.arm_range == "full" and mw.arm_range_of({"arm_range": "official"}) == "official"
    bridge = benchmarks.get("simpler_bridge")
    assert bridge.arm_range_of({"arm_range": "full"}) == "full"
    low, high = Q01, Q99
    a = label_to_arm(np.array([[1.0] * 6, [-1.0] * 6]) * 0.65, low, high, 0.65, "full")
    np.testing.assert_allclose(a, [Q99, Q01])  # the full range reaches the percentiles
    with pytest.raises(ValueError, match="arm_range"):
        PolicyConfig(family="x", source="x", chunk=1, action_dim=2, arm_range="wide", arm_low=(0.0,), arm_high=(1.0,))


def test_study_config_rejects_an_unknown_arm_range():
    from vlm4vla_core.config import validate
    import yaml
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "demo.yaml").read_text())
    name = next(iter(raw["benchmarks"]))
    raw["benchmarks"][name]["arm_range"] = "wide"
    with pytest.raises(ConfigError, match=f"benchmarks.{name}.arm_range"):
        validate(raw)


# -- the gripper sign through predict ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def steered_policy(tmp_path_factory):
    """A tiny 7-D policy whose head ignores its input: arm outputs and gripper logit are the last bias."""
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import VLAPolicy

    root = tmp_path_factory.mktemp("bb")
    get_adapter("qwen2_5_vl").make_tiny(root, image_size=28, seed=0)
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(root), chunk=2, action_dim=7, image_size=28, head_hidden=8,
                       arm_low=tuple(Q01), arm_high=tuple(Q99))
    policy = VLAPolicy(cfg).eval()
    last = policy.head[-1]
    with torch.no_grad():
        last.weight.zero_()

    def steer(arm: float, logit: float) -> np.ndarray:
        with torch.no_grad():
            last.bias.copy_(torch.tensor([arm] * 6 + [logit], dtype=torch.float32).repeat(cfg.chunk))
        return policy.predict([np.zeros((28, 28, 3), np.uint8)], ["pick"])[0]

    return steer


#: (kind, the simulator's close command): CALVIN -1 (eval/calvin/model_wrapper.py lines 393 and 397: the
#: open-positive sigmoid output (g - 0.5) * 2, then 1 if > 0 else -1); Simpler WidowX -1 (eval/simpler/
#: model_wrapper.py lines 143-152: +1 open, -1 close); LIBERO +1 (eval/libero/model_wrapper.py line 197:
#: -1 * (2 * (open > 0.5) - 1))
CLOSE = {"calvin": -1.0, "simpler_bridge": -1.0, "libero10": 1.0}


@pytest.mark.parametrize("kind", list(CLOSE))
def test_gripper_sign_through_predict_at_the_simulator(steered_policy, kind):
    bench = benchmarks.get(kind)
    entry = bench.settings(PAPER[kind][0])
    to_env = bench.action_to_env(entry)
    closed = steered_policy(0.0, 3.0)  # positive logit: closed, the project's convention
    opened = steered_policy(0.0, -3.0)
    assert closed[0, -1] == 1.0 and opened[0, -1] == -1.0
    assert to_env(closed[0])[6] == CLOSE[kind] and to_env(opened[0])[6] == -CLOSE[kind]
    # and the arm of the same predict call lies on the official bound
    top = steered_policy(5.0, 0.0)[0, :6]
    np.testing.assert_allclose(top, official_percentile_inverse(official_unnormalize_action(1.0, NORM_MIN, NORM_MAX),
                                                                Q01, Q99), rtol=1e-5)


# -- official normalisation statistics ----------------------------------------------------------------------
@pytest.mark.parametrize("kind, trajectories", [("simpler_bridge", 60064), ("libero10", 379)])
def test_official_statistics_are_the_default_and_are_shipped(kind, trajectories, tmp_path):
    bench = benchmarks.get(kind)
    entry = bench.settings({**PAPER[kind][0], "norm_stats": "official"})
    assert bench.settings({k: v for k, v in PAPER[kind][0].items() if k != "norm_stats"})["norm_stats"] == "official"
    shipped = json.loads(bench.official_stats.read_text())
    assert shipped["num_trajectories"] == trajectories and shipped["source"]["path"].endswith(".json")
    low, high = bench.action_bounds(entry, STATS)  # whatever the imported copy's statistics say
    assert (low, high) == (shipped["action"]["q01"][:6], shipped["action"]["q99"][:6])
    own = tmp_path / "stats.json"
    own.write_text(json.dumps(STATS))
    assert bench.action_bounds(bench.settings({**PAPER[kind][0], "norm_stats": str(own)}), {}) == (list(Q01), list(Q99))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"action": {"q01": [0.0]}}))
    for value, match in ((str(tmp_path / "none.json"), "cannot read"), (str(bad), "action.q01")):
        with pytest.raises(ConfigError, match=f"benchmarks.b.norm_stats.*{match}"):
            bench.check("b", {**PAPER[kind][0], "norm_stats": value})
    if kind == "simpler_bridge":  # the Bridge statistics docs/fidelity.md quotes
        assert shipped["action"]["q01"][0] == pytest.approx(-0.02872725307941437)
        assert shipped["action"]["q99"][0] == pytest.approx(0.028309678435325586)


def test_training_takes_the_benchmark_arm_range_and_old_policies_keep_theirs(tmp_path):
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.policy import VLAPolicy, load_policy, save_policy
    from vlm4vla_core.train import policy_config_for

    data = tmp_path / "data"
    data.mkdir()
    data.joinpath("stats.json").write_text(json.dumps({"action": {"q01": [-1.0] * 4, "q99": [1.0] * 4}}))
    config = Study.from_dict({
        "backbones": {"b": {"family": "qwen2_5_vl"}}, "evaluation": {},
        "policy": {"head_hidden": 8, "loss": "huber", "gripper_weight": 0.01, "arm_norm": 0.65},
        "benchmarks": {"mw": {"kind": "metaworld", "chunk": 2, "image_size": 28},
                       "mw2": {"kind": "metaworld", "chunk": 2, "image_size": 28, "arm_range": "official"}}})
    assert policy_config_for(config, "b", "mw", "full", 0, "x", data).arm_range == "full"
    assert policy_config_for(config, "b", "mw2", "full", 0, "x", data).arm_range == "official"

    get_adapter("qwen2_5_vl").make_tiny(tmp_path / "bb", image_size=28, seed=0)
    cfg = policy_config_for(config, "b", "mw2", "full", 0, str(tmp_path / "bb"), data)
    save_policy(VLAPolicy(cfg), tmp_path / "policy")
    assert load_policy(tmp_path / "policy").cfg.arm_range == "official"
    meta = json.loads((tmp_path / "policy" / "policy.json").read_text())
    del meta["config"]["arm_range"]  # written before arm_range existed: trained with the full range
    (tmp_path / "policy" / "policy.json").write_text(json.dumps(meta))
    assert load_policy(tmp_path / "policy").cfg.arm_range == "full"
