"""The rule language: SQL-style conditions compiled to one vectorised Polars expression.

A rule's ``when`` is text such as::

    abc = 'A' AND adc IN ('dormant', 'churned') AND monetary > 500

It is tokenized and parsed here (a hand-written recursive-descent parser, no
``eval`` and no SQL engine), checked against the customer table's schema and the
classifiers' labels, and compiled to a Polars boolean expression over the
customer table. See ``docs/rules.md`` for the language reference.

>>> import datetime as dt, polars as pl
>>> schema = {"abc": pl.Enum(["A", "B", "C"]), "monetary": pl.Float64()}
>>> rule = compile_rule("abc = 'A' AND monetary > 500", schema, as_of=dt.date(2011, 12, 10))
>>> df = pl.DataFrame({"abc": ["A", "A", "B"], "monetary": [900.0, 100.0, 900.0]}, schema=schema)
>>> df.select(rule.expr.alias("hit"))["hit"].to_list()
[True, False, False]
>>> compile_rule("abc = 'D'", schema, as_of=dt.date(2011, 12, 10))
Traceback (most recent call last):
...
engine.rules.RuleError: 'D' is not a label of abc (labels: A, B, C) (at column 7)

Semantics follow SQL: a comparison with a null value is unknown, ``AND``/``OR``/
``NOT`` use three-valued logic, and a rule matches only where its condition is
true (unknown counts as not matched).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .errors import TierbookError, suggest

__all__ = ["RuleError", "CompiledRule", "Clause", "compile_rule", "FUNCTIONS", "KEYWORDS"]

#: Longest rule text accepted (characters) and deepest nesting of parentheses/operators.
MAX_LENGTH = 10_000
MAX_DEPTH = 64
#: Most arithmetic operations in one rule. A chain (``1 + 1 + ... + 1``) nests as deep as it is long,
#: and each operation's overflow check reads the chain below it, so the work grows with the cube of
#: the length (on the 250 sample customers, under load: 30 terms 0.13 s, 60 terms 0.95 s; 10,000 terms
#: ran 75 s and took 4 GB before operations were counted).
MAX_ARITHMETIC = 32

KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "BETWEEN", "TRUE", "FALSE", "DATE"})


class RuleError(TierbookError):
    """A rule's ``when`` cannot be compiled. ``position`` is the 0-based character offset.

    :func:`compile_rule` finds every problem of a rule in one pass: the error is the first one
    (its message and position) and ``errors`` lists all of them, the first included, in the
    order they were found.
    """

    def __init__(self, message: str, position: int | None = None):
        where = f" (at column {position + 1})" if position is not None else ""
        super().__init__(f"{message}{where}")
        self.message = message  # without the position, which is an attribute
        self.position = position
        self.errors: list[RuleError] = [self]


class _Fatal(RuleError):
    """A problem after which nothing more of the rule is read (nesting or arithmetic beyond the limits)."""


# ------------------------------------------------------------------ tokenizer
@dataclass(frozen=True)
class Token:
    kind: str   # NUMBER STRING IDENT QIDENT KEYWORD OP END
    value: Any
    start: int
    end: int


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|==|[=<>+\-*/(),])
""", re.VERBOSE)


#: Operators written the other way round, as new users type them, and the operator meant.
_REVERSED = {"=>": ">=", "=<": "<="}


def tokenize(text: str, errors: list[RuleError] | None = None) -> list[Token]:
    """Split rule text into tokens; an unknown character or an open quote is an error.

    With an ``errors`` list, a problem the tokens can go on past (an unknown character, ``=>``
    for ``>=``) is appended to it and tokenizing goes on; without one it is raised.

    >>> [t.value for t in tokenize("abc IN ('A','B') AND x >= 1.5")]
    ['abc', 'IN', '(', 'A', ',', 'B', ')', 'AND', 'x', '>=', 1.5, '']
    >>> tokenize("monetary => 500")
    Traceback (most recent call last):
    ...
    engine.rules.RuleError: '=>' is not an operator: did you mean '>='? (at column 10)
    """
    def problem(error: RuleError) -> None:
        if errors is None:
            raise error
        errors.append(error)

    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        reversed_op = text[pos:pos + 2]
        if reversed_op in _REVERSED:  # before the regex, which would read '=' then '>'
            meant = _REVERSED[reversed_op]
            problem(RuleError(f"{reversed_op!r} is not an operator: did you mean {meant!r}?", pos))
            tokens.append(Token("OP", meant, pos, pos + 2))
            pos += 2
            continue
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch == "'":
                raise RuleError("unterminated text literal: a closing ' is missing", pos)
            if ch == '"':
                raise RuleError('unterminated quoted column name: a closing " is missing', pos)
            hint = " (use = and <>, AND, OR and NOT)" if ch in "!&|" else ""
            problem(RuleError(f"unexpected character {ch!r}{hint}", pos))
            end = pos + (2 if text[pos:pos + 2] in ("&&", "||") else 1)
            if ch in "!&|":  # read on as the word meant, so the rest of the rule is checked as written
                tokens.append(Token("KEYWORD", {"!": "NOT", "&": "AND", "|": "OR"}[ch], pos, end))
            pos = end
            continue
        kind = m.lastgroup
        raw = m.group()
        start, pos = m.start(), m.end()
        if kind == "ws":
            continue
        if kind == "number":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if isinstance(value, int) and abs(value) > 2**63 - 1:  # Polars cannot hold it as a literal
                problem(RuleError(f"the number {raw} is too large for a whole number (at most {2**63 - 1}); "
                                  f"write it with a decimal point or exponent, e.g. {float(value):.3g}", start))
                value = float(value)
            tokens.append(Token("NUMBER", value, start, pos))
        elif kind == "string":
            tokens.append(Token("STRING", raw[1:-1].replace("''", "'"), start, pos))
        elif kind == "qident":
            name = raw[1:-1].replace('""', '"')
            if not name:
                problem(RuleError('empty quoted column name ""', start))
                name = '""'
            tokens.append(Token("QIDENT", name, start, pos))
        elif kind == "ident":
            if raw.upper() in KEYWORDS:
                tokens.append(Token("KEYWORD", raw.upper(), start, pos))
            else:
                tokens.append(Token("IDENT", raw, start, pos))
        else:
            tokens.append(Token("OP", "=" if raw == "==" else raw, start, pos))
    tokens.append(Token("END", "", len(text), len(text)))
    return tokens


