"""Backbone family adapters: ``get_adapter(family)`` and the ``FAMILIES`` registry.

To add a family, write ``<family>.py`` with a ``FamilyAdapter`` subclass and list it here; a VLM
that follows the common image-text-to-text interface needs no code (``family: generic``).
"""

from __future__ import annotations

from vlm4vla_core.backbones.base import FamilyAdapter, Processor, UnsupportedBackbone
from vlm4vla_core.backbones.generic import GenericAdapter
from vlm4vla_core.backbones.internvl import InternVLAdapter
from vlm4vla_core.backbones.kosmos2 import Kosmos2Adapter
from vlm4vla_core.backbones.paligemma import PaliGemmaAdapter
from vlm4vla_core.backbones.qwen2_5_vl import Qwen2_5_VLAdapter
from vlm4vla_core.backbones.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter

FAMILIES: dict[str, type[FamilyAdapter]] = {
    adapter.family: adapter
    for adapter in (Qwen2_5_VLAdapter, Qwen3VLAdapter, Qwen3VLMoeAdapter, PaliGemmaAdapter, Kosmos2Adapter,
                    InternVLAdapter, GenericAdapter)
}


def get_adapter(family: str) -> FamilyAdapter:
    """The adapter of ``family``; UnsupportedBackbone names the family and the known ones."""
    if family not in FAMILIES:
        raise UnsupportedBackbone(f"unknown backbone family {family!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[family]()


__all__ = ["FAMILIES", "FamilyAdapter", "Processor", "UnsupportedBackbone", "get_adapter"]
