"""A general (not robot) image-text corpus whose answers are known by construction.

Each scene is a flat canvas with one to four shapes (circle, square, triangle) in five colours and two
sizes, drawn at random non-overlapping places on a plain light background: images and words unlike the
Meta-World frames the VLA is trained on. The scene description (``scene``: every object's shape,
colour, size, centre and radius, in pixels) is kept with each record, and every answer is a function of
it (``answers``), so a held-out answer can be recomputed from the description alone.

Question kinds (all scored by exact match after normalisation):

- ``count``: how many shapes, or how many of one colour (each colour shown, and one colour that is not);
- ``color``: the colour of the only object of a shape (and size, where the shape alone is ambiguous);
- ``shape``: the shape of the only object of a colour;
- ``size``: is the only object of a colour and shape small or large;
- ``relation``: is one object left or right of another (asked when their centres differ by at least
  ``RELATION_MARGIN`` of the width), each object named by its unique description.

The train split adds a ``caption`` turn per scene (the objects from left to right), which teaches the
words; the held-out split asks only the scored kinds. Train and held-out scenes come from disjoint seed
ranges. A split is written as the Meta-World VQA sets are: ``<split>/data.json`` (the LLaVA conversation
form, ``vlm4vla_core.vqa.sets``) with PNG images under ``<split>/images/``.

The corpus is the general-pretraining data of the miniature study: a tiny backbone fine-tuned on it for
more steps answers more held-out questions, which grades the backbones' general VQA ability before any
embodied data (config ``pretraining:``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 215), "yellow": (235, 200, 30),
          "purple": (140, 60, 175)}
SIZES = {"small": 0.11, "large": 0.2}  # radius as a fraction of the image width
BACKGROUNDS = ((245, 245, 240), (235, 240, 250), (250, 240, 235), (238, 238, 238))
KINDS = ("count", "color", "shape", "size", "relation")
RELATION_MARGIN = 0.10
#: seeds of the two splits never overlap: held-out scenes start here
HELDOUT_SEED0 = 1_000_000


def sample_scene(seed: int, image_size: int) -> dict:
    """A random scene: 1-4 objects that do not overlap and stay inside the canvas."""
    rng = np.random.default_rng([seed, 7])
    n = int(rng.integers(1, 4))
    objects = []
    while len(objects) < n:
        size = str(rng.choice(list(SIZES)))
        r = SIZES[size] * image_size
        for _ in range(100):
            x, y = rng.uniform(r + 1, image_size - r - 1, size=2)
            if all(np.hypot(x - o["x"], y - o["y"]) > r + o["r"] + 2 for o in objects):
                break
        else:  # no room left for this size: a smaller scene
            break
        objects.append(dict(shape=str(rng.choice(SHAPES)), color=str(rng.choice(list(COLORS))), size=size,
                            x=round(float(x), 2), y=round(float(y), 2), r=round(float(r), 2)))
    return dict(seed=seed, width=image_size, background=list(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]),
                objects=objects)


def render(scene: dict) -> np.ndarray:
    """The scene as an HxWx3 uint8 image."""
    from PIL import Image, ImageDraw

    w = scene["width"]
    img = Image.new("RGB", (w, w), tuple(scene["background"]))
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        x, y, r, fill = o["x"], o["y"], o["r"], COLORS[o["color"]]
        if o["shape"] == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif o["shape"] == "square":
            s = r * 0.85
            draw.rectangle([x - s, y - s, x + s, y + s], fill=fill)
        else:
            draw.polygon([(x, y - r), (x - r * 0.95, y + r * 0.8), (x + r * 0.95, y + r * 0.8)], fill=fill)
    return np.asarray(img, dtype=np.uint8)


def describe(o: dict, objects: list[dict]) -> str | None:
    """The shortest unique noun phrase of an object in its scene ("the red circle", "the small square"),
    or None when no phrase of colour, size and shape singles it out."""
    for keys in (("color",), ("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
        same = [p for p in objects if all(p[k] == o[k] for k in keys)]
        if len(same) == 1:
            words = [o[k] for k in keys]
            if "shape" not in keys:
                words.append("object")
            return " ".join(words)
    return None


def answers(scene: dict) -> list[dict]:
    """Every question the scene decides, with its answer: ``{type, question, answer}``."""
    objs = scene["objects"]
    out = [dict(type="count", question="How many shapes are there? Answer with a number.", answer=str(len(objs)))]
    present = [c for c in COLORS if any(o["color"] == c for o in objs)]
    absent = [c for c in COLORS if c not in present]
    for color in present + absent[scene["seed"] % len(absent):][:1]:  # the colours shown and one that is not
        n = sum(o["color"] == color for o in objs)
        out.append(dict(type="count", question=f"How many {color} shapes are there? Answer with a number.",
                        answer=str(n)))
    for o in objs:
        same_shape = [p for p in objs if p["shape"] == o["shape"]]
        if len(same_shape) == 1:
            out.append(dict(type="color", question=f"What color is the {o['shape']}? Answer with one word.",
                            answer=o["color"]))
        elif sum(p["size"] == o["size"] for p in same_shape) == 1:
            out.append(dict(type="color", question=f"What color is the {o['size']} {o['shape']}? Answer with "
                                                   "one word.", answer=o["color"]))
        if sum(p["color"] == o["color"] for p in objs) == 1:
            out.append(dict(type="shape", question=f"What shape is the {o['color']} object? Answer with one word.",
                            answer=o["shape"]))
        if sum(p["color"] == o["color"] and p["shape"] == o["shape"] for p in objs) == 1:
            out.append(dict(type="size", question=f"Is the {o['color']} {o['shape']} small or large?",
                            answer=o["size"]))
    named = [(o, describe(o, objs)) for o in objs]
    for i, (a, da) in enumerate(named):
        for b, db in named[i + 1:]:
            if da is None or db is None or abs(a["x"] - b["x"]) < RELATION_MARGIN * scene["width"]:
                continue
            first, second, d1, d2 = (a, b, da, db) if (scene["seed"] + i) % 2 == 0 else (b, a, db, da)
            out.append(dict(type="relation", question=f"Is the {d1} left or right of the {d2}? Answer left or "
                                                      "right.", answer="left" if first["x"] < second["x"] else "right"))
    return out


def caption(scene: dict) -> str:
    """The objects from left to right, e.g. "a large red circle, a small blue square"."""
    return ", ".join(f"a {o['size']} {o['color']} {o['shape']}" for o in sorted(scene["objects"], key=lambda o: o["x"]))


def scene_records(scene: dict, image: str, split: str, questions_per_scene: int,
                  rng: np.random.Generator) -> list[dict]:
    """The records of one scene: up to ``questions_per_scene`` questions drawn over the kinds (one per kind
    first), plus a caption conversation in the train split."""
    qs = answers(scene)
    by_kind: dict[str, list[dict]] = {}
    for q in qs:
        by_kind.setdefault(q["type"], []).append(q)
    kinds = [k for k in KINDS if k in by_kind]
    rng.shuffle(kinds)
    picked = [by_kind[k][int(rng.integers(len(by_kind[k])))] for k in kinds][:questions_per_scene]
    records = [dict(id=f"{scene['seed']}/{q['type']}/{j}", image=image, type=q["type"], rule="exact",
                    conversations=[{"from": "human", "value": "<image>\n" + q["question"]},
                                   {"from": "gpt", "value": q["answer"]}], scene=scene)
               for j, q in enumerate(picked)]
    if split == "train":
        records.append(dict(id=f"{scene['seed']}/caption", image=image, type="caption", rule="exact",
                            conversations=[{"from": "human", "value": "<image>\nDescribe the image."},
                                           {"from": "gpt", "value": caption(scene)}], scene=scene))
    return records


def generate(out: Path, split: str, scenes: int, image_size: int = 112, questions_per_scene: int = 3,
             progress=None) -> int:
    """Write one split of ``scenes`` scenes. Returns the number of records."""
    from PIL import Image

    from vlm4vla_core.io import atomic_dir

    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    seed0 = 0 if split == "train" else HELDOUT_SEED0
    records: list[dict] = []
    with atomic_dir(Path(out) / split) as tmp:
        (tmp / "images").mkdir()
        for seed in range(seed0, seed0 + scenes):
            scene = sample_scene(seed, image_size)
            name = f"images/{seed}.png"
            Image.fromarray(render(scene)).save(tmp / name)
            records += scene_records(scene, name, split, questions_per_scene, np.random.default_rng([seed, 11]))
            if progress is not None:
                progress(1)
        (tmp / "data.json").write_text(json.dumps(records, indent=1))
    return len(records)
