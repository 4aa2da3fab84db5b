"""The general shapes corpus and the pretraining variants: every held-out answer recomputed from its
scene description by rules written here, the rendered pixels against the description, disjoint
splits, and the config of chained pretraining levels."""

import json
import re

import numpy as np
import pytest

from vlm4vla_core.config import ConfigError, Study, validate
from vlm4vla_core.vqa import shapes

SIZE = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    shapes.generate(root, "train", 40, image_size=SIZE)
    shapes.generate(root, "heldout", 60, image_size=SIZE, questions_per_scene=5)
    return root


def _words(phrase: str) -> list[str]:
    return [w for w in phrase.split() if w != "object"]


def _matches(obj: dict, phrase: str) -> bool:
    """An object fits a noun phrase when every word of the phrase is its colour, size or shape."""
    return all(w in (obj["color"], obj["size"], obj["shape"]) for w in _words(phrase))


def _the(objects: list[dict], phrase: str) -> dict:
    hits = [o for o in objects if _matches(o, phrase)]
    assert len(hits) == 1, f"'the {phrase}' names {len(hits)} objects"
    return hits[0]


def recompute(question: str, scene: dict) -> str:
    """The answer of a question from the scene description alone (independent of vqa.shapes.answers)."""
    objs = scene["objects"]
    if m := re.fullmatch(r"How many shapes are there\? Answer with a number\.", question):
        return str(len(objs))
    if m := re.fullmatch(r"How many (\w+) shapes are there\? Answer with a number\.", question):
        return str(sum(o["color"] == m[1] for o in objs))
    if m := re.fullmatch(r"What color is the ([\w ]+)\? Answer with one word\.", question):
        return _the(objs, m[1])["color"]
    if m := re.fullmatch(r"What shape is the (\w+) object\? Answer with one word\.", question):
        return _the(objs, m[1])["shape"]
    if m := re.fullmatch(r"Is the (\w+) (\w+) small or large\?", question):
        return _the(objs, f"{m[1]} {m[2]}")["size"]
    if m := re.fullmatch(r"Is the ([\w ]+) left or right of the ([\w ]+)\? Answer left or right\.", question):
        a, b = _the(objs, m[1]), _the(objs, m[2])
        assert abs(a["x"] - b["x"]) >= shapes.RELATION_MARGIN * scene["width"]
        return "left" if a["x"] < b["x"] else "right"
    raise AssertionError(f"unknown question form: {question!r}")


def test_every_heldout_answer_follows_from_the_scene(corpus):
    records = json.loads((corpus / "heldout" / "data.json").read_text())
    kinds = {r["type"] for r in records}
    assert kinds == set(shapes.KINDS)
    for r in records:
        question = r["conversations"][0]["value"].removeprefix("<image>\n")
        assert recompute(question, r["scene"]) == r["conversations"][1]["value"], r["id"]
    answers = {r["type"]: set() for r in records}
    for r in records:
        answers[r["type"]].add(r["conversations"][1]["value"])
    assert answers["relation"] == {"left", "right"} and answers["size"] == {"small", "large"}
    assert len(answers["color"]) >= 4 and len(answers["shape"]) == 3 and len(answers["count"]) >= 3


def test_rendered_pixels_show_the_described_objects(corpus):
    from PIL import Image

    for r in json.loads((corpus / "heldout" / "data.json").read_text()):
        scene = r["scene"]
        img = np.asarray(Image.open(corpus / "heldout" / r["image"]).convert("RGB"))
        assert img.shape == (SIZE, SIZE, 3)
        painted = (img != np.array(scene["background"], dtype=np.uint8)).any(-1)
        for o in scene["objects"]:
            x, y = int(round(o["x"])), int(round(o["y"]))
            assert tuple(img[y, x]) == shapes.COLORS[o["color"]], (r["id"], o)
            assert o["r"] <= x <= SIZE - o["r"] and o["r"] <= y <= SIZE - o["r"]
        expected = sum(np.pi * o["r"] ** 2 * {"circle": 1, "square": 4 * 0.85**2 / np.pi,
                                                "triangle": 0.95 * 1.8 / np.pi}[o["shape"]] for o in scene["objects"])
        edge = sum(8 * o["r"] for o in scene["objects"])  # anti-aliasing and inclusive edges: about a perimeter
        assert abs(painted.sum() - expected) <= edge, r["id"]


