"""One error hierarchy for everything a user can get wrong.

Every error a user can cause is a :class:`TierbookError`. The command line turns
it into one line on stderr and exit code 2; anything else is a bug and keeps its
traceback (behind ``--traceback``).

Messages are built first, then raised, and always name *where* (file, line,
column, row, plugin) and *what* (the offending value). The same facts are
attributes of the error (``file``, ``line``, ``column``, ``row``, ``plugin``,
``classifier``, ``param``, ``value``; None when they do not apply), so a caller
never has to parse the message.

A message that names one of tierbook's options names it in the caller's words:
``--as-of`` when the ``tierbook`` command was given it, ``as_of`` when a Python
function was called with it, ``data.as_of`` when a playbook set it. See
:func:`option` and :func:`speaking`.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "TierbookError",
    "DataError",
    "ParamError",
    "PluginError",
    "PlaybookError",
    "Problem",
    "suggest",
    "option",
    "mapping_hint",
    "option_hint",
    "speaking",
    "CLI_WORDS",
    "PLAYBOOK_WORDS",
]


_FACTS = ("file", "line", "column", "row", "plugin", "classifier", "param", "value")


def _facts(err: TierbookError) -> dict[str, Any]:
    return {k: getattr(err, k) for k in _FACTS}


def _rebuild(cls, message, facts):
    return cls(message, **facts)


class TierbookError(Exception):
    """Base class of every user-facing error; the CLI exits with :attr:`exit_code`.

    The message says everything; the keyword arguments keep its facts as
    attributes for callers (None when they do not apply).

    >>> err = DataError("sales.csv: column 'amount', row 3: 'x' is not a number",
    ...                 file="sales.csv", column="amount", row=3, value="x")
    >>> (err.file, err.row, err.value, err.line)
    ('sales.csv', 3, 'x', None)
    """

    exit_code = 2

    def __init__(
        self,
        message: str = "",
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
        row: int | None = None,
        plugin: str | None = None,
        classifier: str | None = None,
        param: str | None = None,
        value: Any = None,
    ):
        super().__init__(message)
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.column = column
        self.row = row
        self.plugin = plugin
        self.classifier = classifier
        self.param = param
        self.value = value

    def __reduce__(self):  # keyword-only facts survive pickling (e.g. across processes)
        return (_rebuild, (type(self), self.message, _facts(self)))


class DataError(TierbookError):
    """The input data cannot be used: a missing column, a bad value, an empty file."""


class ParamError(TierbookError):
    """A classifier parameter has the wrong type, is out of bounds or unknown.

    ``source`` says where the value came from (``--set abc.a``,
    ``playbook.yaml:7: classifiers.abc.a``); the message is ``source: reason``,
    and ``reason`` is the part after it.

    >>> err = ParamError("1.5 is above the maximum 1 of 'a'", source="--set abc.a", param="a", value=1.5)
    >>> str(err), err.reason, err.source
    ("--set abc.a: 1.5 is above the maximum 1 of 'a'", "1.5 is above the maximum 1 of 'a'", '--set abc.a')
    """

    def __init__(self, message: str = "", *, source: str | None = None, **facts: Any):
        self.reason = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message, **facts)

    def __reduce__(self):
        return (_rebuild, (type(self), self.reason, {"source": self.source, **_facts(self)}))


class PluginError(TierbookError):
    """A plugin failed to load, broke its contract, or collides with another."""


class Problem(str):
    """One ``file:line: message`` problem of a playbook: the text, with ``file``, ``line`` and ``message``.

    >>> p = Problem("vip.yaml", 6, "rule 'sleepers': unknown classifier 'rmf'")
    >>> p
    "vip.yaml:6: rule 'sleepers': unknown classifier 'rmf'"
    >>> (p.file, p.line, p.message)
    ('vip.yaml', 6, "rule 'sleepers': unknown classifier 'rmf'")
    """

    file: str
    line: int
    message: str

    def __new__(cls, file: Any, line: int, message: str) -> Problem:
        self = super().__new__(cls, f"{file}:{line}: {message}")
        self.file, self.line, self.message = str(file), line, message
        return self

    def __repr__(self) -> str:
        return str.__repr__(str(self))

    def __reduce__(self):
        return (Problem, (self.file, self.line, self.message))


class PlaybookError(TierbookError):
    """A playbook is invalid. ``problems`` holds every problem found, in file order.

    Each problem is a :class:`Problem` (text ``file:line: message`` with those
    parts as attributes) or, for a problem without a line, its text;
    ``file`` and ``line`` are those of the first problem.
    """

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else None
        super().__init__("\n".join(self.problems), file=getattr(first, "file", None),
                         line=getattr(first, "line", None))

    def __reduce__(self):
        return (type(self), (self.problems,))


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


# ------------------------------------------------------------------ the caller's words
#: How the command line names the options that messages mention.
CLI_WORDS: Mapping[str, str] = {
    "as_of": "--as-of", "mapping": "--map", "params": "--set", "sheet": "--sheet", "date_format": "--date-format",
    "customers_id": "--customers-id", "plugins_dir": "--plugins-dir", "modules": "--plugin",
    "output_dir": "--output-dir", "allow_outside": "--allow-outside", "delimiter": "--delimiter",
    "decimal_comma": "--decimal-comma", "force": "--force",
    "snapshots_as_of": "--snapshots", "every": "--every", "periods": "--periods", "end": "--end", "window": "--window",
    "cohort": "--cohort",
    "period_start": "--from", "period_end": "--to", "count_new_customers": "--count-new-customers",
    "engine": "--engine", "spark_master": "--spark-master", "spark_conf": "--spark-conf",
}
#: How a playbook names them (options a playbook does not have keep the outer words).
PLAYBOOK_WORDS: Mapping[str, str] = {
    "as_of": "data.as_of", "mapping": "data.map", "sheet": "data.sheet", "date_format": "data.date_format",
    "customers_id": "data.customers_id", "modules": "plugins", "delimiter": "data.delimiter",
    "decimal_comma": "data.decimal_comma",
    "snapshots_as_of": "snapshots.as_of", "every": "snapshots.every", "periods": "snapshots.periods",
    "end": "snapshots.end", "window": "snapshots.window", "cohort": "snapshots.cohort",
}
_WORDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("tierbook_words", default=MappingProxyType({}))


def option(name: str) -> str:
    """The caller's name for the option whose Python keyword is ``name``.

    From Python (the default) it is the keyword itself; inside :func:`speaking`
    it is the word given there (``--as-of`` for the command line).

    >>> option("as_of")
    'as_of'
    >>> with speaking(CLI_WORDS):
    ...     option("as_of")
    '--as-of'
    """
    return _WORDS.get().get(name, name)


def mapping_hint(canonical: str) -> str:
    """How the caller maps a canonical column onto a source column.

    >>> mapping_hint("order_date")
    "mapping={'order_date': COLUMN}"
    >>> with speaking(CLI_WORDS):
    ...     mapping_hint("order_date")
    '--map order_date=COLUMN'
    """
    word = option("mapping")
    if word.startswith("--"):
        return f"{word} {canonical}=COLUMN"
    if word == "mapping":
        return f"mapping={{{canonical!r}: COLUMN}}"
    return f"{word}: {{{canonical}: COLUMN}}"


def option_hint(name: str, value: str) -> str:
    """How the caller gives ``value`` to the option ``name``.

    >>> option_hint("customers_id", "COLUMN")
    'customers_id=COLUMN'
    >>> with speaking(CLI_WORDS):
    ...     option_hint("customers_id", "COLUMN")
    '--customers-id COLUMN'
    >>> with speaking(PLAYBOOK_WORDS):
    ...     option_hint("customers_id", "COLUMN")
    'data.customers_id: COLUMN'
    """
    word = option(name)
    if word.startswith("--"):
        return f"{word} {value}"
    if word == name:
        return f"{name}={value}"
    return f"{word}: {value}"


@contextlib.contextmanager
def speaking(words: Mapping[str, str]) -> Iterator[None]:
    """Within this block, messages name options by ``words`` (over the outer block's words)."""
    token = _WORDS.set({**_WORDS.get(), **words})
    try:
        yield
    finally:
        _WORDS.reset(token)
