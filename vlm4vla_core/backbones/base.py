"""The family adapter: the only place where VLM families differ.

A family adapter declares what differs between VLM families: how the prompt is
laid out ([image tokens][instruction][ActionQuery]), how images are turned into
pixel inputs, which submodules are the vision encoder (and its projector) and
the word embeddings, and how to build a tiny offline checkpoint of the real
architecture. Everything else (the ActionQuery, the action head, the loss)
lives once in ``vlm4vla_core.policy``.

Contract of ``encode``: a right-padded batch whose every sample ends with one
placeholder token for the ActionQuery; ``query_index[b]`` is the position of
that placeholder (the last real token of sample ``b``). The policy swaps the
placeholder's word embedding for the learnable ActionQuery vector and reads
the final hidden state at ``query_index``.

The generic machinery lives here: loading through the transformers Auto
classes (``AutoModelForImageTextToText``, ``AutoTokenizer`` and the PIL
``AutoImageProcessor``; no torchvision), square resizing, right padding, tiny
checkpoints written atomically, and published configs shipped as JSON in
``configs/``. A family subclass sets a few class attributes and overrides the
prompt layout, the image-token count and its tiny config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vlm4vla_core.io import atomic_dir  # noqa: F401  (re-exported for the family modules)

CONFIG_DIR = Path(__file__).parent / "configs"


class UnsupportedBackbone(ValueError):
    """A checkpoint whose family cannot be turned into a policy; the message says why."""


@dataclass
class Processor:
    """What ``encode`` needs: the tokenizer, the image processor, the image size.

    ``image_size`` may be changed after loading (square frames of that side are fed
    to the model); families whose vision tower has a fixed input size check it in
    ``encode``. ``extra`` holds family facts read from the checkpoint (token ids,
    patch sizes).
    """

    tokenizer: Any
    image_processor: Any
    image_size: int
    extra: dict | None = None
    _prompt_cache: dict = field(default_factory=dict, repr=False, compare=False)
    _pixel_tables: dict = field(default_factory=dict, repr=False, compare=False)  # image_size -> table or None


class Question(str):
    """A VQA question (SFT stage, VQA evaluation): ``prompt_ids`` puts it in the user turn as it is,
    where a VLA instruction is wrapped in the family's action request."""


