"""Planning the study stays cheap: the family registry is read without importing torch, and the
workflow's callables carry their signature (Snakemake inspects each one per job)."""

from __future__ import annotations

import subprocess
import sys

from vlm4vla_core import backbones


def test_the_registry_names_each_adapter_by_its_family():
    assert set(backbones.FAMILIES) == set(backbones.FAMILY_NAMES)
    for family, cls in backbones.FAMILIES.items():
        assert cls.family == family


def test_checking_a_study_imports_no_torch():
    code = ("import sys; from vlm4vla_core.study import load; load('config.yaml'); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
