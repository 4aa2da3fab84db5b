"""Backbone family adapters: ``get_adapter(family)`` and the ``FAMILIES`` registry.

To add a family, write ``<family>.py`` with a ``FamilyAdapter`` subclass and list it in ``ADAPTERS``; a VLM
that follows the common image-text-to-text interface needs no code (``family: generic``).

The registry names each adapter by module and class, so that the family names can be checked (a study
config, the workflow's planning) without importing the adapters and torch; ``FAMILIES`` and the adapter
classes are imported on first use.
"""

from __future__ import annotations

import importlib

#: family -> (module under vlm4vla_core.backbones, adapter class)
ADAPTERS: dict[str, tuple[str, str]] = {
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VLAdapter"),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLAdapter"),
    "qwen3_vl_moe": ("qwen3_vl", "Qwen3VLMoeAdapter"),
    "paligemma": ("paligemma", "PaliGemmaAdapter"),
    "kosmos2": ("kosmos2", "Kosmos2Adapter"),
    "internvl": ("internvl", "InternVLAdapter"),
    "generic": ("generic", "GenericAdapter"),
}
FAMILY_NAMES: tuple[str, ...] = tuple(ADAPTERS)
_BASE = ("FamilyAdapter", "Processor", "UnsupportedBackbone")


def _adapter_class(family: str):
    module, cls = ADAPTERS[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def __getattr__(name: str):
    if name == "FAMILIES":
        families = {family: _adapter_class(family) for family in ADAPTERS}
        globals()["FAMILIES"] = families
        return families
    if name in _BASE:
        from vlm4vla_core.backbones import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_adapter(family: str):
    """The adapter of ``family``; UnsupportedBackbone names the family and the known ones."""
    if family not in ADAPTERS:
        from vlm4vla_core.backbones.base import UnsupportedBackbone

        raise UnsupportedBackbone(f"unknown backbone family {family!r} (known: {', '.join(sorted(ADAPTERS))})")
    return _adapter_class(family)()


__all__ = ["ADAPTERS", "FAMILIES", "FAMILY_NAMES", "FamilyAdapter", "Processor", "UnsupportedBackbone",
           "get_adapter"]
