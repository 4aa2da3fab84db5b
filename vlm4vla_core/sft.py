"""SFT stage: fine-tune a backbone VLM on image-conversation data before it becomes a VLA.

``python -m vlm4vla_core sft --config C --variant V --data D --run-dir R`` trains the variant's
base backbone with the language-modelling loss on answer tokens only and exports
``R/checkpoint``: a ``save_pretrained`` folder (weights, config, tokenizer, image processor)
that the VLA stage and the VQA evaluation load like any backbone (``--source R/checkpoint``).

``SFTRecipe`` supplies the model, data, loss and export to the training skeleton
``vlm4vla_core.recipe`` -- precision, DeepSpeed, checkpoints with a fingerprint, exact resume,
preemption (SIGTERM/SIGUSR1 -> exit 75), metrics -- shared with the VLA stage
(``vlm4vla_core.train``). Batches are a pure function of (seed, micro-step, rank).

Sequence of one sample (``build_example``): the family's native prompt of the first question
with the image (``adapter.vqa_prompt_ids``), then the answer and the end-of-turn token; further
turns append the question's text (masked) and the answer. Labels are -100 everywhere but on the
answer tokens and their end-of-turn token, so the loss is the answers' likelihood only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from vlm4vla_core import recipe

IGNORE = -100
CHECKPOINT_DIR = "checkpoint"


def build_example(adapter, processor, turns: list[tuple[str, str]]) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, prompt_length) of one conversation; labels are IGNORE outside the answers."""
    tok = processor.tokenizer
    end = adapter.placeholder_id(processor)  # the family's end-of-turn/eos id: where a VLA reads its ActionQuery
    ids = list(adapter.vqa_prompt_ids(processor, turns[0][0]))
    labels = [IGNORE] * len(ids)
    prompt_length = len(ids)
    for k, (question, answer) in enumerate(turns):
        if k:
            q = tok("\n" + question + "\n", add_special_tokens=False)["input_ids"]
            ids += q
            labels += [IGNORE] * len(q)
        a = tok(answer, add_special_tokens=False)["input_ids"] + [end]
        ids += a
        labels += a
    return ids, labels, prompt_length


def collate(adapter, processor, images: list[np.ndarray], examples: list[tuple[list[int], list[int], int]]):
    """Model inputs (right-padded, the family's extra inputs) and labels of a batch."""
    import torch

    from vlm4vla_core.backbones.base import resize_square, right_pad

    adapter.check_image_size(processor)
    batch = right_pad([e[0] for e in examples], adapter.pad_id(processor))
    labels = torch.full_like(batch["input_ids"], IGNORE)
    for b, (_, lab, _) in enumerate(examples):
        labels[b, : len(lab)] = torch.tensor(lab)
    # query_index marks where the answer starts (PaliGemma's prefix ends there), as the VLA prompt's placeholder
    batch["query_index"] = torch.tensor([e[2] for e in examples])
    batch.update(adapter.pixel_inputs(processor, resize_square(images, processor.image_size)))
    batch.update(adapter.extra_inputs(processor, batch))
    batch.pop("query_index")
    return batch, labels


def lm_loss(vlm, inputs: dict, labels):
    """Mean cross-entropy of the next token over the positions whose label is not IGNORE."""
    import torch.nn.functional as F

    logits = vlm(**inputs).logits.float()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(logits.device)
    n = (shift_labels != IGNORE).sum().clamp(min=1)
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum") / n
    return loss, {"loss": float(loss.detach()), "answer_tokens": float(n)}


def sample_order(n: int, seed: int, micro_step: int, micro_batch: int, rank: int, world: int) -> list[int]:
    """Sample indices of one micro-step: epochs of seeded permutations, ranks take disjoint slices."""
    per_step = micro_batch * world
    start = micro_step * per_step + rank * micro_batch
    out = []
    for pos in range(start, start + micro_batch):
        epoch, i = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[i]))
    return out


def data_digest(path: Path) -> str:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if f.is_file() and f.suffix in (".json", ".jsonl", ".parquet"):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def save_checkpoint(vlm, processor, out: Path, state: dict | None, meta: dict) -> None:
    """A save_pretrained folder that ``adapter.load`` reads like any backbone."""
    from vlm4vla_core.io import atomic_dir

    with atomic_dir(out) as tmp:
        vlm.config.use_cache = True
        vlm.config.get_text_config().use_cache = True
        vlm.save_pretrained(tmp, state_dict=state)
        full = (processor.extra or {}).get("processor")
        if full is not None:
            full.save_pretrained(tmp)
        else:
            processor.tokenizer.save_pretrained(tmp)
            processor.image_processor.save_pretrained(tmp)
        (tmp / "sft.json").write_text(json.dumps(meta, indent=2))


