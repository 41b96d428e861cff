"""Fuzzing the playbook loader and the rule compiler (hypothesis).

The only failure either may raise is the documented validation error,
:class:`~engine.errors.TierbookError` (``PlaybookError``, ``RuleError`` ...). A
rule that compiles must also evaluate on a customer table without error.

In CI each fuzz test runs a bounded number of examples (about 20-30 s in all).
The long run (10 minutes or more, outside CI) reuses these strategies and checks:

    .venv/bin/python tools/fuzz.py --seconds 600

and its result is recorded in docs/fuzzing.md.
"""

from __future__ import annotations

import datetime as dt
import string
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import TierbookError
from engine.playbook import load_playbook
from engine.registry import get_registry
from engine.rules import FUNCTIONS, KEYWORDS, compile_rule

CI = settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.filter_too_much])
AS_OF = dt.date(2011, 12, 10)

# ------------------------------------------------------------------ the rule compiler
SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "recency_days": pl.Int64(),
    "frequency": pl.Int64(),
    "monetary": pl.Float64(),
    "first_order": pl.Date(),
    "last_order": pl.Date(),
    "avg_order_value": pl.Float64(),
    "country": pl.String(),
    "birthday": pl.Date(),
    "vip": pl.Boolean(),
    "abc": pl.Enum(["A", "B", "C"]),
    "adc": pl.Enum(["active", "new", "dormant", "churned", "prospect"]),
    "rfm_r": pl.Int8(),
    "rfm_code": pl.String(),
}
LABELS = {"abc": ("A", "B", "C"), "adc": ("active", "new", "dormant", "churned", "prospect")}
CUSTOMERS = pl.DataFrame(
    {
        "customer_id": ["1", "2", "3", "4"],
        "recency_days": [1, 90, None, 400],
        "frequency": [5, 1, 0, 2],
        "monetary": [900.5, -3.0, 0.0, None],
        "first_order": [dt.date(2010, 1, 1), dt.date(2011, 2, 29 - 1), None, dt.date(2000, 2, 29)],
        "last_order": [dt.date(2011, 12, 9), dt.date(2011, 9, 10), None, dt.date(2010, 11, 5)],
        "avg_order_value": [180.1, -3.0, None, 1e12],
        "country": ["France", "", None, "Ünited 'K'"],
        "birthday": [dt.date(1980, 2, 29), None, dt.date(1999, 12, 31), dt.date(1970, 1, 1)],
        "vip": [True, False, None, True],
        "abc": ["A", "C", None, "B"],
        "adc": ["active", "dormant", "prospect", "churned"],
        "rfm_r": [5, 1, None, 2],
        "rfm_code": ["555", "111", None, "212"],
    },
    schema=SCHEMA,
)

_atoms = st.one_of(
    st.sampled_from(list(SCHEMA)),
    st.sampled_from(["monetray", "ABC", "as_of", "unknown_col", "x", "_", "é", "Abc"]),
    st.sampled_from(sorted(KEYWORDS)),
    st.sampled_from(sorted(FUNCTIONS)),
    st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "(", ")", ",", "%", ";",
                     "'", '"', "`", "!", "||", "&&", "[", "]", "{", "}", ".", ":", "\\", "\n", "\t", "\x00"]),
    st.sampled_from(["'A'", "'B'", "'D'", "'active'", "'dormant'", "''", "'it''s'", "'2011-01-01'", "'9999-99-99'",
                     "'1e400'", '"abc"', '"mone""tary"']),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e308", "1e309", "1e-400", ".5", "5.", "0x10", "1_000", "00", "-0", "NaN", "inf"]),
)
rule_tokens = st.lists(_atoms, min_size=0, max_size=25).map(" ".join)
rule_glued = st.lists(_atoms, min_size=0, max_size=12).map("".join)
rule_text = st.text(alphabet=string.printable + "éß'\"()", max_size=80)
rule_nested = st.integers(0, 300).map(lambda n: "(" * n + "abc = 'A'" + ")" * n)
# Long chains stay under 120 clauses: Polars takes seconds to optimise a chain of several hundred
# (see docs/fuzzing.md); tools/fuzz.py --long-rules covers the full length limit.
rule_long_chain = st.integers(0, 120).map(lambda n: " AND ".join(["monetary > 1"] * n) or "TRUE")
any_rule = st.one_of(rule_tokens, rule_glued, rule_text, rule_nested, rule_long_chain)


