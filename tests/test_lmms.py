"""Standard VQA benchmarks through lmms-eval (stage vqa-lmms): the family -> backend table, the
config keys, and a real MMMU evaluation of a tiny checkpoint on a local copy of the dataset, run in
the lmms-eval environment (make lmms-env) when it is there."""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlm4vla_core.config import ConfigError, load_config
from vlm4vla_core.study import check as validate
from vlm4vla_core.vqa import lmms

ROOT = Path(__file__).resolve().parents[1]
SIZE = 56

# MMMU validation rows in the dataset's own columns (lmms-eval's mmmu_val reads id, question,
# options, answer, question_type and image_<k>): four multiple-choice questions, one image each.
MMMU_ROWS = [
    ("validation_Art_1", "<image 1> Which colour fills most of the picture?", ["red", "green", "blue", "grey"], "A"),
    ("validation_Art_2", "<image 1> How many objects are shown?", ["one", "two", "three", "four"], "B"),
    ("validation_Physics_1", "<image 1> Which force acts on the block?", ["gravity", "none", "magnetism", "wind"], "A"),
    ("validation_Physics_2", "What is shown in <image 1>?", ["a circuit", "a lever", "a pulley", "a spring"], "C"),
]

WRITE_MMMU = r"""
import sys
import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
import json

rows, out, fmt = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
cols = {k: [] for k in ("id", "question", "options", "answer", "question_type", "image_1")}
for i, (id_, q, options, answer) in enumerate(rows):
    cols["id"].append(id_)
    cols["question"].append(q)
    cols["options"].append(repr(options))  # a string, as in the hub dataset
    cols["answer"].append(answer)
    cols["question_type"].append("multiple-choice")
    cols["image_1"].append(PILImage.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
features = Features({k: Value("string") for k in cols if k != "image_1"} | {"image_1": Image()})
ds = Dataset.from_dict(cols, features=features)
if fmt == "hub":  # the hub repository's layout: data/<split>-00000-of-00001.parquet
    import os
    os.makedirs(out + "/data", exist_ok=True)
    ds.to_parquet(out + "/data/validation-00000-of-00001.parquet")
else:
    from datasets import DatasetDict
    DatasetDict({"validation": ds}).save_to_disk(out)
"""


def _lmms_python() -> str | None:
    python = os.environ.get("VLM4VLA_LMMS_PYTHON") or str(ROOT / ".venv-lmms" / "bin" / "python")
    return python if Path(python).exists() else None


# --- the core environment: no lmms-eval needed


def test_families_map_to_lmms_eval_backends():
    assert lmms.backend_of("qwen2_5_vl") == "qwen2_5_vl"
    assert lmms.backend_of("qwen3_vl") == lmms.backend_of("qwen3_vl_moe") == "qwen3_vl"
    assert lmms.backend_of("internvl") == "internvl_hf"
    for family in ("paligemma", "kosmos2"):
        with pytest.raises(lmms.LmmsError, match=rf"family '{family}' has no lmms-eval .*vqa-eval"):
            lmms.backend_of(family)
    with pytest.raises(lmms.LmmsError, match="unknown backbone family 'qwen25vl'"):
        lmms.backend_of("qwen25vl")


