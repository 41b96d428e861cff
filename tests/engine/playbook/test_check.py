"""engine.playbook.check: ``tierbook check``'s claims hold on data.

The static analysis may say "dead" only when no customer can match, "shadowed" only when an earlier
rule takes every customer the rule matches, "ok" with an example customer the rule takes, and an
overlap with a customer both rules match. The property test generates rules over every kind of column
(whole numbers, floats with NaN and infinities, labels, text, true/false, dates, nulls everywhere),
undecidable parts included, and customer tables, and checks every claim against the engine's own
evaluation (:func:`engine.playbook.evaluate_rules`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import textwrap
import types
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Classifier, Output, hookimpl
from engine.playbook import Rule, evaluate_rules, load_playbook
from engine.playbook.check import analyse_rules, check_on_data, static_check, taken_earlier
from engine.testing import plugin_registry

KEY = settings(settings.get_profile("key"))
ROOT = Path(__file__).resolve().parents[3]
AS_OF = dt.date(2011, 12, 10)
LABELS = ("A", "B", "C")
SCHEMA = {
    "customer_id": pl.String,
    "x": pl.Int64,                 # a whole-number attribute: any value
    "recency_days": pl.Int64,      # a built-in feature: at least 1
    "y": pl.Float64,               # NaN and infinities included
    "lab": pl.Enum(list(LABELS)),
    "t": pl.String,
    "b": pl.Boolean,
    "d": pl.Date,
}


def rule(name: str, when: str) -> Rule:
    return Rule(name=name, when=when, action=f"do-{name}", channel="email", owner="crm", due_days=7, priority=1)


def rules_of(*whens: str) -> list[Rule]:
    return [rule(f"r{i}", w) for i, w in enumerate(whens)]


def verdicts(*whens: str, hit_policy: str = "first") -> list[str]:
    report = analyse_rules(rules_of(*whens), SCHEMA, hit_policy=hit_policy, as_of=AS_OF)
    return [v.status for v in report.rules]


# --------------------------------------------------------------------------- pinned claims
@pytest.mark.parametrize("when", [
    "x < 0 AND x > 5",                        # contradictory ranges
    "x > 2 AND x < 3",                        # no whole number between
    "x BETWEEN 5 AND 1",
    "recency_days < 1",                       # a built-in feature's bound
    "recency_days <= 0 OR recency_days < -3",
    "lab = 'A' AND lab = 'B'",
    "lab IN ('A', 'B') AND lab NOT IN ('A', 'B', 'C')",
    "lab IS NULL AND lab = 'C'",
    "t = 'a' AND t <> 'a'",
    "b AND NOT b",
    "b = TRUE AND b = FALSE",
    "FALSE",
    "y < 1 AND y > 2",
    "y > 1 AND y < 1.0000",
    "NOT (y IS NULL OR y IS NOT NULL)",
    "d > DATE '2011-01-01' AND d < '2010-06-01'",
    "x IS NULL AND x = 3",
    "NOT (x = 1 OR x <> 1) AND y = 0",        # x null: NOT of unknown is unknown; still never true
])
def test_dead_conditions_are_found(when):
    assert verdicts(when) == ["dead"]


@pytest.mark.parametrize("when", [
    "x > 2.5 AND x < 3.5",                    # x = 3
    "y > 2 AND y < 2.0000001",
    "y > 1e308",                              # +inf and NaN are above every number
    "NOT (y <= 5)",                           # NaN: y <= 5 is false, not unknown
    "NOT (lab = 'A')",
    "t <> 'a' AND t <> 'b'",
    "recency_days BETWEEN 1 AND 1",
    "NOT (x IS NOT NULL)",
])
def test_satisfiable_conditions_are_not_dead(when):
    assert verdicts(when) == ["ok"]


@pytest.mark.parametrize("whens", [
    ("x > 5", "x > 10"),
    ("lab IN ('A', 'B')", "lab = 'B' AND y > 3"),
    ("lab = 'A'", "lab = 'B'", "lab IN ('A', 'B') AND t = 'z'"),  # covered by two rules together
    ("x >= 0", "x < 0", "x = 7 OR x = -7"),
    ("y > 0 OR y IS NULL", "y >= 1"),
    ("b", "b = TRUE AND x = 1"),
    ("TRUE", "lab = 'C'"),
    ("y < 0 OR y > 0", "y <> 0"),                 # NaN <> 0 is true, and so is NaN > 0 (Polars orders NaN last)
])
def test_shadowed_rules_are_found(whens):
    assert verdicts(*whens)[-1] == "shadowed"


def test_shadowing_is_only_claimed_under_hit_policy_first():
    assert verdicts("x > 5", "x > 10", hit_policy="all") == ["ok", "ok"]


@pytest.mark.parametrize("whens", [
    ("x > 5", "x >= 5"),                          # x = 5
    ("y > 0", "y >= 0"),                          # y = 0
    ("y >= 0 AND y <= 1e308", "y >= 0"),          # +inf and NaN (NaN >= 0 is true in Polars)
    ("lab <> 'A'", "lab = 'A' OR lab = 'B'"),
])
def test_partly_covered_rules_are_not_shadowed(whens):
    assert verdicts(*whens)[-1] == "ok"


def test_what_cannot_be_decided_is_unknown_never_dead():
    report = analyse_rules(rules_of("x + 1 > 5 AND x < 0", "ABS(x) < 0", "x > 5", "DAYS_SINCE(d) > 30 AND x > 3"),
                           SCHEMA, as_of=AS_OF)
    statuses = [v.status for v in report.rules]
    # x > 5 itself is decided, but an undecided earlier rule may take its customers first
    assert statuses == ["unknown", "unknown", "unknown", "unknown"]
    assert "x + 1 > 5" in report.rules[0].reason and "ABS(x) < 0" in report.rules[1].reason
    assert verdicts("x + 1 > 5 AND x < 0", "ABS(x) < 0", "x > 5", hit_policy="all") == ["unknown", "unknown", "ok"]
    # an undecided earlier rule never shadows: it is not known to take anyone
    assert verdicts("x + 0 > 1", "x > 5")[-1] == "unknown"


def test_overlaps_unmentioned_labels_and_examples():
    report = analyse_rules(rules_of("lab = 'A' AND y > 10", "lab IN ('A', 'B') AND x < 3", "lab = 'C'"), SCHEMA,
                           labels={"lab": LABELS}, as_of=AS_OF)
    assert [(o.first, o.second) for o in report.overlaps] == [("r0", "r1")]
    assert report.overlaps[0].example["lab"] == "A"
    assert report.undecided_pairs == 0
    assert report.unmentioned_labels == {}
    report = analyse_rules(rules_of("lab = 'A'", "x > 1"), SCHEMA, labels={"lab": LABELS}, as_of=AS_OF)
    assert report.unmentioned_labels == {"lab": ["B", "C"]}


# ----------------------------------------------------------------------- the property test
_INT = st.integers(-3, 6)
_NUM = st.sampled_from(["-1", "0", "1", "2", "2.5", "3", "1e400", "-1e400", "0.5"])
_FLOAT_VALUES = [-2.5, -0.0, 0.0, 1.0, 2.0, 2.5, 3.0, math.nan, math.inf, -math.inf, None]
_DATES = [dt.date(2010, 1, 1), dt.date(2011, 1, 1), dt.date(2011, 6, 1), dt.date(2011, 12, 9), None]
_OPS = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
_LAB = st.sampled_from(LABELS)
_TEXT = st.sampled_from(["a", "b", ""])


@st.composite
def atoms(draw) -> str:
    kind = draw(st.integers(0, 14))
    op = draw(_OPS)
    if kind == 0:
        return f"x {op} {draw(_INT)}"
    if kind == 1:
        return f"{draw(_NUM)} {op} y"
    if kind == 2:
        return f"recency_days {op} {draw(_INT)}"
    if kind == 3:
        lo, hi = draw(_NUM), draw(_NUM)
        return f"y {'NOT ' if draw(st.booleans()) else ''}BETWEEN {lo} AND {hi}"
    if kind == 4:
        return f"lab {draw(st.sampled_from(['=', '<>']))} '{draw(_LAB)}'"
    if kind == 5:
        items = draw(st.lists(_LAB, min_size=1, max_size=3))
        return f"lab {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(repr(i) for i in items)})"
    if kind == 6:
        return f"t {draw(st.sampled_from(['=', '<>']))} '{draw(_TEXT)}'"
    if kind == 7:
        items = draw(st.lists(_TEXT, min_size=1, max_size=2))
        return f"t {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(repr(i) for i in items)})"
    if kind == 8:
        return draw(st.sampled_from(["b", "b = TRUE", "b <> FALSE", "FALSE = b", "TRUE", "FALSE"]))
    if kind == 9:
        return f"d {op} DATE '{draw(st.sampled_from(_DATES[:-1]))}'"
    if kind == 10:
        return f"{draw(st.sampled_from(['x', 'y', 'lab', 't', 'b', 'd']))} IS {'NOT ' if draw(st.booleans()) else ''}NULL"
    if kind == 11:
        return f"x {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(str(draw(_INT)) for _ in range(2))})"
    if kind == 12:
        return f"y IN ({draw(_NUM)}, {draw(_NUM)})"
    if kind == 13:  # undecidable parts
        return draw(st.sampled_from(["x + 1 > y", "ABS(x) >= 2", "LENGTH(t) > 0", "x = recency_days",
                                     "DAYS_SINCE(d) > 200", "d < as_of - 300"]))
    return f"x BETWEEN {draw(_INT)} AND {draw(_INT)}"


def conditions(depth: int = 3):
    return st.recursive(atoms(), lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"({p[0]} AND {p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]} OR {p[1]})"),
        inner.map(lambda c: f"NOT ({c})")), max_leaves=6)


rows = st.fixed_dictionaries({
    "x": st.one_of(st.none(), _INT),
    "recency_days": st.one_of(st.none(), st.integers(1, 8)),
    "y": st.sampled_from(_FLOAT_VALUES),
    "lab": st.one_of(st.none(), _LAB),
    "t": st.one_of(st.none(), _TEXT),
    "b": st.one_of(st.none(), st.booleans()),
    "d": st.sampled_from(_DATES),
})


def table(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{**r, "customer_id": f"c{i}"} for i, r in enumerate(records)], schema=SCHEMA)


def example_row(example: dict) -> pl.DataFrame:
    """A customer with the example's values (null for the columns it leaves free)."""
    return table([{col: example.get(col) for col in SCHEMA if col != "customer_id"}])