# ------------------------------------------------------------------- AST
# Types of values in the language.
NUM, TEXT, BOOL, DATE, LABEL, NULL = "number", "text", "condition", "date", "label", "null"
#: The type of a part that has a problem already reported (an unknown column ...): it fits anywhere, so
#: one mistake is reported once, not again by every operator around it.
ERROR = "error"


@dataclass
class Node:
    kind: str                      # column literal compare in isnull between and or not arith neg func
    type: str
    start: int
    end: int
    expr: pl.Expr | None = None
    children: list[Node] = field(default_factory=list)
    value: Any = None              # literal value, column name, operator, function name
    labels: tuple[str, ...] | None = None   # for LABEL-typed columns
    columns: frozenset[str] = frozenset()
    integer: bool = False          # a number known to be whole (Int64): its arithmetic is checked as such
    #: True where an operation of this arithmetic overflows, one per checked operation in it
    checks: tuple[pl.Expr, ...] = ()

    @property
    def result(self) -> pl.Expr:
        """The expression as a value to compare or pass on: null where its arithmetic overflowed."""
        if not self.checks:
            return self.expr
        return pl.when(~pl.any_horizontal([c.fill_null(False) for c in self.checks])).then(self.expr)


_ARITH: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _describe(node: Node, text: str) -> str:
    src = text[node.start:node.end]
    if node.kind == "literal":
        return f"{src} ({node.type})"
    if node.kind == "column":
        return f"{src} (a {node.type} column)" if node.type != LABEL else f"{src} (a label column)"
    return f"{src} (a {node.type})"


# Functions: name -> (argument types, result type, builder(args exprs, as_of) -> expr, help)
def _days_until_anniversary(args: list[pl.Expr], as_of: dt.date) -> pl.Expr:
    d = args[0]
    years = pl.lit(as_of.year, pl.Int32) - d.dt.year().cast(pl.Int32)
    this_year = d.dt.offset_by(pl.format("{}y", years))
    next_year = d.dt.offset_by(pl.format("{}y", years + 1))
    ref = pl.lit(as_of, pl.Date)
    ann = pl.when(this_year >= ref).then(this_year).otherwise(next_year)
    return (ann - ref).dt.total_days()


def _days_since(args: list[pl.Expr], as_of: dt.date) -> pl.Expr:
    return (pl.lit(as_of, pl.Date) - args[0]).dt.total_days()


@dataclass(frozen=True)
class Function:
    args: tuple[str, ...]
    result: str
    build: Callable[[list[pl.Expr], dt.date], pl.Expr]
    help: str


#: Functions whose number is whole (an Int64).
_INTEGER_FUNCTIONS = frozenset({"YEAR", "MONTH", "DAY", "DAYS_SINCE", "DAYS_UNTIL_ANNIVERSARY", "LENGTH"})

#: The range of whole numbers in rules (Int64) and of dates (days from 1970-01-01 of 0001-01-01 and
#: 9999-12-31): arithmetic that leaves it is an overflow, never a wrap.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
DAY_MIN = (dt.date.min - dt.date(1970, 1, 1)).days
DAY_MAX = (dt.date.max - dt.date(1970, 1, 1)).days

FUNCTIONS: dict[str, Function] = {
    "YEAR": Function((DATE,), NUM, lambda a, _: a[0].dt.year().cast(pl.Int64), "the year of a date"),
    "MONTH": Function((DATE,), NUM, lambda a, _: a[0].dt.month().cast(pl.Int64), "the month of a date, 1-12"),
    "DAY": Function((DATE,), NUM, lambda a, _: a[0].dt.day().cast(pl.Int64), "the day of the month, 1-31"),
    "DAYS_SINCE": Function((DATE,), NUM, _days_since, "days from a date to as_of"),
    "DAYS_UNTIL_ANNIVERSARY": Function(
        (DATE,), NUM, _days_until_anniversary,
        "days from as_of to the next anniversary of a date (0 on the day; 29 February counts as 28 February "
        "in other years)"),
    "ABS": Function((NUM,), NUM, lambda a, _: a[0].abs(), "the absolute value of a number"),
    "LOWER": Function((TEXT,), TEXT, lambda a, _: a[0].str.to_lowercase(), "text in lower case"),
    "UPPER": Function((TEXT,), TEXT, lambda a, _: a[0].str.to_uppercase(), "text in upper case"),
    "LENGTH": Function((TEXT,), NUM, lambda a, _: a[0].str.len_chars().cast(pl.Int64), "number of characters"),
}


def _column_type(dtype: pl.DataType) -> str | None:
    if dtype == pl.Boolean:
        return BOOL
    if dtype.is_numeric():
        return NUM
    if dtype in (pl.String, pl.Categorical):
        return TEXT
    if isinstance(dtype, pl.Enum):
        return LABEL
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return DATE
    return None


