"""``family: generic`` against the architectures the installed transformers registers for
AutoModelForImageTextToText: tiny checkpoint -> backbone report -> training steps -> action chunk.

The default run takes a sample (Gemma 3 writes a begin-of-image marker in the prompt and expands it into
other tokens; Qwen2-VL and LLaVA expand their image token; Qwen3-VL needs the image processor's patch size
from its tower; Idefics3 needs its tokens per image from the model's image features; GLM-4.1V-MoE has
partial rotary mrope sections); ``-m all_archs`` runs every row that
``docs/architectures.json`` (``python -m vlm4vla_core architectures``) lists as working."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers
from transformers import AutoConfig

from vlm4vla_core.backbones.generic import config_problems
from vlm4vla_core.backbones.sweep import load_table, run_one

TABLE = Path(__file__).resolve().parents[1] / "docs" / "architectures.json"
SAMPLE = ["gemma3", "qwen2_vl", "llava", "qwen3_vl", "idefics3", "glm4v_moe"]


def _working() -> list[str]:
    return [r["model_type"] for r in load_table(TABLE)[1] if r["status"] == "works"]


def _skip_unless_table_version():
    """The table holds for the transformers it was made with (the locked one); under another the drift report of
    make test-latest says what changed."""
    made_with = load_table(TABLE)[0]
    if transformers.__version__ != made_with:
        pytest.skip(f"docs/architectures.json was made with transformers {made_with}, "
                    f"{transformers.__version__} is installed: make setup installs the locked version; "
                    "make test-latest reports the drift (refresh the lock and the table together)")


@pytest.mark.parametrize("model_type", SAMPLE)
def test_sample_of_architectures_work(tmp_path, model_type):
    row = run_one(model_type, tmp_path)
    assert row["status"] == "works", row
    # Idefics3 places its image features without a placeholder-mask method to compare with
    assert row["image_tokens"] > 0 and row["model_mask_agrees"] is (None if model_type == "idefics3" else True)


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


@pytest.mark.parametrize("model_type", ["florence2", "t5gemma2", "blip-2", "mllama"])
def test_refused_before_any_weight(model_type):
    problems = config_problems(AutoConfig.for_model(model_type))
    assert problems
    if model_type in ("florence2", "t5gemma2"):
        assert "encoder-decoder" in problems[0]
    if model_type == "mllama":
        assert "cross-attention" in problems[0]


def test_vision_modules_are_the_image_feature_path():
    """Whatever their names, the modules get_image_features runs are the vision modules (no language model)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlm4vla_core.backbones.generic import structure, vision_names
    from vlm4vla_core.backbones.zoo import tiny_config

    expected = {"deepseek_vl": ["vision_model", "aligner"], "ernie4_5_vl_moe": ["vision_tower", "resampler_model"],
                "llava": ["vision_tower", "multi_modal_projector"], "qwen2_vl": ["visual"]}
    for model_type, names in expected.items():
        with torch.device("meta"):
            vlm = AutoModelForImageTextToText.from_config(tiny_config(model_type))
        base, problems = structure(vlm)
        assert not problems and vision_names(base) == names, model_type


def test_table_is_current_enough():
    _skip_unless_table_version()
    rows = load_table(TABLE)[1]
    from vlm4vla_core.backbones.zoo import architectures

    assert {r["model_type"] for r in rows} == set(architectures())
    assert set(SAMPLE) <= set(_working()) and len(_working()) >= 30


def test_docs_table_is_the_scripts_output():
    from vlm4vla_core.backbones.sweep import END, START, markdown

    page = (TABLE.parents[1] / "docs" / "architectures.md").read_text()
    version, rows = load_table(TABLE)
    assert page.split(START, 1)[1].split(END, 1)[0].strip() == markdown(rows, version).strip()
    assert START not in (TABLE.parents[1] / "README.md").read_text()  # the README holds no generated table
    import subprocess

    md = subprocess.run(["git", "ls-files", "*.md"], cwd=TABLE.parents[1], capture_output=True, text=True,
                        check=True).stdout.split()
    assert [f for f in md if START in (TABLE.parents[1] / f).read_text()] == ["docs/architectures.md"]  # one home


def test_table_is_made_with_the_locked_transformers():
    from vlm4vla_core.lock import read_lock

    assert load_table(TABLE)[0] == read_lock()["transformers"], "refresh the lock and the table together"


def test_drift_names_added_removed_and_changed(tmp_path):
    from vlm4vla_core.backbones.sweep import drift, drift_text

    old = [dict(model_type="a", status="works"), dict(model_type="b", status="fails"), dict(model_type="c", status="works")]
    new = [dict(model_type="a", status="works"), dict(model_type="b", status="works"), dict(model_type="d", status="fails")]
    changes = drift(old, new)
    assert changes == {"added": {"d": "fails"}, "removed": ["c"], "changed": {"b": ("fails", "works")}}
    text = drift_text("5.24.0", "5.25.0", changes)
    assert "1 added, 1 removed, 1 changed" in text and "b" in text and "fails -> works" in text
    with pytest.raises(ValueError, match="not an architecture table"):
        (tmp_path / "old.json").write_text("[]")
        load_table(tmp_path / "old.json")


@pytest.mark.all_archs
@pytest.mark.parametrize("model_type", _working() if TABLE.is_file() else [])
def test_every_working_architecture(tmp_path, model_type):
    _skip_unless_table_version()
    row = run_one(model_type, tmp_path)
    assert row["status"] == "works", row


def test_the_sweep_writes_its_table_to_a_docs_page_never_the_readme(tmp_path):
    from vlm4vla_core.backbones.sweep import END, START, main, page_with_table

    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{START}\nold\n{END}\n")
    with pytest.raises(SystemExit, match="not to the README"):
        main(["--out", str(tmp_path / "a.json"), "--docs", str(readme), "--only"])
    page = tmp_path / "docs" / "architectures.md"
    page.parent.mkdir()
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no <!-- architectures:start -->"):
        main(["--out", str(tmp_path / "a.json"), "--docs", str(page), "--only"])
    assert page_with_table(f"a\n{START}\nold\n{END}\nb\n", "new\n") == f"a\n{START}\nnew\n{END}\nb\n"
    # without --docs the table goes next to the JSON, unless that file is a documentation page
    (tmp_path / "docs" / "t.md").write_text(f"{START}\n{END}\n")
    with pytest.raises(SystemExit, match="is a documentation page; pass --docs"):
        main(["--out", str(tmp_path / "docs" / "t.json"), "--only"])
