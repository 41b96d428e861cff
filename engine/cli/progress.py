"""Step-by-step progress on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from .output import say


@contextlib.contextmanager
def step(text: str, *, enabled: bool | None = None) -> Iterator[None]:
    """Print ``text ...`` before a long step and its duration after it (terminals only)."""
    show = sys.stderr.isatty() if enabled is None else enabled
    start = time.perf_counter()
    if show:
        say(f"{text} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if show:
            say(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