# ------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent over the tokens. Every problem it can read past is appended to ``errors`` and
    parsing goes on (a broken part gets type ERROR); a syntax error is raised and caught at the next
    AND or OR, from where the rest of the rule is read."""

    def __init__(self, text: str, tokens: list[Token], errors: list[RuleError],
                 schema: Mapping[str, pl.DataType], labels: Mapping[str, Sequence[str]], as_of: dt.date):
        self.text = text
        self.tokens = tokens
        self.errors = errors
        #: the label column a comparison or IN list is about, while its right side is read
        self.context: Node | None = None
        self.i = 0
        self.schema = schema
        self.labels = labels
        self.as_of = as_of
        self.depth = 0
        #: (the text of an operation, true where it overflows) for every checked operation
        self.overflows: list[tuple[str, pl.Expr]] = []
        self.operations = 0

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at_keyword(self, *words: str) -> bool:
        return self.tok.kind == "KEYWORD" and self.tok.value in words

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "OP" and self.tok.value in ops

    def expect_op(self, op: str, context: str) -> Token:
        if not self.at_op(op):
            raise RuleError(f"expected {op!r} {context}, found {self._found()}", self.tok.start)
        return self.advance()

    def _found(self) -> str:
        t = self.tok
        return "the end of the rule" if t.kind == "END" else repr(self.text[t.start:t.end])

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fatal(f"the rule is nested more than {MAX_DEPTH} levels deep", self.tok.start)

    def error(self, message: str, position: int) -> None:
        """Report a problem and read on."""
        self.errors.append(RuleError(message, position))

    def since(self, mark: int) -> bool:
        """True when a problem was reported after ``mark`` (``len(self.errors)`` before a part was read)."""
        return len(self.errors) > mark

    def broken(self, start: int, end: int, typ: str = ERROR) -> Node:
        """A part whose problem is reported: no expression is built from it (it would not be used)."""
        return Node("error", typ, start, end, pl.lit(None))

    def skip_clause(self) -> None:
        """After a syntax error: skip to the next AND or OR outside parentheses (or the end)."""
        level, betweens = 0, 0
        while self.tok.kind != "END":
            if self.at_op("("):
                level += 1
            elif self.at_op(")"):
                if level == 0:
                    return
                level -= 1
            elif level == 0 and self.at_keyword("BETWEEN"):
                betweens += 1
            elif level == 0 and self.at_keyword("AND") and betweens:
                betweens -= 1
            elif level == 0 and self.at_keyword("AND", "OR"):
                return
            self.advance()

    def recovering(self, read: Callable[[], Node]) -> Node:
        """``read()``, or after a syntax error in it, the error reported and the clause skipped."""
        start, depth = self.tok.start, self.depth
        try:
            return read()
        except _Fatal:
            raise
        except RuleError as exc:
            self.errors.append(exc)
            self.depth = depth
            self.skip_clause()
            return self.broken(start, max(start, self.tok.start))

    # -- grammar
    def parse(self) -> Node:
        if not self.text.strip():
            raise RuleError("the rule is empty", 0)
        node = self.or_()
        if self.tok.kind != "END":
            hint = ""
            if self.tok.kind in ("IDENT", "STRING", "NUMBER", "QIDENT"):
                hint = " (a missing AND or OR?)"
            self.error(f"unexpected {self._found()}{hint}", self.tok.start)
            while self.tok.kind != "END":  # the rest is read for its own problems
                self.skip_clause()
                if self.at_op(")"):
                    self.advance()
                elif self.tok.kind != "END":  # at AND or OR
                    self.advance()
                    self.recovering(self.or_)
            return node
        self.require(node, BOOL, "the rule")
        return node

    def or_(self) -> Node:
        self.deeper()
        node = self._chain("OR", self.and_)
        self.depth -= 1
        return node

    def and_(self) -> Node:
        return self._chain("AND", self.not_)

    def _chain(self, word: str, operand: Callable[[], Node]) -> Node:
        """``a AND b AND c`` (or OR): one node whose children are the operands, flattened."""
        parts = [self.recovering(operand)]
        while self.at_keyword(word):
            self.advance()
            if len(parts) == 1:
                self.require(parts[0], BOOL, f"the left side of {word}")
            parts.append(self.recovering(operand))
            self.require(parts[-1], BOOL, f"the right side of {word}")
        if len(parts) == 1:
            return parts[0]
        if any(p.type == ERROR for p in parts):
            return self.broken(parts[0].start, parts[-1].end, BOOL)
        op = word.lower()
        # a parenthesised chain of the same operator joins this one, so explanations list every clause
        kids = [kid for part in parts for kid in (part.children if part.kind == op else [part])]
        return Node(op, BOOL, parts[0].start, parts[-1].end, _balanced(op, [k.expr for k in kids]), kids,
                    columns=frozenset().union(*(k.columns for k in kids)))

    def not_(self) -> Node:
        if self.at_keyword("NOT"):
            start = self.advance().start
            self.deeper()
            inner = self.not_()
            self.depth -= 1
            self.require(inner, BOOL, "NOT")
            if inner.type == ERROR or inner.kind == "error":
                return self.broken(start, inner.end, BOOL)
            return Node("not", BOOL, start, inner.end, ~inner.expr, [inner], columns=inner.columns)
        return self.predicate()

    def predicate(self) -> Node:
        left = self.additive()
        if self.at_op("=", "!=", "<>", "<", "<=", ">", ">="):
            op = self.advance().value
            self.context = left if left.type == LABEL else None
            right = self.additive()
            self.context = None
            return self.compare(op, left, right)
        negate = False
        if self.at_keyword("NOT") and self.tokens[self.i + 1].kind == "KEYWORD" \
                and self.tokens[self.i + 1].value in ("IN", "BETWEEN"):
            self.advance()
            negate = True
        if self.at_keyword("IN"):
            return self.in_list(left, negate)
        if self.at_keyword("BETWEEN"):
            return self.between(left, negate)
        if self.at_keyword("IS"):
            self.advance()
            is_not = False
            if self.at_keyword("NOT"):
                self.advance()
                is_not = True
            if not self.at_keyword("NULL"):
                raise RuleError(f"expected NULL after IS{' NOT' if is_not else ''}, found {self._found()}",
                                self.tok.start)
            end = self.advance().end
            if left.kind == "error":
                return self.broken(left.start, end, BOOL)
            expr = left.result.is_not_null() if is_not else left.result.is_null()
            return Node("isnull", BOOL, left.start, end, expr, [left], value=is_not, columns=left.columns)
        return left

    def compare(self, op: str, left: Node, right: Node) -> Node:
        mark = len(self.errors)
        for side in (left, right):
            if side.type == NULL:
                self.error("a comparison with NULL is never true: write 'x IS NULL' or 'x IS NOT NULL'", side.start)
        if self.since(mark) or ERROR in (left.type, right.type) or "error" in (left.kind, right.kind):
            return self.broken(left.start, right.end, BOOL)
        left, right = self.unify(left, right)
        if LABEL in (left.type, right.type) and op in ("<", "<=", ">", ">="):
            col = left if left.type == LABEL else right
            self.error(f"{self.text[col.start:col.end]} holds labels: compare it with =, <> or IN, "
                       f"not {op} (labels: {', '.join(col.labels or ())})", col.start)
        if BOOL in (left.type, right.type) and op in ("<", "<=", ">", ">="):
            self.error(f"conditions can only be compared with = or <>, not {op}", left.start)
        if self.since(mark):
            return self.broken(left.start, right.end, BOOL)
        a, b = left.result, right.result
        expr = {"=": a == b, "!=": a != b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return Node("compare", BOOL, left.start, right.end, expr, [left, right], value=op,
                    columns=left.columns | right.columns)

    def unify(self, left: Node, right: Node) -> tuple[Node, Node]:
        """Check two operands can be compared; coerce text literals to labels and dates. An operand whose problem
        is reported already (a broken part, or one of type ERROR) is not checked again."""
        if ERROR in (left.type, right.type) or "error" in (left.kind, right.kind):
            return left, right
        for a, b in ((left, right), (right, left)):
            if a.type == LABEL and b.kind == "literal" and b.type == TEXT:
                self.check_label(a, b)
                b.type = LABEL
            if a.type == DATE and b.kind == "literal" and b.type == TEXT:
                b.value = self.parse_date(b.value, b.start)
                b.expr = pl.lit(b.value, pl.Date)
                b.type = DATE
        if left.type == LABEL and right.type == LABEL and left.kind == "column" and right.kind == "column" \
                and tuple(left.labels or ()) != tuple(right.labels or ()):
            self.error(f"{left.value} and {right.value} have different labels and cannot be compared", left.start)
        elif left.type != right.type and {left.type, right.type} != {TEXT, LABEL}:
            self.error(f"cannot compare {_describe(left, self.text)} with {_describe(right, self.text)}",
                       left.start)
        return left, right

    def check_label(self, column: Node, literal: Node) -> None:
        labels = column.labels or ()
        if literal.value not in labels:
            close = suggest(literal.value, labels)
            self.error(f"{literal.value!r} is not a label of {column.value} "
                       f"(labels: {', '.join(labels)}){close}", literal.start)

    def parse_date(self, value: str, pos: int) -> dt.date:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.error(f"{value!r} is not a date (write YYYY-MM-DD, e.g. DATE '2011-12-09')", pos)
            return dt.date(1970, 1, 1)  # a stand-in: the rule is refused

    def in_list(self, left: Node, negate: bool) -> Node:
        self.advance()  # IN
        self.expect_op("(", "after IN")
        mark = len(self.errors)
        items: list[Node] = []
        while True:
            self.context = left if left.type == LABEL else None
            item = self.unary()
            self.context = None
            if item.kind == "error":
                pass  # reported
            elif item.kind != "literal":
                self.error("IN takes a list of literal values such as ('A', 'B')", item.start)
            elif item.type == NULL:
                self.error("NULL in an IN list never matches: use 'x IS NULL'", item.start)
            else:
                self.unify(left, item)
            items.append(item)
            if self.at_op(","):
                self.advance()
                continue
            end = self.expect_op(")", "to close the IN list").end
            break
        if self.since(mark) or left.type == ERROR or left.kind == "error":
            return self.broken(left.start, end, BOOL)
        values = [it.value for it in items]
        enum = self.schema.get(left.value) if left.kind == "column" else None
        if left.type == LABEL and isinstance(enum, pl.Enum) and set(values) <= set(enum.categories.to_list()):
            # Compared as the column's own Enum: codes, not 1M strings (every value is one of its labels).
            subject, dtype = left.expr, enum
        elif left.type == LABEL:
            subject, dtype = left.result.cast(pl.String), pl.String
        elif left.type == NUM:
            subject, dtype, values = left.result.cast(pl.Float64), pl.Float64, [float(v) for v in values]
        elif left.type == DATE:
            subject, dtype = left.result, pl.Date
        elif left.type == BOOL:
            subject, dtype = left.expr, pl.Boolean
        else:
            subject, dtype = left.expr, pl.String
        expr = subject.is_in(pl.lit(pl.Series(values, dtype=dtype)).implode())
        # is_in gives null for a null x: x IN (...) is unknown then, as in SQL, and so is x NOT IN (...)
        if negate:
            expr = ~expr
        return Node("in", BOOL, left.start, end, expr, [left, *items], value=negate, columns=left.columns)

    def between(self, left: Node, negate: bool) -> Node:
        self.advance()  # BETWEEN
        low = self.additive()
        if not self.at_keyword("AND"):
            found = RuleError(f"expected AND in BETWEEN ... AND ..., found {self._found()}", self.tok.start)
            if not self.at_keyword("OR"):
                raise found
            self.errors.append(found)  # BETWEEN 1 OR 2: the bounds are read on as meant
            self.advance()
            high = self.additive()
            return self.broken(left.start, high.end, BOOL)
        self.advance()
        high = self.additive()
        mark = len(self.errors)
        for bound in (low, high):
            if bound.type == NULL:
                self.error("BETWEEN needs two bounds, not NULL", bound.start)
            else:
                self.unify(left, bound)
        if left.type in (LABEL, BOOL) and left.kind != "error":
            self.error(f"BETWEEN needs numbers, dates or text, not {_describe(left, self.text)}", left.start)
        if self.since(mark) or ERROR in (left.type, low.type, high.type):
            return self.broken(left.start, high.end, BOOL)
        expr = (left.result >= low.result) & (left.result <= high.result)
        if negate:
            expr = ~expr
        return Node("between", BOOL, left.start, high.end, expr, [left, low, high], value=negate,
                    columns=left.columns | low.columns | high.columns)

    def negate(self, tok: Token, inner: Node) -> Node:
        self.count_operation(tok.start)
        text = self.text[tok.start:inner.end]
        if inner.integer:
            expr, check = self.checked_int(pl.lit(0, pl.Int128) - inner.expr.cast(pl.Int128), text)
        else:
            expr, check = -inner.expr, None
        return Node("neg", NUM, tok.start, inner.end, expr, [inner], columns=inner.columns, integer=inner.integer,
                    checks=inner.checks + ((check,) if check is not None else ()))

    def additive(self) -> Node:
        left = self.multiplicative()
        while self.at_op("+", "-"):
            op = self.advance().value
            right = self.multiplicative()
            left = self.arith(op, left, right)
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while self.at_op("*", "/"):
            op = self.advance().value
            right = self.unary()
            left = self.arith(op, left, right)
        return left

    def count_operation(self, pos: int) -> None:
        self.operations += 1
        if self.operations > MAX_ARITHMETIC:
            raise _Fatal(f"the rule has more than {MAX_ARITHMETIC} arithmetic operations; compute such a value "
                         f"as a feature or a customer table column instead", pos)

    def arith(self, op: str, left: Node, right: Node) -> Node:
        self.count_operation(right.start)
        types = (left.type, right.type)
        if ERROR in types:
            return self.broken(left.start, right.end)
        a, b = left.expr, right.expr
        integer = False
        text = self.text[left.start:right.end]
        check = None
        if types == (NUM, NUM):
            if op == "/":
                # x / 0 is null: the divisor's zeros become null (not pl.when(b != 0).then(...): on an all-null
                # divisor Polars gave that a length-1 result, and any operator on it failed with a ShapeError)
                expr, check = self.checked_float(a.cast(pl.Float64) / b.cast(pl.Float64).replace(0.0, None), [a, b],
                                                 text)
            elif left.integer and right.integer:
                expr, check = self.checked_int(_ARITH[op](a.cast(pl.Int128), b.cast(pl.Int128)), text)
                integer = True
            else:
                expr, check = self.checked_float(_ARITH[op](a.cast(pl.Float64), b.cast(pl.Float64)), [a, b], text)
            typ = NUM
        elif types == (DATE, DATE) and op == "-":
            expr, typ, integer = (a - b).dt.total_days(), NUM, True
        elif types == (DATE, NUM) and op in "+-":
            (expr, check), typ = self.checked_date(a, right, op, text), DATE
        elif types == (NUM, DATE) and op == "+":
            (expr, check), typ = self.checked_date(b, left, op, text), DATE
        else:
            self.error(f"cannot compute {_describe(left, self.text)} {op} {_describe(right, self.text)}", left.start)
            return self.broken(left.start, right.end)
        return Node("arith", typ, left.start, right.end, expr, [left, right], value=op,
                    columns=left.columns | right.columns, integer=integer,
                    checks=left.checks + right.checks + ((check,) if check is not None else ()))

    # Arithmetic never wraps: whole numbers are computed in Int128 and each step must fit an Int64; a
    # float result must be finite when its operands are; a date must lie in 0001-01-01..9999-12-31. Each
    # operation returns its raw value and a flag, true where it overflows. The raw value goes up the
    # arithmetic as it is (an Int128 stays exact while every step before it fit an Int64); where it is
    # compared or passed to a function it is null if any step overflowed (Node.result), and a run stops
    # on a flag with a message naming the rule, the operation and a customer. Guarding each step
    # instead would put its operand into the expression twice per step: 2**n nodes for n steps.
    def checked_int(self, wide: pl.Expr, text: str) -> tuple[pl.Expr, pl.Expr]:
        over = (wide < pl.lit(INT_MIN, pl.Int128)) | (wide > pl.lit(INT_MAX, pl.Int128))
        self.overflows.append((f"{text} leaves the whole numbers of 64 bits ({INT_MIN:,}..{INT_MAX:,})", over))
        return wide, over

    def checked_float(self, result: pl.Expr, operands: list[pl.Expr], text: str) -> tuple[pl.Expr, pl.Expr]:
        over = result.is_infinite() & pl.all_horizontal([o.cast(pl.Float64).is_finite() for o in operands])
        self.overflows.append((f"{text} is too large for a number (over about 1.8e308)", over))
        return result, over

    def checked_date(self, date: pl.Expr, days: Node, op: str, text: str) -> tuple[pl.Expr, pl.Expr]:
        n = days.expr.cast(pl.Int128) if days.integer else days.expr.cast(pl.Float64).cast(pl.Int128, strict=False)
        base = date.to_physical().cast(pl.Int128)
        day = base + n if op == "+" else base - n
        over = (day < DAY_MIN) | (day > DAY_MAX) | (days.expr.is_not_null() & n.is_null())
        self.overflows.append((f"{text} is not a date between {dt.date.min} and {dt.date.max}", over))
        return day.cast(pl.Int32, strict=False).cast(pl.Date), over

    def unary(self) -> Node:
        if self.at_op("-", "+"):
            tok = self.advance()
            self.deeper()
            inner = self.unary()
            self.depth -= 1
            if inner.type == ERROR:
                return inner
            if inner.type != NUM:
                self.error(f"a sign needs a number, not {_describe(inner, self.text)}", inner.start)
                return self.broken(tok.start, inner.end)
            if tok.value == "+":
                return inner
            if inner.kind == "literal":
                return Node("literal", NUM, tok.start, inner.end, pl.lit(-inner.value), value=-inner.value,
                            integer=inner.integer)
            return self.negate(tok, inner)
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "NUMBER":
            self.advance()
            return Node("literal", NUM, t.start, t.end, pl.lit(t.value), value=t.value,
                        integer=isinstance(t.value, int))
        if t.kind == "STRING":
            self.advance()
            return Node("literal", TEXT, t.start, t.end, pl.lit(t.value, pl.String), value=t.value)
        if t.kind == "KEYWORD":
            if t.value in ("TRUE", "FALSE"):
                self.advance()
                return Node("literal", BOOL, t.start, t.end, pl.lit(t.value == "TRUE"), value=t.value == "TRUE")
            if t.value == "NULL":
                self.advance()
                return Node("literal", NULL, t.start, t.end, pl.lit(None), value=None)
            if t.value == "DATE":
                self.advance()
                if self.tok.kind != "STRING":
                    raise RuleError(f"expected a date in quotes after DATE, found {self._found()}", self.tok.start)
                s = self.advance()
                value = self.parse_date(s.value, s.start)
                return Node("literal", DATE, t.start, s.end, pl.lit(value, pl.Date), value=value)
            raise RuleError(f"unexpected {t.value} (a value or column was expected)", t.start)
        if t.kind == "OP" and t.value == "(":
            self.advance()
            self.deeper()
            inner = self.or_()
            self.depth -= 1
            end = self.expect_op(")", "to close the parenthesis").end
            inner.start, inner.end = t.start, end
            return inner
        if t.kind == "IDENT" and self.tokens[self.i + 1].kind == "OP" and self.tokens[self.i + 1].value == "(":
            return self.function()
        if t.kind in ("IDENT", "QIDENT"):
            self.advance()
            return self.column(t)
        if t.kind == "END":
            raise RuleError("the rule ends too early: a value or column is missing", t.start)
        raise RuleError(f"unexpected {self._found()} (a value or column was expected)", t.start)

    def column(self, t: Token) -> Node:
        name = t.value
        if name not in self.schema:
            if name == "as_of":
                return Node("literal", DATE, t.start, t.end, pl.lit(self.as_of, pl.Date), value=self.as_of)
            message, end = self.unknown_column(t)
            self.error(message, t.start)
            while self.tok.kind != "END" and self.tok.start < end:  # the rest of a label such as high-value
                self.advance()
            return self.broken(t.start, end)
        dtype = self.schema[name]
        typ = _column_type(dtype)
        if typ is None:
            self.error(f"column {name!r} has type {dtype}, which rules cannot use", t.start)
            return self.broken(t.start, t.end)
        expr = pl.col(name)
        labels = None
        if typ == LABEL:
            labels = tuple(self.labels.get(name) or dtype.categories.to_list())
        elif typ == DATE and isinstance(dtype, pl.Datetime):
            expr = expr.dt.date()
        return Node("column", typ, t.start, t.end, expr, value=name, labels=labels, columns=frozenset({name}),
                    integer=typ == NUM and dtype.is_integer())

    def unknown_column(self, t: Token) -> tuple[str, int]:
        """Why a name is no column (a label or text written without single quotes is said so), and where the
        unquoted label ends (``high-value`` is three tokens): the end of the name otherwise."""
        name = t.value
        sets = {col: tuple(self.labels.get(col) or dtype.categories.to_list())
                for col, dtype in self.schema.items() if isinstance(dtype, pl.Enum)}
        sets.update({col: tuple(labels) for col, labels in self.labels.items() if col in self.schema})
        if self.context is not None and self.context.kind == "column":  # the column being compared comes first
            sets = {self.context.value: tuple(self.context.labels or ()), **sets}
        end = t.end
        owner = next(((col, label) for col, labels in sets.items() for label in labels if label == name), None) \
            or next(((col, label) for col, labels in sets.items() for label in labels
                     if label.casefold() == name.casefold()), None)
        if t.kind == "IDENT":  # a label of several words or with signs, written as it is: the longest label the
            # text goes on with, ending where a word does (``high-value`` is that label, not ``high`` of another)
            rest = self.text[t.start:]
            found = sorted(((len(label), col, label) for col, labels in sets.items() for label in labels
                            if rest.startswith(label)
                            and (len(rest) == len(label) or not (rest[len(label)].isalnum() or rest[len(label)] == "_"))),
                           reverse=True)
            if found:
                _, col, label = found[0]
                owner, end, name = (col, label), t.start + len(label), label
        written = f'"{name}"' if t.kind == "QIDENT" else name
        if owner is not None:
            col, label = owner
            quoted = "'" + label.replace("'", "''") + "'"
            return (f"unknown column {written}: {quoted} is a label of {col}, and labels are written in single "
                    f"quotes: {col} = {quoted}", end)
        if t.kind == "QIDENT":
            close = suggest(name, self.schema)
            quoted = "'" + name.replace("'", "''") + "'"
            return (f"unknown column {written}: double quotes name a column; text and labels are written in single "
                    f"quotes: {quoted}{close}", end)
        return f"unknown column {name!r}{suggest(name, self.schema)}", end

    def function(self) -> Node:
        t = self.advance()
        name = t.value.upper()
        fn = FUNCTIONS.get(name)
        mark = len(self.errors)
        if fn is None:
            self.error(f"unknown function {t.value}(){suggest(name, FUNCTIONS)}", t.start)
        self.advance()  # (
        args: list[Node] = []
        if not self.at_op(")"):
            while True:
                args.append(self.or_())
                if self.at_op(","):
                    self.advance()
                    continue
                break
        end = self.expect_op(")", f"to close {name}(").end
        if fn is None:
            return self.broken(t.start, end)
        if len(args) != len(fn.args):
            self.error(f"{name}() takes {len(fn.args)} argument(s), got {len(args)}", t.start)
            return self.broken(t.start, end, fn.result)
        for arg, want in zip(args, fn.args):
            if arg.type == ERROR:
                continue
            if arg.kind == "literal" and arg.type == TEXT and want == DATE:
                arg.value = self.parse_date(arg.value, arg.start)
                arg.expr, arg.type = pl.lit(arg.value, pl.Date), DATE
            if arg.type == LABEL and want == TEXT:
                arg.expr, arg.type = arg.expr.cast(pl.String), TEXT
            if arg.type != want:
                self.error(f"{name}() needs a {want}, not {_describe(arg, self.text)}", arg.start)
        if self.since(mark) or any(a.type == ERROR for a in args):
            return self.broken(t.start, end, fn.result)
        integer = name in _INTEGER_FUNCTIONS or (name == "ABS" and args[0].integer)
        checks: tuple[pl.Expr, ...] = ()
        if name == "ABS" and integer:  # abs of the smallest Int64 does not fit: checked like arithmetic
            self.count_operation(t.start)
            expr, check = self.checked_int(args[0].expr.cast(pl.Int128).abs(), self.text[t.start:end])
            checks = (*args[0].checks, check)
        else:
            expr = fn.build([a.result for a in args], self.as_of)
        columns = frozenset().union(*(a.columns for a in args))
        return Node("func", fn.result, t.start, end, expr, args, value=name, columns=columns, integer=integer,
                    checks=checks)

    def require(self, node: Node, typ: str, where: str) -> None:
        if node.type not in (typ, ERROR):
            got = _describe(node, self.text)
            hint = ""
            if node.kind == "column" and node.type == LABEL:
                hint = f" (compare it, e.g. {node.value} = '{(node.labels or ('A',))[0]}')"
            self.error(f"{where} must be a condition, not {got}{hint}", node.start)
            node.type = ERROR  # reported once: the operators around it do not report it again


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class Clause:
    """One condition of a rule as written, for explanations."""

    text: str
    expr: pl.Expr
    columns: tuple[str, ...]
    depth: int
    kind: str   # "and", "or", "not" or "condition"
    #: a comparison's operands as it compares them (after arithmetic and functions), and how to show them:
    #: ``form`` is e.g. ``"{0} > {1}"``, filled with the operands' values for an explanation. Empty when
    #: every operand is a column (as stored) or a literal: the column values shown are what was compared.
    operands: tuple[pl.Expr, ...] = ()
    form: str = ""


@dataclass(frozen=True)
class CompiledRule:
    """A compiled ``when``: ``expr`` is true exactly where the rule matches (null counts as false)."""

    text: str
    expr: pl.Expr
    columns: frozenset[str]
    clauses: tuple[Clause, ...]
    #: (what overflows, true where it does) for each checked arithmetic operation of the rule
    overflows: tuple[tuple[str, pl.Expr], ...] = ()
    #: The parsed condition (literals coerced to the labels and dates they are compared with), for the
    #: static analysis of ``tierbook check`` (:mod:`engine.playbook.check`).
    tree: Node | None = field(default=None, compare=False, repr=False)

    @property
    def overflow(self) -> pl.Expr | None:
        """True for a customer where some arithmetic of the rule overflows (None: the rule has none)."""
        if not self.overflows:
            return None
        return pl.any_horizontal([flag.fill_null(False) for _, flag in self.overflows])

    def overflow_error(self, customers: pl.DataFrame) -> str | None:
        """The first overflow of the rule on ``customers``: the operation, a customer and how many (None: none)."""
        for what, flag in self.overflows:
            hits = customers.filter(flag.fill_null(False))
            if hits.height:
                first = hits.row(0, named=True)
                values = ", ".join(f"{c} = {_show(first[c])}" for c in sorted(self.columns) if c in first)
                who = f"customer {_show(first['customer_id'])}" if "customer_id" in first else "a customer"
                return (f"{what} for {who} ({values})"
                        + (f" and {hits.height - 1:,} more" if hits.height > 1 else ""))
        return None

    def explain(self, row: pl.DataFrame) -> list[tuple[Clause, bool | None, dict[str, Any]]]:
        """Evaluate every clause on a one-row frame: (clause, true/false/None=unknown, column values)."""
        return [(clause, value, seen) for clause, value, seen, _ in self._evaluate(row)]

    def compared(self, row: pl.DataFrame) -> list[str]:
        """For each clause of a one-row frame, the values it compared, as text (``"312.45 > 500"``; ``""``
        for a clause that compares nothing, such as ``all of:`` or a Boolean column)."""
        return [shown for *_, shown in self._evaluate(row)]

    def _evaluate(self, row: pl.DataFrame) -> list[tuple[Clause, bool | None, dict[str, Any], str]]:
        if row.height != 1:
            raise ValueError(f"explain needs exactly one row, got {row.height}")
        exprs = [c.expr.alias(f"_c{i}") for i, c in enumerate(self.clauses)]
        exprs += [e.alias(f"_v{i}_{j}") for i, c in enumerate(self.clauses) for j, e in enumerate(c.operands)]
        values = row.select(exprs).row(0, named=True)
        out = []
        for i, clause in enumerate(self.clauses):
            seen = {col: row[col][0] for col in clause.columns}
            shown = clause.form.format(*(_show(values[f"_v{i}_{j}"]) for j in range(len(clause.operands)))) \
                if clause.operands else ""
            out.append((clause, values[f"_c{i}"], seen, shown))
        return out

    def explain_text(self, row: pl.DataFrame, indent: str = "    ") -> str:
        """Readable lines: each clause with its outcome and the customer's values it looked at."""
        return "\n".join(self.explain_lines(row, indent))

    def explain_lines(self, row: pl.DataFrame, indent: str = "    ") -> list[str]:
        """The lines of :meth:`explain_text`, one per clause (a clause's text may hold line breaks)."""
        lines = []
        for clause, value, seen, compared in self._evaluate(row):
            mark = {True: "true ", False: "FALSE", None: "null "}[value]
            shown = ", ".join(f"{k} = {_show(v)}" for k, v in seen.items())
            if compared:
                shown = f"{shown}; compared {compared}" if shown else f"compared {compared}"
            detail = f"   ({shown})" if shown and clause.kind == "condition" else ""
            lines.append(f"{indent}{'  ' * clause.depth}[{mark}] {clause.text}{detail}")
        return lines