class FamilyAdapter:
    """Base adapter. Subclasses override only what their family does differently."""

    family: str = ""
    #: Hugging Face ``model_type`` values this adapter accepts.
    model_types: tuple[str, ...] = ()
    #: attributes of the backbone (``vlm.model``) that make up the vision encoder + projector
    vision_attrs: tuple[str, ...] = ()
    #: published checkpoints whose architecture configs ship in ``configs/``
    hub_ids: tuple[str, ...] = ()
    #: tiny-checkpoint variants (the first is the default)
    tiny_variants: tuple[str, ...] = ()
    #: image side used when the checkpoint does not fix one (the paper: 224)
    default_image_size: int = 224

    # -- loading ---------------------------------------------------------
    def load(self, name_or_path: str | Path, dtype: torch.dtype = torch.float32,
             image_size: int | None = None) -> tuple[nn.Module, Processor]:
        """Load the VLM and its processor with ``from_pretrained`` (hub id or local folder)."""
        from transformers import AutoModelForImageTextToText

        config = self.check_config(name_or_path)
        vlm = AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=dtype)
        self.prepare(vlm)
        return vlm, self.load_processor(name_or_path, config, image_size)

    def check_config(self, name_or_path: str | Path):
        """The checkpoint's config, or UnsupportedBackbone when it is not of this family."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as err:
            raise UnsupportedBackbone(f"{name_or_path}: cannot read its config.json ({err})") from err
        if config.model_type not in self.model_types:
            raise UnsupportedBackbone(
                f"{name_or_path}: model_type {config.model_type!r} is not a {self.family} checkpoint "
                f"(expected {', '.join(self.model_types)})")
        return config

    def prepare(self, vlm: nn.Module) -> None:
        """Settings for policy training: no key/value cache (the policy never generates)."""
        vlm.config.use_cache = False
        vlm.config.get_text_config().use_cache = False

    def load_processor(self, name_or_path: str | Path, config, image_size: int | None = None) -> Processor:
        """Tokenizer + PIL image processor of a checkpoint (no weights are read)."""
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        image_processor = AutoImageProcessor.from_pretrained(str(name_or_path), backend="pil")
        extra = self.processor_extra(config, tokenizer)
        size = image_size or self.checkpoint_image_size(config, image_processor) or self.default_image_size
        return Processor(tokenizer, image_processor, int(size), extra)

    def processor_extra(self, config, tokenizer) -> dict:
        """Family facts ``encode`` needs (token ids, patch sizes), checked against the tokenizer."""
        return {}

    def checkpoint_image_size(self, config, image_processor) -> int | None:
        """The image side fixed by the checkpoint, if any."""
        return None

    def backbone(self, vlm: nn.Module) -> nn.Module:
        """The part of the VLM the policy runs: forward(**encoded) -> ``.last_hidden_state``.

        The base model under the LM head (``vlm.model``): vision tower, projector and
        language model, no vocabulary logits.
        """
        return getattr(vlm, vlm.base_model_prefix)

    def hidden_size(self, vlm: nn.Module) -> int:
        return int(vlm.config.get_text_config().hidden_size)

    # -- inputs ----------------------------------------------------------
    def encode(self, processor: Processor, images: list[np.ndarray], instructions: list[str]) -> dict[str, torch.Tensor]:
        """Batch of HxWx3 uint8 images + instructions -> model inputs + ``query_index``.

        Images are resized to ``processor.image_size`` squared; every prompt ends with the
        placeholder (``placeholder_id``) and the batch is right-padded. Returns ``input_ids``,
        ``attention_mask``, the image processor's tensors, the family's ``extra_inputs``
        (all to be passed to ``backbone(vlm)``) and ``query_index`` (LongTensor[B]).
        """
        if len(images) != len(instructions) or not images:
            raise ValueError(f"encode: got {len(images)} images for {len(instructions)} instructions")
        self.check_image_size(processor)
        pixels = self.table_pixel_inputs(processor, images)
        if pixels is None:
            pixels = self.pixel_inputs(processor, resize_square(images, processor.image_size))
        placeholder, pad = self.placeholder_id(processor), self.pad_id(processor)
        seqs = [self._prompt(processor, text) + [placeholder] for text in instructions]
        batch = right_pad(seqs, pad)
        batch.update(pixels)
        batch.update(self.extra_inputs(processor, batch))
        return batch

    def _prompt(self, processor: Processor, instruction: str) -> list[int]:
        key = (processor.image_size, instruction)
        if key not in processor._prompt_cache:
            processor._prompt_cache[key] = self.prompt_ids(processor, instruction)
        return processor._prompt_cache[key]

    def check_image_size(self, processor: Processor) -> None:
        """Raise ValueError when the vision tower cannot take ``processor.image_size``."""

    def pixel_inputs(self, processor: Processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The image processor's tensors for already-resized square images (it must not rescale them)."""
        out = processor.image_processor(images=images, do_resize=False, return_tensors="pt")
        return {k: v for k, v in out.items() if k in processor.image_processor.model_input_names}

    def pixel_layout(self, processor: Processor, frames: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The tensors ``pixel_inputs`` returns, laid out from ``frames`` [B, S, S, 3] whose every value is
        already the image processor's value for that pixel: data movement only, so it works on any dtype
        (``table_pixel_inputs`` passes pixel positions through it to read the layout back). None: the
        family has no layout here and ``pixel_inputs`` runs on every batch."""
        return None

    def table_pixel_inputs(self, processor: Processor, images: list) -> dict[str, torch.Tensor] | None:
        """``pixel_inputs`` of S x S uint8 frames (S = image_size), bit-identical and without the image
        processor: rescaling and normalising map each (channel, value) to one float, so a table of 3 x 256
        floats, read once from the processor's own output, replaces them, and ``pixel_layout`` arranges
        the looked-up values. None (the processor then runs) for other frames, for a family without a
        layout, or where the processor is not such a per-value map (checked on probe frames)."""
        s = processor.image_size
        if not all(isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.shape == (s, s, 3) for im in images):
            return None
        if s not in processor._pixel_tables:
            processor._pixel_tables[s] = self._read_pixel_table(processor)
        table = processor._pixel_tables[s]
        if table is None:
            return None
        frames = torch.from_numpy(np.stack(images)).long() + torch.arange(0, 3 * 256, 256)
        return self.pixel_layout(processor, table[frames])

    def _read_pixel_table(self, processor: Processor) -> torch.Tensor | None:
        """The image processor's value of each (channel, value) as a flat [3 * 256] table (channel-major),
        read from its output on a probe frame, or None when the processor is not a per-value map that
        ``pixel_layout`` reproduces bit for bit on other probe frames."""
        s = processor.image_size
        probe = np.random.default_rng(0).integers(0, 256, (3, s, s, 3), dtype=np.uint8)
        if s * s < 256:
            return None
        probe[0].reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every value in every channel
        where = self.pixel_layout(processor, torch.arange(s * s * 3).reshape(1, s, s, 3))
        if where is None:
            return None
        ref = self.pixel_inputs(processor, resize_square([probe[0]], s))
        if set(ref) != set(where):
            return None
        table, seen = torch.zeros(3 * 256), torch.zeros(3 * 256, dtype=torch.bool)
        flat = torch.from_numpy(probe[0].reshape(-1)).long()
        for key, values in ref.items():
            if not values.is_floating_point():
                continue
            pos = where[key]
            if pos.shape != values.shape:
                return None
            slot = flat[pos] + 256 * (pos % 3)
            table = table.to(values.dtype)
            table[slot] = values
            seen[slot] = True
            if not torch.equal(table[slot], values):  # one value per (channel, value): a per-value map
                return None
        if not seen.all():
            return None
        fast = self.pixel_layout(processor, table[torch.from_numpy(probe[1:]).long() + torch.arange(0, 3 * 256, 256)])
        slow = self.pixel_inputs(processor, resize_square(list(probe[1:]), s))
        same = set(fast) == set(slow) and all(fast[k].dtype == slow[k].dtype and torch.equal(fast[k], slow[k])
                                              for k in slow)
        return table if same else None

    def prompt_ids(self, processor: Processor, instruction: str) -> list[int]:
        """Token ids of the native prompt (image tokens + instruction), without the placeholder."""
        raise NotImplementedError

    def vqa_prompt_ids(self, processor: Processor, question: str) -> list[int]:
        """Token ids of the native prompt of a plain question (image tokens + question, up to where the
        answer starts): the VLA prompt with the question in place of the action request."""
        return self.prompt_ids(processor, Question(question))

    def extra_inputs(self, processor: Processor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Further model inputs computed from ``input_ids``/``attention_mask``/``query_index``."""
        return {}

    def image_positions(self, processor: Processor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BoolTensor[B, L]: where the image embeddings go in ``encode``'s output (image-token ids by default)."""
        return batch["input_ids"] == processor.extra["image_token_id"]

    def placeholder_id(self, processor: Processor) -> int:
        """The ActionQuery placeholder: the tokenizer's eos token (an ordinary vocabulary id whose
        embedding the policy overwrites; it is never an image token)."""
        return int(processor.tokenizer.eos_token_id)

    def pad_id(self, processor: Processor) -> int:
        tok = processor.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    # whether num_image_tokens is exact (the report then checks an encoded sample against it); False where it
    # is only the config's statement, e.g. one tile of a model that tiles or adds row separators
    image_tokens_exact = True
    # how many times the language model drops out its input embeddings (when its config's dropout is on):
    # each keeps a mask of the sequence's width for the backward pass (the memory planner counts them)
    embedding_dropouts = 1

    def num_image_tokens(self, config, image_size: int) -> int | None:
        """Image tokens per frame of side ``image_size`` in the language model's sequence (None: known
        only from an encoded sample, as for some generic backbones)."""
        raise NotImplementedError

    def vision_sequence(self, config, image_size: int) -> int | None:
        """Positions each layer of the vision tower runs over per frame of side ``image_size`` (its patches,
        and a class token where it has one); None: the image tokens times the tower's spatial merge."""
        return None

    # -- module groups for the ablations ---------------------------------
    def input_embeddings(self, backbone: nn.Module) -> nn.Embedding:
        return backbone.get_input_embeddings()

    def vision_modules(self, backbone: nn.Module) -> list[nn.Module]:
        """The vision encoder and its projector into the language model."""
        return [getattr(backbone, name) for name in self.vision_attrs]

    # -- offline checkpoints ---------------------------------------------
    def make_tiny(self, out: Path, image_size: int, seed: int = 0, variant: str | None = None) -> None:
        """Write a tiny random-weight checkpoint of the real architecture with save_pretrained."""
        from transformers import AutoModelForImageTextToText

        variant = variant or self.tiny_variants[0]
        if variant not in self.tiny_variants:
            raise UnsupportedBackbone(f"{self.family}: unknown tiny variant {variant!r} "
                                      f"(choose from {', '.join(self.tiny_variants)})")
        self.check_tiny_image_size(image_size)
        tokenizer = self.tiny_tokenizer(seed)
        config = self.tiny_config(tokenizer, image_size, variant)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vlm = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        with atomic_dir(Path(out)) as tmp:
            vlm.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            self.tiny_image_processor(image_size).save_pretrained(tmp)

    def check_tiny_image_size(self, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")

    def tiny_tokenizer(self, seed: int):
        raise NotImplementedError

    def tiny_config(self, tokenizer, image_size: int, variant: str):
        raise NotImplementedError

    def tiny_image_processor(self, image_size: int):
        raise NotImplementedError

    def real_config(self, hub_id: str):
        """The published architecture config of ``hub_id`` (no weights), for meta-device builds."""
        from transformers import AutoConfig

        if hub_id not in self.hub_ids:
            raise UnsupportedBackbone(f"{self.family}: no published config shipped for {hub_id!r} "
                                      f"(known: {', '.join(self.hub_ids)})")
        path = CONFIG_DIR / (hub_id.replace("/", "__") + ".json")
        values = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        return AutoConfig.for_model(values.pop("model_type"), **values)


# -- shared helpers ------------------------------------------------------------
def resize_square(images: list[np.ndarray], size: int) -> list[Image.Image]:
    """HxWx3 uint8 arrays -> ``size`` x ``size`` RGB images (bicubic; no crop, no dynamic resolution)."""
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            got = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"image {i}: expected an HxWx3 uint8 array, got {got}")
        pil = Image.fromarray(img, "RGB")
        out.append(pil if pil.size == (size, size) else pil.resize((size, size), Image.Resampling.BICUBIC))
    return out


def right_pad(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask padded on the right, and query_index = last real position."""
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, seq in enumerate(seqs):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    query = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "query_index": query}


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (tied weights counted once); works on the meta device."""
    return sum(p.numel() for p in module.parameters())
