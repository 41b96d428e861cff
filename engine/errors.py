"""One error hierarchy for everything a user can get wrong.

Every error a user can cause is a :class:`TierbookError`. The command line turns
it into one line on stderr and exit code 2; anything else is a bug and keeps its
traceback (behind ``--traceback``).

Messages are built first, then raised, and always name *where* (file, line,
column, row, plugin) and *what* (the offending value).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "TierbookError",
    "DataError",
    "ParamError",
    "PluginError",
    "PlaybookError",
    "suggest",
]


class TierbookError(Exception):
    """Base class of every user-facing error; the CLI exits with :attr:`exit_code`."""

    exit_code = 2


class DataError(TierbookError):
    """The input data cannot be used: a missing column, a bad value, an empty file."""


class ParamError(TierbookError):
    """A classifier parameter has the wrong type, is out of bounds or unknown."""


class PluginError(TierbookError):
    """A plugin failed to load, broke its contract, or collides with another."""


class PlaybookError(TierbookError):
    """A playbook is invalid. ``problems`` holds every ``file:line: message`` found."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``.

    >>> suggest("monetray", ["monetary", "frequency"])
    " (did you mean 'monetary'?)"
    >>> suggest("zzz", ["monetary"])
    ''
    """
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if str(word).lower() in lowered:
            close = [lowered[str(word).lower()]]
    return f" (did you mean '{close[0]}'?)" if close else ""
