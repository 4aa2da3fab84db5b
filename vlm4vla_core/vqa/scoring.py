"""Scorers of generated VQA answers, one per rule: exact match, multiple choice, pointing.

``score(rule, prediction, item)`` -> 1.0 or 0.0. ``item`` holds the reference ``answer`` and,
for multiple choice, the ``choices`` (letter -> text); for pointing, the ``tolerance`` (in the
answer's own units). Answers are compared after ``normalize``: lower case, articles and
punctuation removed, whitespace collapsed (the VQAv2 normalisation, without its contractions map).
"""

from __future__ import annotations

import re

RULES = ("exact", "multiple_choice", "point")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize(text: str) -> str:
    text = str(text).strip().lower()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def choice_of(prediction: str, choices: dict[str, str]) -> str | None:
    """The option a free-text answer picks: a bare letter ("B", "(b)", "B. open ..."), else the
    option whose text it equals; None when it picks none or is ambiguous."""
    text = str(prediction).strip()
    letters = {k.upper() for k in choices}
    m = re.match(r"^\(?([A-Za-z])\)?(?:[.):\s]|$)", text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    hits = [k.upper() for k, v in choices.items() if normalize(v) == normalize(text)]
    return hits[0] if len(hits) == 1 else None


def multiple_choice(prediction: str, answer: str, choices: dict[str, str]) -> float:
    picked = choice_of(prediction, choices)
    return float(picked is not None and picked == str(answer).strip().upper())


def parse_point(text: str) -> tuple[float, float] | None:
    """The first two numbers of an answer such as "(43, 61)"; None when it has fewer."""
    nums = _NUMBER.findall(str(text))
    return (float(nums[0]), float(nums[1])) if len(nums) >= 2 else None


def point(prediction: str, answer: str, tolerance: float) -> float:
    """1 when the predicted point lies within ``tolerance`` (Euclidean) of the reference point."""
    p, a = parse_point(prediction), parse_point(answer)
    if p is None or a is None:
        return 0.0
    return float((p[0] - a[0]) ** 2 + (p[1] - a[1]) ** 2 <= tolerance**2)


def score(rule: str, prediction: str, item: dict) -> float:
    if rule == "exact":
        return exact_match(prediction, item["answer"])
    if rule == "multiple_choice":
        return multiple_choice(prediction, item["answer"], item["choices"])
    if rule == "point":
        return point(prediction, item["answer"], float(item.get("tolerance", 10)))
    raise ValueError(f"unknown scoring rule {rule!r} (known: {', '.join(RULES)})")