def check_rule(text: str) -> None:
    """Compile ``text``; only a TierbookError may come out, and a compiled rule must evaluate."""
    try:
        compiled = compile_rule(text, SCHEMA, labels=LABELS, as_of=AS_OF)
    except TierbookError:
        return
    hits = CUSTOMERS.select("customer_id", compiled.expr.alias("hit"))["hit"]  # as the engine evaluates rules
    assert hits.dtype == pl.Boolean and hits.len() == CUSTOMERS.height and hits.null_count() == 0, text


@CI
@given(text=any_rule)
def test_fuzz_rule_compiler(text):
    check_rule(text)


# ------------------------------------------------------------------ the playbook loader
BASE = {
    "name": "fuzz",
    "data": {"transactions": "tx.csv"},
    "classifiers": {"abc": {"a": 0.8}, "adc": {}},
    "rules": [{"name": "r", "when": "abc = 'A'", "action": "call", "channel": "phone", "owner": "sales"}],
    "outputs": {"dir": "out"},
}
KEYS = ["name", "description", "data", "classifiers", "hit_policy", "rules", "fallback", "outputs", "transactions",
        "map", "customers", "as_of", "date_format", "sheet", "abc", "adc", "rfm", "a", "b", "bins", "when", "action",
        "channel", "owner", "due_days", "priority", "params", "capacity", "max", "order_by", "dir", "summary", "x",
        "customer_id", "order_date", "amount", "active_days", "metric", "segments"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=20),
    st.sampled_from(["tx.csv", "../tx.csv", "/etc/passwd", "out", "..", "", "A", "abc = 'A'", "monetary desc",
                     "2011-12-10", "2011-13-45", "first", "all", ".inf", "~", "customers.parquet", "x.xlsx"]),
    st.dates(), any_rule,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()),
                                            inner, max_size=5)),
    max_leaves=25,
)


def _mutate(doc: dict, data) -> dict:
    """Replace, delete or add a few keys at random depths of the base playbook."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        node = doc
        for _depth in range(data.draw(st.integers(0, 3), label="depth")):
            if isinstance(node, dict) and node:
                node = node[data.draw(st.sampled_from(sorted(node, key=str)), label="into")]
            elif isinstance(node, list) and node:
                node = node[data.draw(st.integers(0, len(node) - 1), label="index")]
        if isinstance(node, dict):
            key = data.draw(st.sampled_from(KEYS), label="key")
            if data.draw(st.booleans(), label="delete") and key in node:
                del node[key]
            else:
                node[key] = data.draw(values, label="value")
        elif isinstance(node, list):
            node.append(data.draw(values, label="item"))
    return doc


def _dump(doc) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return str(doc)


yaml_noise = st.text(alphabet=string.printable + "é&*!|>-?:[]{}#%@`", max_size=200)


def check_playbook(text: str, directory: Path, registry) -> None:
    """Load the playbook ``text`` from ``directory``; only a TierbookError may come out, nothing is written."""
    if "plugins" in text:  # never import modules named by generated text
        return
    path = directory / "pb.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = sorted(p.name for p in directory.iterdir())
    try:
        load_playbook(path, registry=registry)
    except TierbookError:
        pass
    assert sorted(p.name for p in directory.iterdir()) == before


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2011-01-02,10\n")
    return directory


@pytest.fixture(scope="module")
def builtins():
    return get_registry(allow=["abc", "adc", "rfm"], strict=True)


@CI
@given(data=st.data())
def test_fuzz_playbook_structure(data, fuzz_dir, builtins):
    check_playbook(_dump(_mutate(BASE, data)), fuzz_dir, builtins)


@CI
@given(text=st.one_of(yaml_noise, st.builds(lambda base, noise, at: base[:at] + noise + base[at:],
                                             st.just(_dump(BASE)), yaml_noise, st.integers(0, 300))))
def test_fuzz_playbook_text(text, fuzz_dir, builtins):
    check_playbook(text, fuzz_dir, builtins)
