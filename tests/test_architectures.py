"""``family: generic`` against the architectures the installed transformers registers for
AutoModelForImageTextToText: tiny checkpoint -> backbone report -> training steps -> action chunk.

The default run takes a sample (Gemma 3 writes a begin-of-image marker in the prompt and expands it into
other tokens; Qwen2-VL and LLaVA expand their image token); ``-m all_archs`` runs every row that
``benchmarks/architectures.json`` (``python -m vlm4vla_core architectures``) lists as working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig

from vlm4vla_core.backbones.generic import config_problems
from vlm4vla_core.backbones.sweep import run_one

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "architectures.json"
SAMPLE = ["gemma3", "qwen2_vl", "llava"]


def _working() -> list[str]:
    return [r["model_type"] for r in json.loads(TABLE.read_text()) if r["status"] == "works"]


@pytest.mark.parametrize("model_type", SAMPLE)
def test_sample_of_architectures_work(tmp_path, model_type):
    row = run_one(model_type, tmp_path)
    assert row["status"] == "works", row
    assert row["image_tokens"] > 0 and row["model_mask_agrees"] is True


def test_gemma3_prompt_marker_is_not_the_model_image_token(tmp_path):
    """The processor writes <start_of_image> in the prompt; the model consumes the expanded soft tokens."""
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.zoo import make_tiny_any

    make_tiny_any("gemma3", tmp_path / "g")
    adapter = get_adapter("generic")
    vlm, processor = adapter.load(tmp_path / "g")
    proc = processor.extra["processor"]
    assert proc.tokenizer.convert_tokens_to_ids(proc.image_token) != vlm.config.image_token_id
    import numpy as np

    enc = adapter.encode(processor, [np.zeros((32, 32, 3), np.uint8)], ["push"])
    assert int(adapter.image_positions(processor, enc).sum()) == vlm.config.mm_tokens_per_image


@pytest.mark.parametrize("model_type", ["florence2", "t5gemma2", "blip-2"])
def test_refused_before_any_weight(model_type):
    problems = config_problems(AutoConfig.for_model(model_type))
    assert problems
    if model_type != "blip-2":
        assert "encoder-decoder" in problems[0]


def test_table_is_current_enough():
    rows = json.loads(TABLE.read_text())
    from vlm4vla_core.backbones.zoo import architectures

    assert {r["model_type"] for r in rows} == set(architectures())
    assert set(SAMPLE) <= set(_working())


@pytest.mark.all_archs
@pytest.mark.parametrize("model_type", _working() if TABLE.is_file() else [])
def test_every_working_architecture(tmp_path, model_type):
    row = run_one(model_type, tmp_path)
    assert row["status"] == "works", row