def _show(value: Any) -> str:
    """A value exactly as compared: text quoted, a float with every digit it has (``repr``), never rounded.

    >>> _show(1234567.891), _show(800.0), _show("A"), _show(None), _show(dt.date(2011, 12, 9))
    ('1234567.891', '800.0', "'A'", 'null', '2011-12-09')
    """
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _balanced(op: str, exprs: list[pl.Expr]) -> pl.Expr:
    """Combine with ``&`` or ``|`` as a balanced tree (the same three-valued logic as a chain).

    Polars takes time growing faster than quadratically to optimise a left-deep chain
    ``((a & b) & c) & ...`` (a rule of 580 clauses: 26 s), a balanced tree milliseconds.
    """
    if len(exprs) == 1:
        return exprs[0]
    mid = len(exprs) // 2
    left, right = _balanced(op, exprs[:mid]), _balanced(op, exprs[mid:])
    return (left & right) if op == "and" else (left | right)


def _clauses(node: Node, text: str, depth: int = 0) -> list[Clause]:
    src = text[node.start:node.end].strip()
    if node.kind in ("and", "or"):
        head = [] if depth == 0 and node.kind == "and" else [
            Clause(f"{'all' if node.kind == 'and' else 'any'} of: {src}", node.expr,
                   tuple(sorted(node.columns)), depth, node.kind)]
        inner = depth if not head else depth + 1
        return head + [c for kid in node.children for c in _clauses(kid, text, inner)]
    if node.kind == "not" and node.children[0].kind in ("and", "or", "not"):
        head = [Clause(src, node.expr, tuple(sorted(node.columns)), depth, "not")]
        return head + _clauses(node.children[0], text, depth + 1)
    operands, form = _operands(node)
    return [Clause(src, node.expr, tuple(sorted(node.columns)), depth, "condition", operands, form)]


