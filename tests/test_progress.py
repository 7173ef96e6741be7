"""The one progress bar: redrawn in place on a TTY, a few plain lines in a log file."""

import io

import pytest

from cvlearn.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_file_gets_plain_rate_limited_lines(monkeypatch):
    """A long loop written to a file: no carriage returns, and only the first line plus the final one (the log
    interval is far longer than the loop), even though the postfix changes at every step."""
    monkeypatch.setenv("CVLEARN_PROGRESS_INTERVAL_S", "3600")
    log = io.StringIO()
    bar = progress_bar(total=10_000, desc="MD", unit="step", stream=log, leave=True)
    for _ in range(10_000):
        bar.update(1)
        bar.set_postfix(ns_per_day="12.3")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 2 and lines[-1].startswith("MD: 100%") and "10000/10000" in lines[-1]


def test_log_lines_come_at_the_interval(monkeypatch):
    monkeypatch.setenv("CVLEARN_PROGRESS_INTERVAL_S", "0")
    log = io.StringIO()
    for _ in progress_bar(range(5), desc="epochs", stream=log, mininterval=0):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) >= 5 and all(line.startswith("epochs:") for line in lines)


def test_terminal_gets_an_in_place_bar():
    tty = _Terminal()
    bar = progress_bar(total=3, desc="MD", stream=tty, mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in tty.getvalue()  # redrawn in place


def test_disabled_bar_writes_nothing():
    log = io.StringIO()
    assert list(progress_bar(range(3), stream=log, disable=True)) == [0, 1, 2]
    assert log.getvalue() == ""


def test_bad_interval_is_named(monkeypatch):
    monkeypatch.setenv("CVLEARN_PROGRESS_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="CVLEARN_PROGRESS_INTERVAL_S"):
        progress_bar(total=1, stream=io.StringIO())