@KEY
@given(whens=st.lists(conditions(), min_size=1, max_size=6), records=st.lists(rows, min_size=1, max_size=40),
       hit_policy=st.sampled_from(["first", "all"]))
def test_every_claim_holds_on_generated_tables(whens, records, hit_policy):
    rules = rules_of(*whens)
    report = analyse_rules(rules, SCHEMA, labels={"lab": LABELS}, hit_policy=hit_policy, as_of=AS_OF)
    frame = table(records)
    rr = evaluate_rules(frame, rules, as_of=AS_OF, hit_policy=hit_policy, labels={"lab": LABELS})
    for v in report.rules:
        if v.status == "dead":
            assert rr.matched[v.position] == 0, (v, whens)
        if v.status == "shadowed":
            assert hit_policy == "first" and rr.hits[v.position] == 0, (v, whens)
            assert rr.matched[v.position] == 0 or set(v.shadowed_by) <= {r.name for r in rules[:v.position]}
        if v.status == "ok":  # the example customer is taken by this rule
            one = evaluate_rules(example_row(v.example), rules, as_of=AS_OF, hit_policy=hit_policy,
                                 labels={"lab": LABELS})
            assert one.hits[v.position] == 1, (v, whens)
    names = [r.name for r in rules]
    for o in report.overlaps:
        one = evaluate_rules(example_row(o.example), rules, as_of=AS_OF, hit_policy="all", labels={"lab": LABELS})
        assert one.matched[names.index(o.first)] == 1 and one.matched[names.index(o.second)] == 1, (o, whens)


