"""The rule language against SQLite: a generated rule matches exactly the customers that SQLite's
``SELECT customer_id FROM customers WHERE <the same condition>`` returns on the same table (nulls
included). How the two texts are generated, and where tierbook differs from SQL on purpose, is in
tests/engine/rule_sql.py and docs/rules.md ("Differences from SQL").
"""

from __future__ import annotations

import rule_sql
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rule_sql import sqlite_matches, sqlite_table, tierbook_matches

KEY = settings(settings.get_profile("key"))


def check(frame, texts) -> None:
    con = sqlite_table(frame)
    for tb, sql in texts:
        assert tierbook_matches(frame, tb) == sqlite_matches(con, sql), f"rule: {tb}\nSQL:  {sql}"


def _frame(rows: list[dict]):
    import polars as pl

    return pl.DataFrame([{**dict.fromkeys(rule_sql.SCHEMA), **r, "customer_id": f"c{i}"}
                         for i, r in enumerate(rows)], schema=rule_sql.SCHEMA)


D = rule_sql.dt.date
PINNED_TABLE = _frame([
    {"frequency": 3, "monetary": 500.0, "vip": None, "last_order": D(2011, 5, 15), "recency_days": 1, "abc": "A"},
    {"frequency": 1, "monetary": 50.0, "vip": True, "last_order": D(2011, 11, 20), "recency_days": 90, "abc": "B"},
    {},
    {"frequency": 0, "monetary": 0.0, "vip": True, "last_order": D(2011, 7, 1), "recency_days": 400, "abc": "C"},
    {"frequency": 5, "monetary": 150.0, "vip": False, "last_order": D(2011, 11, 10), "recency_days": 30},
    {"frequency": 4, "monetary": 99.5, "vip": None, "last_order": D(2011, 6, 30), "abc": "A"},
])
ALL_NULL_DIVISOR = _frame([{"monetary": 10.0}, {"monetary": 20.0}, {}])
# (tierbook rule, SQL) pairs for every bug of the rule language found so far, so each stays found.
PINNED = [
    ("NOT vip AND frequency > 2", None),                      # NOT binds tighter than AND (audit, issue 15)
    ("frequency > 2 OR monetary > 100 AND vip", None),        # AND binds tighter than OR (audit)
    ("vip AND monetary > 100 OR frequency > 2", None),
    ("NOT (frequency > 2 AND vip)", None),                    # unknown AND true is unknown, not false (audit)
    ("NOT (frequency > 5 OR vip)", None),                     # unknown OR false is unknown
    ("NOT NOT vip", None),
    ("last_order - 30 < DATE '2011-06-01'",                   # date - n is n days earlier (audit)
     "date(last_order, '-30 days') < '2011-06-01'"),
    ("last_order + 30 >= as_of", "date(last_order, '+30 days') >= '2011-12-10'"),
    ("30 + last_order >= as_of", "date(last_order, '+30 days') >= '2011-12-10'"),
    ("as_of - last_order > 150", "julianday('2011-12-10') - julianday(last_order) > 150"),
    ("DAYS_SINCE(last_order) > 150", "julianday('2011-12-10') - julianday(last_order) > 150"),
    ("recency_days NOT IN (1, 90)", None),                    # NOT IN over a null is unknown
    ("abc NOT IN ('A')", None),
    ("monetary NOT BETWEEN 50 AND 150", None),
    ("vip IS NULL", None),
    ("(frequency > 2) IS NULL", None),
    ("frequency - 1 - 1 = 1", None),                          # left-associative
    ("24 / frequency / 2 = 3", "24.0 / frequency / 2.0 = 3.0"),
    ("- frequency * 2 < -3", None),
    ("monetary / frequency > 100", None),                     # x / 0 is null
    ("monetary / frequency * 2 > 100", None),                 # arithmetic on a quotient (all-null divisor below)
    ("0 <= ABS(monetary / frequency)", None),
]

PINNED_PAIRS = [(rule, sql or rule) for rule, sql in PINNED]


@KEY
@example(frame=PINNED_TABLE, rules=PINNED_PAIRS)  # every run checks the pinned rules first, on both tables
@example(frame=ALL_NULL_DIVISOR, rules=PINNED_PAIRS)
@given(frame=rule_sql.tables, rules=st.lists(rule_sql.rules.map(lambda e: (e.tb, e.sql)), min_size=1, max_size=4))
def test_rules_match_what_sqlite_returns(frame, rules):
    check(frame, rules)
