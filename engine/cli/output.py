"""Everything the ``tierbook`` command shows goes through here, made safe for a terminal.

Text from data and plugins (a column name, a customer id, a label, a plugin's error)
can hold control characters: an ESC sequence would recolour, move or clear the
terminal, a carriage return would overwrite what came before, a line break would
forge a line of tierbook's own output. :func:`engine.terminal.safe` shows each such
character escaped; :func:`say` prints lines through it. A test checks that no module of the
command prints any other way.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..terminal import safe

__all__ = ["safe", "say", "say_block"]

def say(*lines: object, file: TextIO | None = None, end: str = "\n", flush: bool = False) -> None:
    """Print each of ``lines`` as one line (no line may break into two, whatever it holds)."""
    out = file if file is not None else sys.stdout
    for i, line in enumerate(lines):
        print(safe(line), file=out, end=end if i == len(lines) - 1 else "\n", flush=flush)
    if not lines:
        print(file=out, end=end, flush=flush)


def say_block(text: str, file: TextIO | None = None) -> None:
    """Print ``text``, whose line breaks are tierbook's own (a table, JSON), each line made safe.

    Formatters that put data into such a text escape each value with :func:`safe` themselves, so that
    a line break inside a value does not become a line here.
    """
    say(*text.split("\n"), file=file)