def test_taken_earlier_counts_the_first_matching_rule():
    masks = [pl.Series([True, False, True, False]), pl.Series([True, True, False, False]),
             pl.Series([True, True, True, True])]
    assert taken_earlier(masks) == [{}, {0: 1}, {0: 2, 1: 1}]


# ------------------------------------------------------------------ a third-party classifier
def churn_plugin() -> types.ModuleType:
    plugin = types.ModuleType("churn_risk")

    @hookimpl
    def register_classifiers(register):
        register(Classifier(
            name="churn", description="churn risk by days since the last purchase", requires=("recency_days",),
            params=(), outputs=(Output("risk", "risk", labels=("low", "medium", "high")),
                                Output("risk_score", "a score", dtype=pl.Float64)),
            expressions=lambda params, ctx: {
                "risk": pl.when(pl.col("recency_days") < 60).then(pl.lit("low"))
                .when(pl.col("recency_days") < 200).then(pl.lit("medium")).otherwise(pl.lit("high")),
                "risk_score": pl.col("recency_days").cast(pl.Float64) / 365}))

    plugin.register_classifiers = register_classifiers
    return plugin


PLAYBOOK = """\
name: churn-check
data:
  transactions: {data}
  map: {{customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,
         unit_price: UnitPrice}}
classifiers:
  churn: {{}}
hit_policy: first
rules:
  - name: save-high
    when: risk = 'high' AND monetary > 1000
    action: call
    channel: phone
    owner: care
    capacity: {{max: 3, order_by: monetary desc}}
  - name: impossible
    when: risk = 'high' AND risk <> 'high'
    action: nothing
    channel: none
    owner: nobody
  - name: all-high
    when: risk = 'high'
    action: email
    channel: email
    owner: crm
  - name: high-again
    when: risk IN ('high') AND risk_score > 0.5
    action: email
    channel: email
    owner: crm
fallback: {{action: none, channel: none, owner: nobody}}
"""


