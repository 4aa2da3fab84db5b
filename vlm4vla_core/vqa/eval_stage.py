"""VQA evaluation stage: a backbone (hub, SFT or tiny checkpoint) answers a held-out VQA set by
greedy generation and each answer is scored by the sample's rule (``vlm4vla_core.vqa.scoring``).

``python -m vlm4vla_core vqa-eval --family F --source S --data D --out R.json`` writes the score
(percent correct over all questions), its breakdown per question kind and every prediction; the
aggregate stage reads the score as the backbone's measured VQA score, labelled with this set.

The prompt is the family's native prompt of the question (``adapter.vqa_prompt_ids``, the one the
SFT stage trains on); decoding is greedy, without a key/value cache (one forward per new token),
and stops at the family's end-of-turn token or after ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def generate_answer(adapter, processor, vlm, image: np.ndarray, question: str, max_new_tokens: int = 12) -> str:
    import torch

    from vlm4vla_core.backbones.base import resize_square, right_pad

    adapter.check_image_size(processor)
    prompt = list(adapter.vqa_prompt_ids(processor, question))
    end, pad = adapter.placeholder_id(processor), adapter.pad_id(processor)
    pixels = adapter.pixel_inputs(processor, resize_square([image], processor.image_size))
    device = next(vlm.parameters()).device
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            batch = right_pad([prompt + out], pad)
            batch["query_index"] = torch.tensor([len(prompt)])
            batch.update(pixels)
            batch.update(adapter.extra_inputs(processor, batch))
            batch.pop("query_index")
            batch = {k: v.to(device) for k, v in batch.items()}
            token = int(vlm(**batch).logits[0, -1].argmax())
            if token == end:
                break
            out.append(token)
    return processor.tokenizer.decode(out, skip_special_tokens=True).strip()


def evaluate(family: str, source: str, samples, image_size: int | None = None, max_new_tokens: int = 12,
             limit: int | None = None) -> dict:
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.progress import progress
    from vlm4vla_core.vqa.scoring import score

    adapter = get_adapter(family)
    vlm, processor = adapter.load(source, image_size=image_size)
    vlm.config.use_cache = False
    vlm.eval()
    samples = samples[:limit] if limit else samples
    rows, started = [], time.time()
    for s in progress(samples, desc=f"vqa-eval {Path(str(source)).name}", unit="questions"):
        pred = generate_answer(adapter, processor, vlm, s.pixels(), s.question, max_new_tokens)
        rows.append(dict(id=s.id, type=s.type, rule=s.rule, question=s.question, answer=s.answer, prediction=pred,
                         correct=score(s.rule, pred, s.scoring_item())))
    by_type = {}
    for kind in sorted({r["type"] for r in rows}):
        hits = [r["correct"] for r in rows if r["type"] == kind]
        by_type[kind] = dict(score=round(100 * float(np.mean(hits)), 2), n=len(hits))
    return dict(score=round(100 * float(np.mean([r["correct"] for r in rows])), 2) if rows else None,
                n=len(rows), by_type=by_type, elapsed_s=round(time.time() - started, 1), predictions=rows)


def main(argv: list[str] | None = None) -> int:
    from vlm4vla_core.io import write_text
    from vlm4vla_core.vqa.sets import load

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core vqa-eval", description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True)
    p.add_argument("--source", required=True, help="checkpoint folder or hub id")
    p.add_argument("--data", required=True, help="held-out set (JSON/JSONL, parquet file or folder)")
    p.add_argument("--set-name", default=None, help="the set's name in the study config (for the label)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    try:
        samples = load(args.data)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {args.data}: {err}", file=sys.stderr)
        return 1
    result = evaluate(args.family, args.source, samples, args.image_size, args.max_new_tokens, args.limit)
    name = args.set_name or Path(args.data).name
    result.update(set=name, data=str(args.data), checkpoint=str(args.source), family=args.family,
                  source=f"measured: {name} held-out split, project scorer (greedy generation, per-question rule)")
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"{args.out}: {result['score']}% of {result['n']} questions "
          + ", ".join(f"{k} {v['score']}%" for k, v in result["by_type"].items()), flush=True)
    return 0