def test_objects_do_not_overlap_and_splits_share_no_scene(corpus):
    train = json.loads((corpus / "train" / "data.json").read_text())
    heldout = json.loads((corpus / "heldout" / "data.json").read_text())
    for r in train + heldout:
        objs = r["scene"]["objects"]
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                assert np.hypot(a["x"] - b["x"], a["y"] - b["y"]) > a["r"] + b["r"]
    assert not {r["scene"]["seed"] for r in train} & {r["scene"]["seed"] for r in heldout}
    assert {r["type"] for r in train} == {*shapes.KINDS, "caption"}
    assert "caption" not in {r["type"] for r in heldout}
    caption = next(r for r in train if r["type"] == "caption")
    left_to_right = sorted(caption["scene"]["objects"], key=lambda o: o["x"])
    assert caption["conversations"][1]["value"] == ", ".join(
        f"a {o['size']} {o['color']} {o['shape']}" for o in left_to_right)


def test_same_seed_same_scene_and_image():
    a, b = shapes.sample_scene(123, SIZE), shapes.sample_scene(123, SIZE)
    assert a == b and np.array_equal(shapes.render(a), shapes.render(b))
    assert shapes.sample_scene(124, SIZE) != a


def _study(**extra):
    """The demo study with one tiny backbone, two chained pretraining levels and an SFT variant of the top one."""
    import yaml

    from vlm4vla_core.config import ROOT

    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw.update(
        backbones={"tiny-q": {"family": "qwen2_5_vl", "source": "tiny", "ablations": ["full"]}},
        vqa_sets={"shapes": {"generate": "shapes", "train_scenes": 10, "heldout_scenes": 5}},
        pretraining={"tiny-q-g1": {"base": "tiny-q", "dataset": "shapes"},
                     "tiny-q-g2": {"base": "tiny-q-g1", "dataset": "shapes", "ablations": ["full", "from_scratch"]}},
        embodied_sft={"tiny-q-g2-sft": {"base": "tiny-q-g2", "dataset": "shapes"}},
    )
    raw.update(extra)
    return raw


def test_pretraining_levels_chain_and_become_backbones():
    study = Study.from_dict(validate(_study()))
    full = study.with_sft_variants()
    for name, base in (("tiny-q-g1", "tiny-q"), ("tiny-q-g2", "tiny-q-g1"), ("tiny-q-g2-sft", "tiny-q-g2")):
        assert full.backbones[name].sft == base
        assert full.backbones[name].family == "qwen2_5_vl" and full.backbones[name].source == "sft"
        assert study.root_backbone(name) == "tiny-q"
    assert full.backbones["tiny-q-g2"].ablations == ("full", "from_scratch")
    assert full.with_sft_variants().raw == full.raw


@pytest.mark.parametrize("change, message", [
    (dict(pretraining={"g1": {"base": "nope", "dataset": "shapes"}}), "key 'pretraining.g1.base'"),
    (dict(pretraining={"g1": {"base": "g2", "dataset": "shapes"}, "g2": {"base": "g1", "dataset": "shapes"}}),
     "form a cycle"),
    (dict(embodied_sft={"tiny-q-g1": {"base": "tiny-q", "dataset": "shapes"}}),
     "key 'embodied_sft.tiny-q-g1': the name is already a key of 'pretraining'"),
    (dict(vqa_sets={"shapes": {"generate": "shapes", "heldout_scenes": 5}}), "missing key 'vqa_sets.shapes.train_scenes'"),
])
def test_bad_pretraining_config_names_the_key(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(_study(**change))