@pytest.fixture
def churn_playbook(tmp_path, sample_path):
    path = tmp_path / "churn.yaml"
    path.write_text(PLAYBOOK.format(data=sample_path))
    return path


def test_a_third_party_classifiers_labels_are_checked(churn_playbook):
    pb = load_playbook(churn_playbook, registry=plugin_registry(churn_plugin()))
    report = static_check(pb)
    assert [v.status for v in report.rules] == ["ok", "dead", "ok", "shadowed"]
    assert report.rules[3].shadowed_by == ("save-high", "all-high")
    assert report.unmentioned_labels == {"risk": ["low", "medium"]}
    prepared = pb.prepare()
    result = pb.evaluate(prepared)
    data = check_on_data(pb, result.customers, prepared.as_of)
    by_rule = {r["rule"]: r for r in data["rules"]}
    summary = {r["rule"]: r for r in result.summary["rules"]}
    for name, r in by_rule.items():  # the same numbers as a run's summary
        assert (r["matched"], r["hits"], r["cut_by_capacity"]) == (
            summary[name]["matched"], summary[name]["hits"], summary[name]["cut_by_capacity"])
    assert by_rule["save-high"]["cut_by_capacity"] > 0
    assert by_rule["all-high"]["taken_earlier"] == {"save-high": by_rule["save-high"]["matched"]}
    assert by_rule["high-again"]["hits"] == 0 and by_rule["impossible"]["matched"] == 0
    high = by_rule["high-again"]["taken_earlier"]
    assert sum(high.values()) == by_rule["high-again"]["matched"]
    assert data["fallback"]["customers"] == summary["fallback"]["hits"]
    assert data["fallback"]["share"] == pytest.approx(summary["fallback"]["hits"] / result.customers.height)


def test_the_command_text_json_and_strict(run_cli, tmp_path, churn_playbook):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "churn_risk.py").write_text(textwrap.dedent('''
        import polars as pl
        from engine import Classifier, Output, hookimpl

        @hookimpl
        def register_classifiers(register):
            register(Classifier(
                name="churn", description="churn risk", requires=("recency_days",), params=(),
                outputs=(Output("risk", "risk", labels=("low", "medium", "high")),
                         Output("risk_score", "a score", dtype=pl.Float64)),
                expressions=lambda params, ctx: {
                    "risk": pl.when(pl.col("recency_days") < 60).then(pl.lit("low"))
                    .when(pl.col("recency_days") < 200).then(pl.lit("medium")).otherwise(pl.lit("high")),
                    "risk_score": pl.col("recency_days").cast(pl.Float64) / 365}))
    '''))
    code, out, err = run_cli("check", churn_playbook, "--plugins-dir", plugins)
    assert code == 0, err
    assert "dead      'impossible'" in out and "shadowed  'high-again'" in out
    assert "taken earlier by" in out and "fallback 'fallback' (none):" in out
    code, out, _ = run_cli("check", churn_playbook, "--plugins-dir", plugins, "--json", "--static")
    doc = json.loads(out)
    assert code == 0 and doc["data"] is None
    assert doc["dead"] == ["impossible"] and doc["shadowed"] == ["high-again"]
    assert [r["status"] for r in doc["static"]["rules"]] == ["ok", "dead", "ok", "shadowed"]
    assert doc["static"]["rules"][1]["line"] == 17
    code, _, _ = run_cli("check", churn_playbook, "--plugins-dir", plugins, "--strict", "--static")
    assert code == 1
    clean = tmp_path / "clean.yaml"
    lines = churn_playbook.read_text().split("  - name: impossible")[0] + "fallback: {action: none, channel: none, " \
                                                                          "owner: nobody}\n"
    clean.write_text(lines)
    code, out, err = run_cli("check", clean, "--plugins-dir", plugins, "--strict", "--json")
    assert code == 0, err
    assert json.loads(out)["data"]["rules"][0]["rule"] == "save-high"


def test_the_builtin_playbooks_check_clean(run_cli):
    for path in sorted((ROOT / "playbooks").glob("*.yaml")):
        code, out, err = run_cli("check", path, "--strict", "--static")
        assert code == 0, (path, out, err)