def _operands(node: Node) -> tuple[tuple[pl.Expr, ...], str]:
    """What a condition compares (each operand's value as compared) and how to show it."""
    kids = node.children
    if all(k.kind == "literal" or (k.kind == "column" and k.expr.meta.is_column()) for k in kids):
        return (), ""
    negate = "NOT " if node.value is True else ""
    if node.kind == "compare":
        return (kids[0].result, kids[1].result), "{0} " + str(node.value) + " {1}"
    if node.kind == "in":
        items = ", ".join("{" + str(j) + "}" for j in range(1, len(kids)))
        return tuple(k.result for k in kids), "{0} " + negate + "IN (" + items + ")"
    if node.kind == "between":
        return tuple(k.result for k in kids), "{0} " + negate + "BETWEEN {1} AND {2}"
    if node.kind == "isnull":
        return (kids[0].result,), "{0} IS " + ("NOT " if node.value else "") + "NULL"
    return (), ""


def compile_rule(text: str, schema: Mapping[str, pl.DataType], *, labels: Mapping[str, Sequence[str]] | None = None,
                 as_of: dt.date | None = None) -> CompiledRule:
    """Compile ``text`` against the customer table's ``schema``.

    ``labels`` maps a label column (``abc``) to its labels, best first; label
    columns not in it take their Enum's categories. ``as_of`` is the date the
    functions ``DAYS_SINCE`` and ``DAYS_UNTIL_ANNIVERSARY`` and the name ``as_of``
    refer to. Raises :class:`RuleError` naming the offending token.
    """
    if not isinstance(text, str):
        raise RuleError(f"a rule must be text, got {type(text).__name__} {text!r}")
    if len(text) > MAX_LENGTH:
        raise RuleError(f"the rule is {len(text):,} characters long; at most {MAX_LENGTH:,} are accepted")
    errors: list[RuleError] = []
    node = None
    try:
        tokens = tokenize(text, errors)
        parser = _Parser(text, tokens, errors, schema, labels or {}, as_of or dt.date.today())
        node = parser.parse()
    except RuleError as exc:  # an error nothing more of the rule can be read after
        errors.append(exc)
    if errors:
        # each problem once, in the order of the text (a problem with no position first)
        unique = sorted({(e.message, e.position): e for e in errors}.values(), key=lambda e: e.position or 0)
        first = unique[0]
        first.errors = unique
        raise first
    return CompiledRule(text=text, expr=node.expr.fill_null(False), columns=node.columns,
                        clauses=tuple(_clauses(node, text)), overflows=tuple(parser.overflows), tree=node)

