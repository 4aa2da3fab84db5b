"""Image-conversation data for the SFT stage and the VQA evaluation, in two forms.

- JSON (LLaVA / Qwen-VL fine-tuning form): a list of records ``{"id", "image": path,
  "conversations": [{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}``
  (also ``"messages"`` with ``role``/``content`` user/assistant). Image paths are relative to the
  JSON file's folder (or ``image_folder``). A ``.jsonl`` file holds one record per line.
- Parquet tables (a file, or a folder of them as a LeRobot-style ``data/`` tree): one row per
  question with columns ``image`` (PNG/JPEG bytes, ``{"bytes", "path"}`` as Hugging Face datasets
  writes it, or a path), ``question`` and ``answer``.

Optional per-record keys used by the evaluation: ``rule`` (exact, multiple_choice, point),
``choices`` (letter -> text), ``tolerance`` and ``type`` (the question kind, reported per kind).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HUMAN, ASSISTANT = ("human", "user"), ("gpt", "assistant")


@dataclass
class Sample:
    id: str
    image: object  # a path, encoded bytes or an HxWx3 uint8 array
    turns: list[tuple[str, str]]  # (question, answer), the first question with the image
    rule: str = "exact"
    choices: dict | None = None
    tolerance: float | None = None
    type: str = "vqa"
    extra: dict = field(default_factory=dict)

    def pixels(self) -> np.ndarray:
        from PIL import Image

        if isinstance(self.image, np.ndarray):
            return self.image
        src = io.BytesIO(self.image) if isinstance(self.image, (bytes, bytearray)) else self.image
        with Image.open(src) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    @property
    def question(self) -> str:
        return self.turns[0][0]

    @property
    def answer(self) -> str:
        return self.turns[0][1]

    def scoring_item(self) -> dict:
        return dict(answer=self.answer, choices=self.choices, tolerance=self.tolerance)


def _clean(question: str) -> str:
    """The question text without LLaVA's ``<image>`` marker (the prompt places the image itself)."""
    return question.replace("<image>", "").strip()


def turns_of(messages: list[dict]) -> list[tuple[str, str]]:
    turns, question = [], None
    for m in messages:
        who = m.get("from", m.get("role"))
        text = m.get("value", m.get("content"))
        if isinstance(text, list):  # Qwen-VL content parts
            text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
        if who in HUMAN:
            question = _clean(text) if question is None else question + "\n" + _clean(text)
        elif who in ASSISTANT:
            if question is None:
                raise ValueError(f"an assistant turn without a question before it: {text!r}")
            turns.append((question, str(text).strip()))
            question = None
        elif who != "system":
            raise ValueError(f"unknown speaker {who!r} (expected human/user or gpt/assistant)")
    if not turns:
        raise ValueError("a conversation without a question-answer pair")
    return turns


def _record(rec: dict, base: Path, i: int) -> Sample:
    image = rec.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise ValueError(f"record {rec.get('id', i)}: {len(image)} images; one image per sample is supported")
        image = image[0]
    if image is None:
        raise ValueError(f"record {rec.get('id', i)}: no image")
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, str):
        image = base / image
    if "conversations" in rec or "messages" in rec:
        turns = turns_of(rec.get("conversations") or rec.get("messages"))
    else:
        turns = [(_clean(rec["question"]), str(rec["answer"]).strip())]
    choices = rec.get("choices")
    if isinstance(choices, str):
        choices = json.loads(choices)
    tol = rec.get("tolerance")
    known = {"id", "image", "conversations", "messages", "question", "answer", "rule", "choices", "tolerance", "type"}
    return Sample(id=str(rec.get("id", i)), image=image, turns=turns, rule=rec.get("rule") or "exact",
                  choices=choices, tolerance=None if tol is None or tol != tol else float(tol),
                  type=rec.get("type") or "vqa", extra={k: v for k, v in rec.items() if k not in known})


def load(path: str | Path, image_folder: str | Path | None = None) -> list[Sample]:
    """Every sample of a JSON/JSONL file, a parquet file or a folder of parquet files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files and (path / "data.json").is_file():
            return load(path / "data.json", image_folder)
        if not files:
            raise FileNotFoundError(f"{path}: no *.parquet files and no data.json")
        return [s for f in files for s in load(f, image_folder)]
    base = Path(image_folder) if image_folder else path.parent
    if path.suffix == ".parquet":
        import pandas as pd

        records = pd.read_parquet(path).to_dict("records")
    elif path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        records = json.loads(path.read_text())
    return [_record(r, base, i) for i, r in enumerate(records)]
