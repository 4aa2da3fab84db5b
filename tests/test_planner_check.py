"""tools/check_planner.py: the activation bytes it counts, and its smoke run (the GPU check's CPU form)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_planner  # noqa: E402


def test_saved_bytes_count_what_the_layers_keep_for_backward():
    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(4, 4, bias=False)
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4, bias=False) for _ in range(2))

        def forward(self, x):
            x = self.inp(x)
            for layer in self.layers:
                x = layer(x)
            return x

    model = Stack()
    x = torch.randn(3, 4, requires_grad=True)
    out, saved = check_planner.saved_bytes(lambda: model(x), check_planner.decoder_layers(model))
    # each layer's matmul keeps its input (3 x 4 fp32) and its weight (a parameter, not counted); the first
    # Linear is outside the layers
    assert saved == 2 * (3 * 4 * 4)
    out.sum().backward()  # the graph is intact
    # the same bytes by the op that keeps them: each layer's matmul keeps its 3 x 4 input
    assert check_planner.breakdown(check_planner.decoder_layers(model), lambda: model(x)) == [
        ("MmBackward0.self", "(3, 4) torch.float32", 2 * 3 * 4 * 4)]


def test_the_smoke_run_writes_the_measured_columns(tmp_path):
    out = tmp_path / "check.json"
    assert check_planner.main(["--smoke", "--dtypes", "fp32", "--families", "qwen2_5_vl", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["date"] and row["device"] == "cpu" and row["layers"] == 2 and row["smoke"]
    assert row["parameter_bytes"] == row["planned_parameter_bytes"]
    assert row["gradient_bytes"] == row["planned_gradient_bytes"] > 0
    assert row["activation_bytes_per_layer"] > 0 and row["step_s"] > 0 and row["tokens_per_s"] > 0
    # the planner's structural count of the language model's and the vision tower's layers, and AdamW's state
    assert 0.95 < row["activation_ratio"] < 1.05 and 0.95 < row["vision_ratio"] < 1.05
    assert 0.95 < row["checkpointed_ratio"] < 1.05 and 0.98 < row["beside_bytes"] / row["planned_beside_bytes"] < 1.02
    assert row["optimizer_bytes"] == row["planned_optimizer_bytes"] > 0 and 0.95 < row["total_ratio"] < 1.05


def test_an_unknown_backbone_is_named():
    import pytest

    from vlm4vla_core.config import load_study

    study = load_study(str(ROOT / "config.yaml"))
    assert check_planner.family_backbones(study, ["paligemma-2"]) == [("paligemma", "google/paligemma2-3b-pt-224")]
    with pytest.raises(SystemExit, match="paligemma-3"):
        check_planner.family_backbones(study, ["paligemma-3"])
