"""``python -m vlm4vla_core make-tiny-backbone``: a tiny random-weight checkpoint of a family.

The checkpoint uses the family's real architecture class, tokenizer class and
image processor, shrunk (hidden 64, 2 text and 2 vision layers, ~1k-token
vocabulary), and is written with ``save_pretrained``, so ``adapter.load(out)``
takes the same ``from_pretrained`` path as a hub checkpoint. Deterministic
given ``--seed``; written to a temporary folder, then renamed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlm4vla_core.backbones import FAMILIES, UnsupportedBackbone, get_adapter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core make-tiny-backbone", description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help=f"one of: {', '.join(sorted(FAMILIES))}")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square input frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default=None, help="architecture variant, e.g. paligemma2, or llava / idefics3 "
                        "of the generic family (default: the family's first)")
    args = parser.parse_args(argv)
    try:
        adapter = get_adapter(args.family)
        adapter.make_tiny(args.out, args.image_size, seed=args.seed, variant=args.variant)
    except (UnsupportedBackbone, ValueError) as err:
        print(f"make-tiny-backbone: {err}", file=sys.stderr)
        return 2
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out}: {config.model_type} ({config.get_text_config().model_type} text), "
          f"image {args.image_size}px, {adapter.num_image_tokens(config, args.image_size)} image tokens, "
          f"{size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
