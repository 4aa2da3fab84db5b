"""Progress of every long stage, from one place: a count with its total, the rate and an ETA.

On a terminal it is tqdm's bar. When the stream is not a terminal (a log file on a cluster, a
pipe), a carriage-return bar collapses into one unreadable line, so the same tqdm counter writes
one plain line every ``VLM4VLA_PROGRESS_SECONDS`` seconds (default 30) instead, plus one at the start
and one at the end::

    train: 120/400 steps [00:31<01:12, 3.87 steps/s, loss=0.0312]

Such lines can be followed with ``tail -f`` and searched with ``grep``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

#: environment variable: seconds between two progress lines when the output is not a terminal
INTERVAL_ENV = "VLM4VLA_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


def interval() -> float:
    """Seconds between progress lines in a log (``VLM4VLA_PROGRESS_SECONDS``); a bad value stops with its name."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None or raw == "":
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: must be >= 0")
    return value


class _Discard:
    """What tqdm's own writer gets in line mode: its carriage returns and padding go nowhere."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LineProgress(tqdm):
    """tqdm whose every refresh is one complete line on ``stream`` (no carriage return, no bar)."""

    def __init__(self, *args, stream: TextIO, **kwargs):
        self._stream = stream
        super().__init__(*args, file=_Discard(), **kwargs)

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        # shown with the next periodic line, not as a line of its own
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = self.__str__() if msg is None else msg
        if text:
            self._stream.write(text.strip() + "\n")
            self._stream.flush()
            self._shown = self.n
        return True

    def close(self) -> None:
        if getattr(self, "_shown", None) == self.n:
            self.leave = False  # the last line already shows the final count
        super().close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, stream: TextIO | None = None, **kwargs) -> tqdm:
    """A tqdm counter for a stage: a bar on a terminal, plain lines every ``interval()`` seconds otherwise.

    Use it as tqdm: wrap an iterable, or call ``update(n)`` and ``close()`` (or use it as a context
    manager). ``stream`` defaults to standard error, where the stages' logs collect progress.
    """
    stream = sys.stderr if stream is None else stream
    tty_interval = kwargs.pop("mininterval", 0.5)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    common = dict(total=total, desc=desc, unit=unit, disable=disable, initial=initial, dynamic_ncols=False, **kwargs)
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, mininterval=tty_interval, **common)
    every = interval()
    return LineProgress(iterable, stream=stream, mininterval=every, miniters=1, maxinterval=max(every, 1.0),
                        bar_format=LINE_FORMAT if total is not None else LINE_FORMAT_NO_TOTAL, **common)