def test_unsupported_family_stops_the_stage_with_its_name(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlm4vla_core", "vqa-lmms", "--family", "kosmos2", "--source", "x",
                          "--task", "mmmu_val", "--set-name", "mmmu", "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "family 'kosmos2'" in res.stderr and "vqa-eval" in res.stderr
    assert not (tmp_path / "r.json").exists()


def test_local_dataset_forms(tmp_path):
    (tmp_path / "hub" / "data").mkdir(parents=True)
    (tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet").write_bytes(b"")
    assert lmms.dataset_override(tmp_path / "hub", "validation") == dict(dataset_path=str(tmp_path / "hub"),
                                                                          dataset_kwargs={})
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "dataset_dict.json").write_text("{}")
    assert lmms.dataset_override(tmp_path / "disk", "validation")["dataset_kwargs"] == {"load_from_disk": True}
    one = tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet"
    assert lmms.dataset_override(one, "validation") == dict(
        dataset_path="parquet", dataset_name=None, dataset_kwargs={"data_files": {"validation": str(one)}})
    with pytest.raises(lmms.LmmsError, match="no such file"):
        lmms.dataset_override(tmp_path / "nowhere", "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(lmms.LmmsError, match="neither a save_to_disk folder"):
        lmms.dataset_override(tmp_path / "empty", "validation")
    assert lmms.stage_options({"framework": "lmms-eval", "task": "mmmu_val", "data_path": "data/mmmu", "limit": 5}) \
        == ["--task", "mmmu_val", "--data-path", "data/mmmu", "--limit", "5"]


def test_venv_and_conda_environments_pin_the_same_packages():
    import yaml

    reqs = [line.strip() for line in (ROOT / "envs" / "lmms-eval-requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    conda = yaml.safe_load((ROOT / "envs" / "lmms-eval.yaml").read_text())["dependencies"]
    assert [d for d in conda if isinstance(d, dict)][0]["pip"] == reqs
    pins = dict(r.split("==", 1) for r in reqs)
    assert all(pins.values()) and "torchvision" in pins and pins["lmms-eval"] == lmms.LMMS_EVAL_VERSION
    assert pins["torch"].split(",")[0] == "2.13.0"  # the core environment's torch


def _error(config) -> str:
    with pytest.raises(ConfigError) as err:
        validate(config)
    return str(err.value)


def test_config_accepts_and_refuses_the_lmms_eval_keys():
    demo = load_config(ROOT / "config" / "demo.yaml")
    good = copy.deepcopy(demo)
    good["vqa_sets"]["mmmu"] = {"framework": "lmms-eval", "task": "mmmu_val", "data_path": "data/mmmu",
                                "python": ".venv-lmms/bin/python", "limit": 10}
    validate(good)
    bad = copy.deepcopy(good)
    del bad["vqa_sets"]["mmmu"]["task"]
    assert "vqa_sets.mmmu" in _error(bad) and "'task'" in _error(bad)
    bad = copy.deepcopy(good)
    bad["vqa_sets"]["mmmu"]["framework"] = "vlmevalkit"
    assert "vqa_sets.mmmu.framework" in _error(bad)
    bad = copy.deepcopy(good)
    bad["vqa_sets"]["mmmu"]["heldout_path"] = "data/mmmu.parquet"
    assert "vqa_sets.mmmu.heldout_path" in _error(bad)
    bad = copy.deepcopy(good)
    bad["vqa_sets"]["mmmu"]["taks"] = "mmmu_val"
    assert "vqa_sets.mmmu.taks" in _error(bad) and "did you mean 'task'" in _error(bad)
    bad = copy.deepcopy(good)
    bad["embodied_sft"]["tiny-qwen2.5-vl-gen800-mwvqa"]["dataset"] = "mmmu"  # no training split
    assert "embodied_sft.tiny-qwen2.5-vl-gen800-mwvqa.dataset" in _error(bad)
    bad = copy.deepcopy(demo)
    bad["vqa_sets"]["metaworld-vqa"]["task"] = "mmmu_val"  # not an lmms-eval set
    assert "vqa_sets.metaworld-vqa.task" in _error(bad) and "framework: lmms-eval" in _error(bad)


# --- the lmms-eval environment


@pytest.fixture(scope="module")
def lmms_python():
    python = _lmms_python()
    if python is None:
        pytest.skip("no lmms-eval environment: run `make lmms-env` (.venv-lmms) or set VLM4VLA_LMMS_PYTHON")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("form", ["hub", "disk"])
def test_mmmu_of_a_tiny_checkpoint_from_a_local_copy(lmms_python, tmp_path, form):
    from vlm4vla_core.backbones import get_adapter

    ckpt = tmp_path / "tiny-qwen2.5-vl"
    get_adapter("qwen2_5_vl").make_tiny(ckpt, image_size=SIZE, seed=0)
    data = tmp_path / "mmmu"
    subprocess.run([lmms_python, "-c", WRITE_MMMU, json.dumps(MMMU_ROWS), str(data), form], check=True,
                   capture_output=True, text=True)
    out = tmp_path / "vqa" / "tiny-qwen2.5-vl" / "mmmu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    started = time.time()
    res = subprocess.run([lmms_python, "-m", "vlm4vla_core", "vqa-lmms", "--family", "qwen2_5_vl", "--source",
                          str(ckpt), "--task", "mmmu_val", "--data-path", str(data), "--limit", "3", "--set-name",
                          "mmmu", "--num-threads", "2", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    print(f"vqa-lmms ({form}): {time.time() - started:.1f} s")
    rep = json.loads(out.read_text())
    assert rep["n"] == 3 and rep["set"] == "mmmu"  # the score is recomputed from the predictions below
    assert rep["source"].startswith("measured: mmmu, lmms-eval 0.7.3 task mmmu_val, metric mmmu_acc")
    assert rep["lmms_eval"]["n-samples"]["mmmu_val"] == {"original": 4, "effective": 3}
    assert [p["doc_id"] for p in rep["predictions"]] == [0, 1, 2]
    assert [p["target"] for p in rep["predictions"]] == [r[3] for r in MMMU_ROWS[:3]]
    # MMMU's own extraction (a letter it cannot find in the answer is drawn at random, seeded)
    hits = [p["mmmu_acc"]["parsed_pred"] == [p["target"]] for p in rep["predictions"]]
    assert rep["score"] == round(100 * sum(hits) / 3, 2)

    from vlm4vla_core.aggregate.results import measured_vqa

    assert measured_vqa([out]) == {"mmmu": {"tiny-qwen2.5-vl": dict(score=rep["score"], source=rep["source"] + " (n=3)")}}