class SFTRecipe(recipe.Recipe):
    """The SFT stage's share of the training skeleton (``vlm4vla_core.recipe``): the backbone VLM on
    conversations, the answer tokens' language-modelling loss, the exported ``checkpoint/`` folder."""

    name = "sft"
    shard_at_load = False  # the base weights are read whole: max_steps 0 saves them as they are

    def __init__(self, family: str, source: str, data: Path, settings, run_dir: Path, seed: int,
                 image_size: int | None = None, stop_after: int | None = None, samples=None):
        super().__init__(settings, run_dir, seed, stop_after)
        self.family, self.source, self.data, self.image_size, self.samples = family, source, data, image_size, samples

    @property
    def out(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def configure(self, world: int) -> None:
        from vlm4vla_core.backbones import get_adapter
        from vlm4vla_core.vqa.sets import load

        self.samples = self.samples if self.samples is not None else load(self.data)
        if not self.samples:
            raise ValueError(f"{self.data}: no samples")
        self.adapter = get_adapter(self.family)

    def build(self, dtype):
        import torch

        vlm, self.processor = self.adapter.load(self.source, dtype=torch.float32 if dtype == torch.float16 else dtype,
                                                image_size=self.image_size)
        vlm.train()
        self.examples = [build_example(self.adapter, self.processor, s.turns) for s in self.samples]
        self.meta = dict(base=str(self.source), family=self.family, data=str(self.data), samples=len(self.samples),
                         seed=self.seed, training=self.settings.as_dict())
        return vlm

    def identity(self, weight_settings: dict, world: int) -> list:
        return ["sft", str(self.source), weight_settings, self.seed, world, data_digest(self.data)]

    def export_base(self, model) -> bool:
        if int(os.environ["RANK"]) == 0:
            save_checkpoint(model, self.processor, self.out, None, {**self.meta, "steps": 0})
        return True

    def announce(self, run, model) -> None:
        print(f"SFT of {self.source} on {self.data}: {len(self.samples):,} samples", flush=True)

    def batches(self, run, first: int):
        step, samples = first, self.samples
        while True:
            idx = sample_order(len(samples), self.seed, step, self.settings.micro_batch, run.rank, run.world)
            yield collate(self.adapter, self.processor, [samples[i].pixels() for i in idx],
                          [self.examples[i] for i in idx])
            step += 1

    def loss(self, module, inputs: dict, target):
        return lm_loss(module, inputs, target)

    def export(self, run, module, state: dict) -> None:
        save_checkpoint(module, self.processor, self.out, state, {**self.meta, "steps": run.step})


def sft(family: str, source: str, data: Path, settings, run_dir: Path, seed: int, image_size: int | None = None,
        stop_after: int | None = None, samples=None) -> Path | None:
    """Fine-tune and export ``run_dir/checkpoint``; None when stopped early (preemption or stop_after).
    ``max_steps: 0`` exports the base weights unchanged (the zero-SFT point of a dose series)."""
    return recipe.run(SFTRecipe(family, source, data, settings, run_dir, seed, image_size, stop_after, samples))


def main(argv: list[str]) -> int:
    from vlm4vla_core import study
    from vlm4vla_core.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core sft", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--variant", required=True, help="key under pretraining: or embodied_sft:")
    p.add_argument("--source", required=True, help="the base backbone's checkpoint (hub id or folder)")
    p.add_argument("--data", required=True, help="training conversations (JSON/JSONL, parquet file or folder)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int)
    p.add_argument("--stop-after", type=int)
    args = p.parse_args(argv)
    config = study.load(args.config)  # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    if config.variants().get(args.variant) is None:
        raise ConfigError(f"{args.config}: no {args.variant!r} under 'pretraining' or 'embodied_sft'")
    family = config.backbones[config.root_backbone(args.variant)].family
    return recipe.stage(SFTRecipe(family, args.source, Path(args.data), config.sft_settings(args.variant),
                                  Path(args.run_dir), args.seed, args.image_size, args.stop_after))
