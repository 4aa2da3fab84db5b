"""The progress counter: a tqdm bar on a terminal, plain lines with totals in a log."""

import io
import time

import pytest

from vlm4vla_core.progress import LineProgress, interval, progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_output_is_one_line_per_interval_with_total(monkeypatch):
    monkeypatch.setenv("VLM4VLA_PROGRESS_SECONDS", "0.05")
    log = io.StringIO()
    bar = progress(total=20, desc="train x", unit="steps", stream=log)
    assert isinstance(bar, LineProgress)
    for i in range(20):
        time.sleep(0.01)
        bar.update(1)
        bar.set_postfix(loss=f"{i:.2f}")  # no line of its own
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train x: 0/20 steps [") and lines[-1].startswith("train x: 20/20 steps [")
    assert 3 <= len(lines) < 20  # every 0.05 s over 0.2 s, not once per update
    counts = [int(ln.split()[2].split("/")[0]) for ln in lines]
    assert counts == sorted(counts) and all("/20 steps [" in ln for ln in lines)
    assert "loss=" in lines[-1]


def test_terminal_gets_the_bar():
    tty = _Tty()
    for _ in progress(range(3), desc="gen", stream=tty):
        pass
    assert not isinstance(progress(total=1, stream=tty), LineProgress)
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()


def test_disabled_writes_nothing(monkeypatch):
    monkeypatch.setenv("VLM4VLA_PROGRESS_SECONDS", "0")
    log = io.StringIO()
    for _ in progress(range(3), desc="rank 1", stream=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_bad_interval_names_the_variable(monkeypatch):
    monkeypatch.setenv("VLM4VLA_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="VLM4VLA_PROGRESS_SECONDS"):
        interval()
