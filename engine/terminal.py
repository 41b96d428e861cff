"""Text safe to show on a terminal: the one function every message of tierbook goes through.

Text from data and plugins (a column name, a customer id, a label, a plugin's error) can
hold control characters: an ESC sequence would recolour, move or clear the terminal, a
carriage return would overwrite what came before, a line break would forge a line of
tierbook's own output. :func:`safe` shows each such character escaped. The command line
prints only through it (``engine.cli.output``); formatters that lay out several lines
apply it to each line they build.
"""

from __future__ import annotations

import unicodedata

__all__ = ["safe", "safe_lines"]

#: Characters that are not control characters but still steer a terminal or a reader: line and
#: paragraph separators, and the bidirectional overrides that make text read in another order.
_STEERING = frozenset("\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """``text`` with every control character (line breaks, ESC, ...) shown escaped: one line, printable.

    >>> safe("a\\x1b[31mb\\nc\\u202e")
    'a\\\\x1b[31mb\\\\nc\\\\u202e'
    >>> safe("Ünïcode ok")
    'Ünïcode ok'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(ch) if (unicodedata.category(ch) == "Cc" or ch in _STEERING) else ch for ch in text)


def safe_lines(lines: list[str]) -> str:
    """Lines, each made :func:`safe`, joined by line breaks: a value's own line break stays escaped."""
    return "\n".join(safe(line) for line in lines)
