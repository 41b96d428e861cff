"""Generated rules and customer tables, each rule rendered twice: as tierbook rule text and as an SQL
WHERE clause for SQLite (the reference engine of tests/engine/test_rules_sql.py and the fuzzer).

A rule is drawn as a tree and written out with the fewest parentheses standard SQL precedence allows
(``NOT`` over ``AND`` over ``OR``; comparisons over ``NOT``; ``* /`` over ``+ -``; unary minus tightest),
plus now and then a redundant pair. The SQL side is written from the same tree with the same
parentheses, so SQLite parses it with its own precedence: a tierbook parser that bound ``OR`` tighter
than ``AND`` or read ``NOT a AND b`` as ``NOT (a AND b)`` would disagree with it.

Where tierbook differs from SQL on purpose (docs/rules.md, "Differences from SQL"), the SQL side says
the same thing in SQLite's words:

- ``/`` always divides as real numbers (two integers too) and by zero gives null: the SQLite table
  stores numbers as REAL and integer literals are written ``3.0``.
- Dates are a type: SQLite keeps them as ISO text, so ``date + n`` is ``date(d, n || ' days')``,
  ``date - date`` is ``julianday(a) - julianday(b)``, ``YEAR(d)`` is ``strftime('%Y', d)``, a Datetime
  column is compared by its date (``date(t)``) and ``as_of`` is the run's date.
- Label (Enum) columns are their labels as text in SQLite.
- ``LOWER``/``UPPER`` are Unicode-aware; SQLite's built-ins only fold ASCII, so the reference uses
  Python's ``str.lower``/``str.upper``.
- Booleans are 1/0 in SQLite.

Not generated (refused by tierbook, so nothing to compare): ``x = NULL``, ``NULL`` in an IN list,
ordering comparisons of labels, arithmetic on text. Arithmetic on the Int8 score column (``rfm_r``)
is not generated either: Polars keeps Int8 arithmetic in Int8 (``rfm_r * 100`` wraps around), the
overflow case of issue 10 item 2.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

import polars as pl
from hypothesis import strategies as st

AS_OF = dt.date(2011, 12, 10)
ABC = ("A", "B", "C")
ADC = ("active", "new", "dormant", "churned", "prospect")
LABELS = {"abc": ABC, "adc": ADC}
SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "recency_days": pl.Int64(),
    "frequency": pl.Int64(),
    "monetary": pl.Float64(),
    "unit price": pl.Float64(),
    "first_order": pl.Date(),
    "last_order": pl.Date(),
    "signed_up": pl.Datetime("us"),
    "country": pl.String(),
    "vip": pl.Boolean(),
    "abc": pl.Enum(list(ABC)),
    "adc": pl.Enum(list(ADC)),
    "rfm_r": pl.Int8(),
}
INT_COLS = ["recency_days", "frequency"]
FLOAT_COLS = ["monetary", '"unit price"']
DATE_COLS = ["first_order", "last_order"]
TEXT_VALUES = ["France", "", "UK", "uk", "it's", "É", "ß", "A", "active", "Zürich"]

# precedence levels (higher binds tighter)
OR, AND, NOT, PRED, ADD, MUL, UNARY, ATOM = range(1, 9)


@dataclass(frozen=True)
class E:
    """One generated expression: tierbook text, SQL text and the precedence level of each."""

    tb: str
    sql: str
    tb_prec: int = ATOM
    sql_prec: int = ATOM


def _wrap(e: E, need: int, extra: bool) -> tuple[str, str]:
    tb = f"({e.tb})" if e.tb_prec < need or extra else e.tb
    sql = f"({e.sql})" if e.sql_prec < need or extra else e.sql
    return tb, sql


@st.composite
def _paren(draw, e: E, need: int) -> tuple[str, str]:
    return _wrap(e, need, draw(st.integers(0, 9)) == 0)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------- literals
int_lit = st.one_of(st.integers(0, 12), st.integers(0, 1000)).map(lambda i: E(str(i), f"{i}.0"))
float_lit = st.sampled_from(["0.5", "2.5", "1e2", ".25", "99.5", "0.0", "1234.75"]).map(lambda s: E(s, s))
text_lit = st.sampled_from(TEXT_VALUES).map(lambda s: E(_sql_text(s), _sql_text(s)))
dates = st.dates(dt.date(2009, 6, 1), dt.date(2012, 3, 1))


@st.composite
def date_lit(draw, plain_ok: bool) -> E:
    """A date literal; ``plain_ok``: where tierbook reads plain '2011-01-01' as a date (compared with a date)."""
    if draw(st.integers(0, 5)) == 0:
        return E("as_of", f"'{AS_OF}'")
    d = draw(dates)
    if plain_ok and draw(st.booleans()):
        return E(f"'{d}'", f"'{d}'")
    return E(f"DATE '{d}'", f"'{d}'")


# ---------------------------------------------------------------- value expressions
@st.composite
def small_int(draw, depth: int) -> E:
    """Whole numbers for date arithmetic (a few hundred days at most)."""
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(st.sampled_from(INT_COLS).map(lambda c: E(c, c)),
                              st.integers(0, 400).map(lambda i: E(str(i), f"{i}.0"))))
    op = draw(st.sampled_from(["+", "-"]))
    a, b = draw(small_int(depth - 1)), draw(small_int(0))
    la, sa = draw(_paren(a, ADD))
    lb, sb = draw(_paren(b, MUL))
    return E(f"{la} {op} {lb}", f"{sa} {op} {sb}", ADD, ADD)


@st.composite
def num(draw, depth: int, score_ok: bool = False) -> E:
    choice = draw(st.integers(0, 9 if depth > 0 else 3))
    if choice == 0:
        return draw(st.one_of(int_lit, float_lit))
    if choice == 1:
        c = draw(st.sampled_from(INT_COLS + FLOAT_COLS + (["rfm_r"] if score_ok else [])))
        return E(c, c)
    if choice == 2:
        fn = draw(st.sampled_from(["YEAR", "MONTH", "DAY", "DAYS_SINCE", "LENGTH", "ABS"]))
        if fn == "LENGTH":
            arg = draw(st.one_of(text(depth - 1), label_col()))
            return E(f"LENGTH({arg.tb})", f"CAST(length({arg.sql}) AS REAL)")
        if fn == "ABS":
            arg = draw(num(depth - 1))
            return E(f"ABS({arg.tb})", f"abs({arg.sql})")
        arg = draw(date(depth - 1, plain_ok=True))
        if fn == "DAYS_SINCE":
            return E(f"DAYS_SINCE({arg.tb})", f"(julianday('{AS_OF}') - julianday({arg.sql}))")
        fmt = {"YEAR": "%Y", "MONTH": "%m", "DAY": "%d"}[fn]
        return E(f"{fn}({arg.tb})", f"CAST(strftime('{fmt}', {arg.sql}) AS REAL)")
    if choice == 3:
        a, b = draw(date(depth - 1)), draw(date(depth - 1))
        la, _ = draw(_paren(a, ADD))
        lb, _ = draw(_paren(b, MUL))
        return E(f"{la} - {lb}", f"(julianday({a.sql}) - julianday({b.sql}))", ADD, ATOM)
    if choice == 4:
        inner = draw(num(depth - 1))
        t, s = draw(_paren(inner, UNARY))
        return E(f"- {t}", f"- {s}", UNARY, UNARY)
    op = draw(st.sampled_from(["+", "-", "*", "/"]))
    prec = ADD if op in "+-" else MUL
    a, b = draw(num(depth - 1)), draw(num(depth - 1))
    la, sa = draw(_paren(a, prec))
    lb, sb = draw(_paren(b, prec + 1))
    return E(f"{la} {op} {lb}", f"{sa} {op} {sb}", prec, prec)


@st.composite
def date(draw, depth: int, plain_ok: bool = False) -> E:
    choice = draw(st.integers(0, 4 if depth > 0 else 1))
    if choice == 0:
        return draw(date_lit(plain_ok))
    if choice == 1:
        c = draw(st.sampled_from(DATE_COLS + ["signed_up"]))
        return E(c, f"date({c})" if c == "signed_up" else c)
    d, n = draw(date(depth - 1)), draw(small_int(1))
    ld, _ = draw(_paren(d, ADD))
    ln, _ = draw(_paren(n, MUL))
    if choice == 2:
        return E(f"{ld} + {ln}",
                 f"(CASE WHEN ({n.sql}) IS NULL THEN NULL ELSE date({d.sql}, ({n.sql}) || ' days') END)", ADD, ATOM)
    if choice == 3:
        return E(f"{ld} - {ln}",
                 f"(CASE WHEN ({n.sql}) IS NULL THEN NULL ELSE date({d.sql}, (-({n.sql})) || ' days') END)", ADD, ATOM)
    ln2, _ = draw(_paren(n, ADD))
    ld2, _ = draw(_paren(d, MUL))
    return E(f"{ln2} + {ld2}", f"(CASE WHEN ({n.sql}) IS NULL THEN NULL ELSE date({d.sql}, ({n.sql}) || ' days') END)",
             ADD, ATOM)


def label_col() -> st.SearchStrategy[E]:
    return st.sampled_from(["abc", "adc"]).map(lambda c: E(c, c))


@st.composite
def text(draw, depth: int, literal_ok: bool = True) -> E:
    choice = draw(st.integers(0 if literal_ok else 1, 3 if depth > 0 else 1))
    if choice == 0:
        return draw(text_lit)
    if choice == 1:
        return E("country", "country")
    fn = draw(st.sampled_from(["LOWER", "UPPER"]))
    arg = draw(st.one_of(text(depth - 1), label_col()))
    return E(f"{fn}({arg.tb})", f"py_{fn.lower()}({arg.sql})")


# ---------------------------------------------------------------- conditions
COMPARE = ["=", "==", "<>", "!=", "<", "<=", ">", ">="]


@st.composite
def comparison(draw, depth: int) -> E:
    kind = draw(st.sampled_from(["num", "num", "date", "text", "label", "label_text", "bool"]))
    ops = COMPARE
    if kind == "num":  # two levels of arithmetic at most: Int64 products stay exact (and far from overflow)
        a, b = draw(num(min(depth, 2), score_ok=True)), draw(num(min(depth, 2), score_ok=True))
    elif kind == "date":
        a, b = draw(date(depth)), draw(date(depth, plain_ok=True))
    elif kind == "text":
        a, b = draw(text(depth)), draw(text(depth))
    elif kind == "label":
        col = draw(st.sampled_from(["abc", "adc"]))
        a, b = E(col, col), draw(st.sampled_from(LABELS[col]).map(lambda s: E(_sql_text(s), _sql_text(s))))
        ops = ["=", "<>", "!="]
    elif kind == "label_text":
        a, b = draw(label_col()), draw(text(depth, literal_ok=False))  # a text literal must be a label
        ops = ["=", "<>"]
    else:
        a, b = draw(condition(depth - 1)), draw(condition(depth - 1))
        ops = ["=", "<>"]
    if draw(st.booleans()):
        a, b = b, a
    op = draw(st.sampled_from(ops))
    la, sa = draw(_paren(a, ADD))
    lb, sb = draw(_paren(b, ADD))
    return E(f"{la} {op} {lb}", f"{sa} {op} {sb}", PRED, PRED)


@st.composite
def membership(draw, depth: int) -> E:
    kind = draw(st.sampled_from(["num", "text", "label", "date"]))
    if kind == "num":
        subject, items = draw(num(min(depth, 2), score_ok=True)), st.one_of(int_lit, float_lit)
    elif kind == "text":
        subject, items = draw(text(depth)), text_lit
    elif kind == "label":
        col = draw(st.sampled_from(["abc", "adc"]))
        subject, items = E(col, col), st.sampled_from(LABELS[col]).map(lambda s: E(_sql_text(s), _sql_text(s)))
    else:
        subject, items = draw(date(depth)), date_lit(True)
    values = draw(st.lists(items, min_size=1, max_size=4))
    word = draw(st.sampled_from(["IN", "NOT IN"]))
    ls, ss = draw(_paren(subject, ADD))
    return E(f"{ls} {word} ({', '.join(v.tb for v in values)})",
             f"{ss} {word} ({', '.join(v.sql for v in values)})", PRED, PRED)


@st.composite
def between(draw, depth: int) -> E:
    kind = draw(st.sampled_from(["num", "date", "text"]))
    if kind == "num":
        x, lo, hi = draw(num(min(depth, 2), score_ok=True)), draw(num(min(depth, 2))), draw(num(min(depth, 2)))
    elif kind == "date":
        x, lo, hi = draw(date(depth)), draw(date(depth, plain_ok=True)), draw(date(depth, plain_ok=True))
    else:
        x, lo, hi = draw(text(depth)), draw(text(depth)), draw(text(depth))
    word = draw(st.sampled_from(["BETWEEN", "NOT BETWEEN"]))
    (lx, sx), (ll, sl), (lh, sh) = (draw(_paren(e, ADD)) for e in (x, lo, hi))
    return E(f"{lx} {word} {ll} AND {lh}", f"{sx} {word} {sl} AND {sh}", PRED, PRED)


@st.composite
def null_test(draw, depth: int) -> E:
    subject = draw(st.one_of(num(min(depth, 2), score_ok=True), date(depth), text(depth), label_col(),
                             st.just(E("vip", "vip")), condition(depth - 1)))
    word = draw(st.sampled_from(["IS NULL", "IS NOT NULL"]))
    ls, ss = draw(_paren(subject, ADD))
    return E(f"{ls} {word}", f"{ss} {word}", PRED, PRED)


@st.composite
def condition(draw, depth: int) -> E:
    """A condition; above the leaves mostly logic (NOT, AND, OR), where precedence and nulls meet."""
    choice = draw(st.integers(0, 11 if depth > 0 else 5))
    if choice <= 1:
        return draw(comparison(max(depth - 1, 0)))
    if choice == 2:
        return draw(membership(max(depth - 1, 0)))
    if choice == 3:
        return draw(between(max(depth - 1, 0)))
    if choice == 4:
        return draw(st.sampled_from([E("vip", "vip"), E("TRUE", "TRUE"), E("FALSE", "FALSE")]))
    if choice == 5:
        return draw(null_test(max(depth - 1, 0)))
    if choice <= 7:
        inner = draw(condition(depth - 1))
        t, s = draw(_paren(inner, NOT))
        return E(f"NOT {t}", f"NOT {s}", NOT, NOT)
    word, prec = draw(st.sampled_from([("AND", AND), ("OR", OR)]))
    parts = [draw(_paren(draw(condition(depth - 1)), prec + 1)) for _ in range(draw(st.integers(2, 3)))]
    return E(f" {word} ".join(p[0] for p in parts), f" {word} ".join(p[1] for p in parts), prec, prec)


rules = st.integers(0, 4).flatmap(condition)


# ---------------------------------------------------------------- customer tables
def _maybe(strategy, null_weight: int = 2):
    return st.one_of(st.none(), *[strategy] * null_weight)


customer_rows = st.fixed_dictionaries({
    "recency_days": _maybe(st.integers(0, 400)),
    "frequency": _maybe(st.integers(0, 10)),
    "monetary": _maybe(st.sampled_from([-3.5, 0.0, 0.25, 2.5, 10.0, 99.5, 100.0, 500.0, 1234.75])),
    "unit price": _maybe(st.sampled_from([0.0, 0.5, 1.0, 2.5, 100.0])),
    "first_order": _maybe(dates),
    "last_order": _maybe(dates),
    "signed_up": _maybe(st.datetimes(dt.datetime(2009, 6, 1), dt.datetime(2012, 3, 1)).map(
        lambda t: t.replace(microsecond=0))),
    "country": _maybe(st.sampled_from(TEXT_VALUES)),
    "vip": _maybe(st.booleans()),
    "abc": _maybe(st.sampled_from(ABC)),
    "adc": _maybe(st.sampled_from(ADC)),
    "rfm_r": _maybe(st.integers(1, 5)),
})
tables = st.lists(customer_rows, min_size=0, max_size=12).map(
    lambda rows: pl.DataFrame([{"customer_id": f"c{i}", **r} for i, r in enumerate(rows)], schema=SCHEMA))


def sqlite_table(frame: pl.DataFrame) -> sqlite3.Connection:
    """The same customers in SQLite: numbers REAL, dates ISO text, labels text, booleans 1/0."""
    con = sqlite3.connect(":memory:")
    con.create_function("py_lower", 1, lambda s: None if s is None else s.lower(), deterministic=True)
    con.create_function("py_upper", 1, lambda s: None if s is None else s.upper(), deterministic=True)
    sql_types = {"customer_id": "TEXT", "country": "TEXT", "abc": "TEXT", "adc": "TEXT", "vip": "INTEGER",
                 "first_order": "TEXT", "last_order": "TEXT", "signed_up": "TEXT"}
    cols = list(frame.columns)
    con.execute("CREATE TABLE customers (" + ", ".join(f'"{c}" {sql_types.get(c, "REAL")}' for c in cols) + ")")

    def value(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, dt.datetime):
            return v.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(v, dt.date):
            return v.isoformat()
        if isinstance(v, int):
            return float(v)
        return v

    con.executemany(f"INSERT INTO customers VALUES ({', '.join('?' * len(cols))})",
                    [tuple(value(v) for v in row) for row in frame.iter_rows()])
    return con


def sqlite_matches(con: sqlite3.Connection, where: str) -> list[str]:
    return sorted(r[0] for r in con.execute(f"SELECT customer_id FROM customers WHERE {where}"))


def tierbook_matches(frame: pl.DataFrame, text: str) -> list[str]:
    from engine.rules import compile_rule

    compiled = compile_rule(text, frame.schema, labels=LABELS, as_of=AS_OF)
    hit = frame.select("customer_id", compiled.expr.alias("hit"))["hit"]  # as the engine evaluates rules
    assert hit.dtype == pl.Boolean and hit.null_count() == 0 and hit.len() == frame.height, text
    return sorted(frame.filter(hit)["customer_id"].to_list())