# -------------------------------------------------- exact on decidable rules: a grid of every case
_SMALL = {"customer_id": pl.String, "x": pl.Int64, "lab": pl.Enum(list(LABELS)), "b": pl.Boolean}
# x's literals are 0..4, so -1..5 and null meet every case a condition over x can tell apart
GRID = pl.DataFrame([{"customer_id": f"g{i}", "x": x, "lab": lab, "b": b} for i, (x, lab, b) in enumerate(
    (x, lab, b) for x in [*range(-1, 6), None] for lab in [*LABELS, None] for b in (True, False, None))],
    schema=_SMALL)


@st.composite
def small_atoms(draw) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return f"x {draw(_OPS)} {draw(st.integers(0, 4))}"
    if kind == 1:
        lo = draw(st.integers(0, 4))
        return f"x {'NOT ' if draw(st.booleans()) else ''}BETWEEN {lo} AND {draw(st.integers(0, 4))}"
    if kind == 2:
        items = draw(st.lists(_LAB, min_size=1, max_size=3))
        return f"lab {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(repr(i) for i in items)})"
    if kind == 3:
        return f"lab {draw(st.sampled_from(['=', '<>']))} '{draw(_LAB)}'"
    if kind == 4:
        return draw(st.sampled_from(["b", "NOT b", "b = FALSE", "x IS NULL", "lab IS NOT NULL", "b IS NULL"]))
    return f"x IN ({draw(st.integers(0, 4))}, {draw(st.integers(0, 4))})"


small_conditions = st.recursive(small_atoms(), lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda p: f"({p[0]} AND {p[1]})"),
    st.tuples(inner, inner).map(lambda p: f"({p[0]} OR {p[1]})"),
    inner.map(lambda c: f"NOT ({c})")), max_leaves=5)


@KEY
@given(whens=st.lists(small_conditions, min_size=1, max_size=8), hit_policy=st.sampled_from(["first", "all"]))
def test_decidable_rules_get_exact_verdicts(whens, hit_policy):
    """Every rule of comparisons with literals is decided (never unknown), and exactly: dead when no customer
    of the grid matches, shadowed when none gets it, ok otherwise."""
    rules = rules_of(*whens)
    report = analyse_rules(rules, _SMALL, labels={"lab": LABELS}, hit_policy=hit_policy, as_of=AS_OF)
    rr = evaluate_rules(GRID, rules, as_of=AS_OF, hit_policy=hit_policy, labels={"lab": LABELS})
    for v in report.rules:
        expected = "dead" if rr.matched[v.position] == 0 else "shadowed" if rr.hits[v.position] == 0 else "ok"
        assert v.status == expected, (v, whens)


@KEY
@given(target=small_conditions, covers=st.lists(small_conditions, min_size=1, max_size=6))
def test_the_cover_search_is_exact(target, covers):
    """engine.playbook.check._uncovered against every customer of the grid: it finds a customer of the target
    outside the covers exactly when the grid has one, and the customer it finds is one."""
    from engine.playbook.check import _Analyser, _uncovered, column_domains
    from engine.rules import compile_rule

    domain = column_domains(_SMALL, {"lab": LABELS})
    an = _Analyser(domain)

    def boxes(text):
        return [b for b in an.approx(compile_rule(text, _SMALL, labels={"lab": LABELS}, as_of=AS_OF).tree,
                                     text).t_under if not b.empty()]

    cover = [b for c in covers for b in boxes(c)]
    inside = GRID.select(compile_rule(target, _SMALL, labels={"lab": LABELS}, as_of=AS_OF).expr.alias("t"))["t"]
    covered = pl.Series([False] * GRID.height)
    for c in covers:
        covered = covered | GRID.select(compile_rule(c, _SMALL, labels={"lab": LABELS}, as_of=AS_OF).expr
                                        .alias("c"))["c"]
    expected_free = bool((inside & ~covered).any())
    found = [p for b in boxes(target) if (p := _uncovered(b, cover, domain, [10**6])) is not None]
    assert bool(found) == expected_free, (target, covers)
    for point in found:  # a customer of the target that no cover matches
        row = pl.DataFrame([{"customer_id": "p", **{c: point.get(c) for c in ("x", "lab", "b")}}], schema=_SMALL)
        assert row.select(compile_rule(target, _SMALL, labels={"lab": LABELS}, as_of=AS_OF).expr).item()
        for c in covers:
            assert not row.select(compile_rule(c, _SMALL, labels={"lab": LABELS}, as_of=AS_OF).expr).item()
