"""``python -m vlm4vla_core backbone-report``: parameters and sequence layout of a backbone.

``backbone_report`` works on a loaded VLM or on one built on the meta device
from its published config (no weights); ``policy.py`` adds its own counts
through ``policy_added_params``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlm4vla_core.backbones import FAMILIES, UnsupportedBackbone, get_adapter
from vlm4vla_core.backbones.base import FamilyAdapter, Processor, count_parameters
from vlm4vla_core.backbones.memory import head_params
from vlm4vla_core.config import ABLATIONS

SAMPLE_INSTRUCTION = "pick up the red block and place it in the drawer"


def backbone_report(adapter: FamilyAdapter, vlm: nn.Module, processor: Processor | None,
                    policy_added_params: int | Mapping[str, int] | None = None, image_size: int | None = None,
                    instruction: str = SAMPLE_INSTRUCTION) -> dict:
    """Parameter counts, image tokens per frame, prompt length and hidden size of ``vlm``.

    ``total_params`` counts the whole VLM (the published size, LM head included);
    ``backbone_params`` what the policy runs (``adapter.backbone``: no untied LM head).
    ``prompt_length`` (image tokens + instruction + ActionQuery placeholder, for
    ``instruction``) needs the tokenizer, so it is None without a processor; so are the image
    tokens of a generic backbone whose config does not state them (counted in an encoded sample).
    ``policy_added_params``: the policy's added parameter count (or its count dict with
    an ``added`` key), reported with its share of ``backbone_params``.
    """
    config = vlm.config
    backbone = adapter.backbone(vlm)
    if processor is not None:
        size = processor.image_size
    else:
        size = image_size or adapter.checkpoint_image_size(config, None) or adapter.default_image_size
    n_image = adapter.num_image_tokens(config, size)
    report = dict(
        family=adapter.family,
        model_type=config.model_type,
        text_model_type=config.get_text_config().model_type,
        architecture=type(vlm).__name__,
        device=str(next(vlm.parameters()).device),
        dtype=str(next(vlm.parameters()).dtype).removeprefix("torch."),
        total_params=count_parameters(vlm),
        backbone_params=count_parameters(backbone),
        vision_params=sum(count_parameters(m) for m in adapter.vision_modules(backbone)),
        word_embedding_params=adapter.input_embeddings(backbone).weight.numel(),
        hidden_size=adapter.hidden_size(vlm),
        image_size=size,
        image_tokens_per_frame=n_image,
        sample_instruction=instruction,
        prompt_length=None,
    )
    if processor is not None:
        enc = adapter.encode(processor, [np.zeros((size, size, 3), np.uint8)], [instruction])
        real = enc["attention_mask"][0].bool()
        encoded_images = int(adapter.image_positions(processor, enc)[0][real].sum())
        if n_image is not None and encoded_images != n_image and adapter.image_tokens_exact:
            raise ValueError(f"encode produced {encoded_images} image tokens, the config implies {n_image}")
        report["image_tokens_per_frame"] = encoded_images
        report["prompt_length"] = int(real.sum())
    if policy_added_params is not None:
        counts = dict(policy_added_params) if isinstance(policy_added_params, Mapping) else {"added": policy_added_params}
        report["policy"] = counts
        report["policy_added_share"] = counts["added"] / report["backbone_params"]
    return report


def meta_model(adapter: FamilyAdapter, source: str) -> nn.Module:
    """The architecture of ``source`` on the meta device: a shipped published config or a local config.json."""
    from transformers import AutoModelForImageTextToText

    config = adapter.real_config(source) if source in adapter.hub_ids else adapter.check_config(source)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def policy_counts(args, vlm: nn.Module, processor: Processor | None) -> dict:
    """The policy's parameter counts on this backbone: added, and trainable under each ablation.

    Counted from the backbone and ``memory.head_params`` (the ActionQuery and the MLP head), without
    building the policy: its parameters are the backbone's plus those, all trainable except the modules an
    ablation freezes (the vision tower and projector, or the word embeddings)."""
    adapter = get_adapter(args.family)
    backbone = adapter.backbone(vlm)
    added = head_params(adapter.hidden_size(vlm), args.chunk, args.action_dim, args.head_hidden, args.head_layers)
    total = count_parameters(backbone) + added
    frozen = dict(full=[], freeze_vision=adapter.vision_modules(backbone),
                  freeze_embeddings=[adapter.input_embeddings(backbone)], from_scratch=[])
    trainable = {}
    for ablation in ABLATIONS:
        skip = {id(p): p.numel() for m in frozen[ablation] for p in m.parameters()}
        trainable[ablation] = total - sum(skip.values())
    return dict(added=added, total=total, trainable=trainable,
                head=dict(chunk=args.chunk, action_dim=args.action_dim, hidden=args.head_hidden, layers=args.head_layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core backbone-report", description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help=f"one of: {', '.join(sorted(FAMILIES))}")
    parser.add_argument("--source", required=True, help="hub id or checkpoint folder")
    parser.add_argument("--image-size", type=int, default=None, help="frame side (default: the checkpoint's, else 224)")
    parser.add_argument("--meta", action="store_true",
                        help="no weights: build the published config (or the folder's config.json) on the meta device")
    parser.add_argument("--out", required=True, type=Path, help="report JSON to write")
    head = parser.add_argument_group("policy head (adds trainable/added parameter counts per ablation)")
    head.add_argument("--chunk", type=int, help="action chunk K")
    head.add_argument("--action-dim", type=int, default=7, help="arm dims + gripper (default 7)")
    head.add_argument("--head-hidden", type=int, default=1024)
    head.add_argument("--head-layers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        adapter = get_adapter(args.family)
        if args.meta:
            vlm = meta_model(adapter, args.source)
            processor = None
            if Path(args.source).is_dir():  # a local folder also has its tokenizer and image processor
                processor = adapter.load_processor(args.source, vlm.config, args.image_size)
        else:
            vlm, processor = adapter.load(args.source, image_size=args.image_size)
        counts = policy_counts(args, vlm, processor) if args.chunk else None
        report = backbone_report(adapter, vlm, processor, policy_added_params=counts, image_size=args.image_size)
    except (UnsupportedBackbone, ValueError, OSError) as err:
        print(f"backbone-report: {err}", file=sys.stderr)
        return 2
    report = dict(source=args.source, weights=not args.meta, **report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
