"""The few exception classes that say whose fault a failure is, so the CLI can answer with one line and an exit code.

* :class:`ConfigError` (a ``ValueError``): a config file, a key or an argument is wrong; the user fixes the input.
  Its message starts with the file and/or the key. ``cvlearn`` exits with 2, as for any ``ValueError`` raised by
  validation and for missing files.
* :class:`RunError` (a ``RuntimeError``): valid inputs, but the run itself failed (a simulation blew up, a
  labeller did not converge). ``cvlearn`` exits with 1.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RunError"]


class ConfigError(ValueError):
    """A wrong config value, key, file or argument, named in the message (``<file>: <key>: expected X, found Y``).

    Parameters
    ----------
    message : str
        What was expected and what was found.
    source : str, optional
        The config file (or ``--flag``) the value came from; prefixed to the message.
    key : str, optional
        The dotted key (``metad.sigma``); prefixed to the message after ``source``.
    """

    def __init__(self, message: str, source: str | None = None, key: str | None = None):
        self.source = None if source is None else str(source)
        self.key = key
        self.detail = message
        prefix = "".join(f"{part}: " for part in (self.source, key) if part)
        super().__init__(prefix + message)


class RunError(RuntimeError):
    """A run that started from valid inputs and failed (e.g. the simulation blew up)."""
