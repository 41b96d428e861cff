"""The workbench's rule counts (engine.playbook.live) are evaluate_rules's, move after move."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.errors import DataError
from engine.holdout import Holdout
from engine.playbook import evaluate_rules
from engine.playbook.live import LiveRules, RuleCounts, Unsupported, label_codes
from engine.playbook.spec import Rule

AS_OF = dt.date(2024, 3, 1)
ABC = ("A", "B", "C")
ADC = ("active", "new", "dormant", "churned", "no-purchase", "prospect")
TIER = ("hi", "lo")
#: The varying columns: two Enum label columns, a text label column, a number column without labels.
VARYING = {"abc": pl.Enum(list(ABC)), "adc": pl.Enum(list(ADC)), "tier": pl.String(), "score": pl.Int8()}
LABELS = {"abc": ABC, "adc": ADC, "tier": TIER}

#: Conditions of every kind LiveRules plans for: label columns only (a lookup table), labels and fixed
#: features (a table per label combination), fixed features only, a varying column without labels (its
#: expression on every move), nulls, NOT/OR, date functions, arithmetic and a condition reading nothing.
WHENS = [
    "abc = 'A'",
    "abc IN ('A', 'B') AND adc <> 'churned'",
    "abc IS NULL OR adc = 'new'",
    "NOT (abc = 'C') AND adc IS NOT NULL",
    "adc = 'churned' AND monetary >= 100",
    "tier = 'hi' AND DAYS_UNTIL_ANNIVERSARY(birthday) <= 60",
    "tier IS NULL AND frequency >= 2",
    "frequency > 2",
    "score >= 3 AND abc = 'B'",
    "monetary * 2 > 300 OR adc = 'dormant'",
    "TRUE",
]


def table(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    monetary = np.round(rng.choice([10.0, 50.0, 100.0, 200.0], n) * rng.integers(1, 4, n), 0)  # many ties
    return pl.DataFrame({
        "customer_id": rng.permutation(np.arange(1000, 1000 + n)),
        "monetary": pl.Series(monetary).set(pl.Series(rng.random(n) < 0.05), None),
        "frequency": rng.integers(0, 6, n),
        "birthday": pl.Series(np.datetime64("1960-01-01") + rng.integers(0, 20000, n).astype("timedelta64[D]")).dt.date(),
    })


def moved(n: int, rng: np.random.Generator) -> dict[str, pl.Series]:
    """One state of the varying columns (what a slider move produces), nulls included."""
    def labels(name, values, dtype, null_share):
        picked = [values[i] for i in rng.integers(0, len(values), n)]
        s = pl.Series(name, picked, dtype=pl.String).set(pl.Series(rng.random(n) < null_share), None)
        return s.cast(dtype)

    return {"abc": labels("abc", ABC, VARYING["abc"], 0.05), "adc": labels("adc", ADC, VARYING["adc"], 0.0),
            "tier": labels("tier", TIER, VARYING["tier"], 0.2),
            "score": pl.Series("score", rng.integers(1, 6, n), dtype=pl.Int8)}


def rule(i: int, when: str, capacity, order_by, descending, holdout) -> Rule:
    return Rule(name=f"r{i}", when=when, action=f"act{i % 3}", channel="email", owner="crm", due_days=7,
                priority=1 + i % 2, capacity=capacity, order_by=order_by, descending=descending,
                holdout=Holdout(0.3, f"salt{i}") if holdout else None)


def counts_of(live: LiveRules, state: dict[str, pl.Series], version: int, customers: pl.DataFrame,
              **kwargs) -> RuleCounts:
    return live.evaluate(version=lambda col: version, codes=lambda col: label_codes(state[col], LABELS[col])
                         if col in LABELS else None, series=lambda col: state[col],
                         full=lambda: evaluate_rules(customers.with_columns(*state.values()), **kwargs))


def check(live: LiveRules, got: RuleCounts, expected) -> None:
    assert_frame_equal(got.rule_summary, expected.rule_summary)
    assert (got.matched, got.hits, got.cut_by_capacity, got.actions_per_rule, got.control_per_rule, got.unmatched,
            got.fallback) == (expected.matched, expected.hits, expected.cut_by_capacity, expected.actions_per_rule,
                              expected.control_per_rule, expected.unmatched, expected.fallback)
    assert (got.n_actions, got.n_cut, got.n_control) == (expected.actions.height, expected.cut.height,
                                                         expected.control.height)
    assert_frame_equal(got.cut_head(10), expected.cut.head(10))
    assert_frame_equal(got.cut_head(25), expected.cut.head(25))  # beyond the rows kept: from the full result


rules_strategy = st.lists(
    st.tuples(st.sampled_from(WHENS), st.one_of(st.none(), st.integers(1, 60)),
              st.sampled_from(["monetary", "frequency", "customer_id", "birthday"]), st.booleans(), st.booleans()),
    min_size=0, max_size=6)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(specs=rules_strategy, policy=st.sampled_from(["first", "all"]), fallback=st.booleans(),
       fallback_holdout=st.booleans(), playbook_holdout=st.booleans(), seed=st.integers(0, 2**16))
def test_counts_equal_evaluate_rules_move_after_move(specs, policy, fallback, fallback_holdout, playbook_holdout,
                                                     seed):
    customers = table(300, seed)
    rules = [rule(i, *spec) for i, spec in enumerate(specs)]
    fb = Rule(name="rest", when=None, action="nothing", channel="none", owner="ops", due_days=30, priority=9,
              holdout=Holdout(0.5, "fb") if fallback_holdout else None) if fallback else None
    pb_holdout = Holdout(0.1, "pb") if playbook_holdout else None
    kwargs = dict(rules=rules, as_of=AS_OF, hit_policy=policy, fallback=fb, labels=LABELS, holdout=pb_holdout)
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS, hit_policy=policy, fallback=fb,
                     holdout=pb_holdout)
    rng = np.random.default_rng(seed)
    for version in range(4):  # four moves; each changes every varying column
        state = moved(customers.height, rng)
        got = counts_of(live, state, version, customers, **kwargs)
        expected = evaluate_rules(customers.with_columns(*state.values()), **kwargs)
        check(live, got, expected)
        # the full result on demand is the engine's own
        assert got.actions.height == expected.actions.height


def test_a_mask_is_reevaluated_only_when_a_column_it_reads_moved():
    customers = table(200, 1)
    rules = [rule(0, "abc = 'A'", None, "monetary", True, False), rule(1, "adc = 'new'", None, "monetary", True, False)]
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS)
    rng = np.random.default_rng(0)
    state = moved(200, rng)
    asked: list[str] = []

    def codes(col):
        asked.append(col)
        return label_codes(state[col], LABELS[col])

    versions = {"abc": 0, "adc": 0, "tier": 0, "score": 0}
    live.evaluate(version=versions.get, codes=codes, series=state.get, full=lambda: None)
    assert sorted(asked) == ["abc", "adc"]
    asked.clear()
    state["adc"] = moved(200, rng)["adc"]
    versions["adc"] = 1
    got = live.evaluate(version=versions.get, codes=codes, series=state.get, full=lambda: None)
    assert asked == ["adc"]  # the abc rule kept its mask
    expected = evaluate_rules(customers.with_columns(*state.values()), rules, as_of=AS_OF, labels=LABELS)
    assert got.hits == expected.hits


def test_plans_by_what_a_rule_reads(monkeypatch):
    customers = table(100, 2)
    rules = [rule(i, w, None, "monetary", True, False) for i, w in enumerate(
        ["abc = 'A'", "adc = 'churned' AND monetary >= 100", "frequency > 2", "score >= 3"])]
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS)
    assert [c.mode for c in live._compiled] == ["table", "matrix", "fixed", "expr"]
    import engine.playbook.live as live_module

    monkeypatch.setattr(live_module, "MATRIX_CELLS", 10)  # too many cells: the expression on every move
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS)
    assert [c.mode for c in live._compiled] == ["table", "expr", "fixed", "expr"]
    state = moved(100, np.random.default_rng(3))
    got = counts_of(live, state, 0, customers, rules=rules, as_of=AS_OF, labels=LABELS)
    check(live, got, evaluate_rules(customers.with_columns(*state.values()), rules, as_of=AS_OF, labels=LABELS))


def test_a_text_label_column_with_a_value_outside_its_labels_is_evaluated_by_its_expression():
    customers = table(50, 4)
    rules = [rule(0, "tier = 'hi'", None, "monetary", True, False)]
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS)
    state = moved(50, np.random.default_rng(5))
    state["tier"] = state["tier"].set(pl.Series([True] + [False] * 49), "odd")
    assert label_codes(state["tier"], TIER) is None
    got = counts_of(live, state, 0, customers, rules=rules, as_of=AS_OF, labels=LABELS)
    expected = evaluate_rules(customers.with_columns(*state.values()), rules, as_of=AS_OF, labels=LABELS)
    assert got.hits == expected.hits


def test_errors_are_evaluate_rules_errors():
    customers = table(20, 6)
    late = Rule(name="late", when="abc = 'A'", action="x", channel="c", owner="o", due_days=10**9, priority=1)
    with pytest.raises(DataError, match="is after"):
        LiveRules(customers, [late], as_of=AS_OF, varying=VARYING, labels=LABELS)
    overflow = rule(0, "frequency * 9223372036854775807 > 0", None, "monetary", True, False)
    with pytest.raises(Unsupported):  # evaluate_rules reports the overflow (the workbench falls back to it)
        LiveRules(customers, [overflow], as_of=AS_OF, varying=VARYING, labels=LABELS)
    with pytest.raises(DataError, match="leaves the whole numbers"):
        evaluate_rules(customers.with_columns(*moved(20, np.random.default_rng(0)).values()), [overflow],
                       as_of=AS_OF, labels=LABELS)


def test_a_customer_on_a_holdouts_threshold_bucket_is_treated_as_a_run_treats_them():
    from engine.holdout import bucket_expr

    customers = table(200, 7)
    buckets = customers.select(bucket_expr(pl.col("customer_id"), customers.schema["customer_id"], "edge"))
    edge = int(buckets.to_series().sort()[100])  # a customer's bucket is the threshold itself
    rules = [rule(0, "TRUE", None, "monetary", True, False)]
    holdout = Holdout(edge / 10_000, "edge")
    live = LiveRules(customers, rules, as_of=AS_OF, varying=VARYING, labels=LABELS, holdout=holdout)
    state = moved(200, np.random.default_rng(8))
    got = counts_of(live, state, 0, customers, rules=rules, as_of=AS_OF, labels=LABELS, holdout=holdout)
    expected = evaluate_rules(customers.with_columns(*state.values()), rules, as_of=AS_OF, labels=LABELS,
                              holdout=holdout)
    assert got.control_per_rule == expected.control_per_rule == (100,)
