"""The one progress bar: in place on a terminal, a few plain lines in a log file.

Every loop that shows progress calls :func:`progress_bar` (a ``tqdm`` with the same arguments). On a TTY it is
an ordinary bar redrawn in place. When stderr is not a TTY (a batch job's log file, a pipe) the bar prints at
most one plain, newline-terminated line every ``CVLEARN_PROGRESS_INTERVAL_S`` seconds (default 30) and no
carriage-return redraws, so a log stays a few kB per hour instead of hundreds.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "log_interval_s", "progress_bar"]

LOG_INTERVAL_S = 30.0  # seconds between progress lines in a log file


class _LineWriter:
    """A file for tqdm that turns each in-place redraw into one log line and drops the clearing writes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """In a log, a postfix or description change waits for the next timed line instead of printing one now."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def log_interval_s() -> float:
    """Seconds between progress lines in a log file (``CVLEARN_PROGRESS_INTERVAL_S``, default 30): also the
    limit for repeated status lines (e.g. the bias-force guard's), so logs stay small."""
    text = os.environ.get("CVLEARN_PROGRESS_INTERVAL_S")
    if text is None:
        return LOG_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"CVLEARN_PROGRESS_INTERVAL_S: expected a number of seconds, found {text!r}") from None
    if not value >= 0:
        raise ValueError(f"CVLEARN_PROGRESS_INTERVAL_S: expected a number of seconds >= 0, found {text!r}")
    return value


def progress_bar(iterable=None, *, stream=None, **kwargs) -> tqdm:
    """A ``tqdm`` bar that fits both terminals and batch logs.

    Parameters
    ----------
    iterable : iterable, optional
        As for ``tqdm``.
    stream : file, optional
        Where the bar goes (default ``sys.stderr``); whether it is a TTY decides the mode.
    **kwargs
        Any ``tqdm`` keyword (``total``, ``desc``, ``unit``, ``disable``, ``leave``, ``mininterval``, ...). In a
        log file ``mininterval`` is raised to the log interval.

    Returns
    -------
    tqdm
        Use it as a tqdm bar (``update``, ``set_postfix``, ``close``, iteration, context manager).
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, **kwargs)
    interval = log_interval_s()
    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), interval)
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval", 10.0)), interval)
    kwargs["miniters"] = 1  # with a time limit only: tqdm's adaptive miniters could go silent for long stretches
    kwargs.setdefault("ncols", 100)
    kwargs.setdefault("ascii", True)
    return _LogBar(iterable, file=_LineWriter(stream), dynamic_ncols=False, **kwargs)
