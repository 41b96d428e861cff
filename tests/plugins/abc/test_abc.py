"""plugins.abc: every rule, each cut-off, ties, non-positive values, degenerate inputs.

Expected classes are worked out by hand in the comments (share = sum of every
value >= this one, over the total) or by a plain-Python reference implementation
of the documented rule, never copied from the plugin's own output.
"""

from __future__ import annotations

import math
import random

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import ParamError, classify_frame


def frame(values, *, column="monetary", ids=None):
    ids = list(range(1, len(values) + 1)) if ids is None else ids
    return pl.DataFrame({"customer_id": ids, column: values}, schema_overrides={column: pl.Float64})


def abc(values, registry, **params):
    out = classify_frame(frame(values), "abc", {"abc": params}, registry=registry)
    return out["abc"].cast(pl.String).to_list()


# ------------------------------------------------------------------ share mode
def test_default_cut_offs(registry):
    # total 130: 50 -> 50/130 = .38 A; 30, 30 -> 110/130 = .85 B; 10 -> 120/130 = .92 B; 5, 5 -> 1.0 C
    assert abc([50, 30, 30, 10, 5, 5], registry) == ["A", "B", "B", "B", "C", "C"]


def test_value_exactly_at_the_a_and_b_cut_offs_is_in_the_higher_class(registry):
    # 80/100 = 0.80 <= a; 95/100 = 0.95 <= b; 100/100 > b
    assert abc([80, 15, 5], registry) == ["A", "B", "C"]
    # one cent above the cut-off: (50 + 30.01)/100 > 0.80
    assert abc([50, 30.01, 14.99, 5], registry) == ["A", "B", "B", "C"]


def test_tie_group_straddling_a_cut_off_goes_to_the_lower_class(registry):
    # the first 20 alone would reach 0.70 (A), but the tie group reaches 0.90: both B
    assert abc([50, 20, 20, 10], registry) == ["A", "B", "B", "C"]
    # a tie group ending exactly at the cut-off stays in the higher class
    assert abc([40, 40, 15, 5], registry) == ["A", "A", "B", "C"]


def test_equal_values_always_share_a_class(registry):
    values = [9, 7, 7, 7, 5, 5, 3, 3, 3, 3, 1]
    labels = abc(values, registry)
    by_value: dict[float, set[str]] = {}
    for v, lab in zip(values, labels):
        by_value.setdefault(v, set()).add(lab)
    assert all(len(s) == 1 for s in by_value.values())


def test_zero_negative_and_missing_values_are_c(registry):
    # total 95 (returns lower the total): 70/95 = .74 A; 90/95 = .95 B; 100/95 C; 0, -5, null: C
    assert abc([70, 20, 10, 0, -5, None], registry) == ["A", "B", "C", "C", "C", "C"]


def test_non_positive_total_makes_everyone_c(registry):
    assert abc([0, 0], registry) == ["C", "C"]
    assert abc([10, -10], registry) == ["C", "C"]
    assert abc([-1, -2], registry) == ["C", "C"]


def test_single_customer_is_the_top_tie_group_so_a(registry):
    # share 1.0 is above a and b, but the top tie group is always A (issue 10, item 7: it was C)
    for crossing in ("lower", "upper"):
        assert abc([100], registry, crossing=crossing) == ["A"]
        assert abc([100], registry, b=1.0, crossing=crossing) == ["A"]


def test_all_equal_values_are_the_top_group(registry):
    assert abc([5, 5, 5, 5], registry) == ["A"] * 4
    assert abc([5, 5, 5, 5], registry, b=1.0, crossing="upper") == ["A"] * 4


def test_no_customers_gives_an_empty_column(registry):
    # nothing to rank: no error (no binary search may look past the values, there are none)
    for mode in ("share", "rank"):
        for crossing in ("lower", "upper"):
            assert abc([], registry, mode=mode, crossing=crossing) == []


def test_other_cut_offs(registry):
    # 50/100 = .5 <= a = .5 A; 75/100 <= b = .75 B; rest C
    assert abc([50, 25, 15, 10], registry, a=0.5, b=0.75) == ["A", "B", "C", "C"]


def test_row_order_does_not_matter(registry):
    rng = random.Random(7)
    values = [rng.choice([0, 1, 2, 3, 5, 8, 13, 21, -4]) for _ in range(200)]
    ids = list(range(200))
    base = dict(zip(ids, abc(values, registry)))
    order = ids[:]
    rng.shuffle(order)
    shuffled = frame([values[i] for i in order], ids=order)
    out = classify_frame(shuffled, "abc", registry=registry)
    assert dict(zip(out["customer_id"].to_list(), out["abc"].cast(pl.String).to_list())) == base


def reference_share(values, a, b, crossing="lower"):
    """The documented rule, written plainly: classes per tie group, walking down from the top value.

    lower: a group is in a class when the share at its end is within the cut-off; upper: when the share
    before it is below the cut-off. Either way the top group is A.
    """
    total = sum(v for v in values if v is not None)
    labels = {}
    cum = 0.0
    for i, v in enumerate(sorted({v for v in values if v is not None and v > 0}, reverse=True)):
        before = cum / total if total > 0 else float("inf")
        cum += v * sum(1 for x in values if x == v)
        share = cum / total if total > 0 else float("inf")
        if total <= 0:
            labels[v] = "C"
        elif crossing == "lower":
            labels[v] = "A" if share <= a or i == 0 else "B" if share <= b else "C"
        else:
            labels[v] = "A" if before < a or i == 0 else "B" if before < b else "C"
    return [labels.get(v, "C") if v is not None else "C" for v in values]


@pytest.mark.parametrize("seed", range(6))
def test_share_mode_matches_the_documented_rule(registry, seed):
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    values = [rng.choice([None, -3, 0, 1, 2, 2, 4, 10, 25, 100, rng.randint(1, 50)]) for _ in range(n)]
    a, b = sorted(rng.sample([0.3, 0.5, 0.6, 0.8, 0.9, 0.95], 2))
    assert abc(values, registry, a=a, b=b) == reference_share(values, a, b)


def test_a_share_is_at_most_a_and_the_next_tie_group_would_exceed_it(registry):
    rng = random.Random(11)
    values = [float(rng.choice([1, 1, 2, 3, 5, 8, 13, 40, 90])) for _ in range(300)]
    labels = abc(values, registry)
    total = sum(values)
    a_sum = sum(v for v, lab in zip(values, labels) if lab == "A")
    assert a_sum / total <= 0.80
    next_value = max(v for v, lab in zip(values, labels) if lab != "A")
    next_group = sum(v for v in values if v == next_value)
    assert (a_sum + next_group) / total > 0.80


# ------------------------------------------------------------------- rank mode
def test_rank_mode_top_20_and_next_30_percent(registry):
    values = list(range(10, 0, -1))  # 10 distinct customers
    assert abc(values, registry, mode="rank") == ["A"] * 2 + ["B"] * 3 + ["C"] * 5


def test_rank_mode_ties(registry):
    # rank share = customers with a value >= this one / 10:
    # 5 -> .1 A; 4, 4 -> .3 B; 3 -> .4 B; 2 -> .5 B (at the cut-off); 1 x 5 -> 1.0 C
    values = [5, 4, 4, 3, 2, 1, 1, 1, 1, 1]
    assert abc(values, registry, mode="rank") == ["A", "B", "B", "B", "B"] + ["C"] * 5
    # the tie group at ranks 2-3 straddles a_rank = .2: lower class
    assert abc([5, 4, 4, 3, 2, 0, 0, 0, 0, 0], registry, mode="rank")[1:3] == ["B", "B"]


def test_rank_mode_non_positive_is_c_even_inside_the_cut(registry):
    # 0 has rank share 2/2 = 1.0 <= b_rank = 1.0, but zero revenue is always C
    assert abc([10, 0], registry, mode="rank", a_rank=0.5, b_rank=1.0) == ["A", "C"]
    # 10 has rank share 1/3 > a_rank = 0.2, but it is the top group: A
    assert abc([10, -3, None], registry, mode="rank", b_rank=1.0) == ["A", "C", "C"]
    assert abc([10, 9, -3, None], registry, mode="rank", b_rank=1.0) == ["A", "B", "C", "C"]


def test_rank_mode_single_customer_and_all_equal(registry):
    assert abc([7], registry, mode="rank") == ["A"]
    assert abc([7, 7, 7], registry, mode="rank") == ["A"] * 3
    assert abc([7, 7, 7, 1], registry, mode="rank", crossing="upper") == ["A"] * 3 + ["C"]


# ------------------------------------------------------------ metric, params
def test_metric_can_be_any_numeric_column(registry):
    df = pl.DataFrame({"customer_id": [1, 2, 3], "monetary": [1.0, 2.0, 97.0], "frequency": [70, 20, 10]})
    out = classify_frame(df, "abc", {"abc.metric": "frequency"}, registry=registry)
    # frequency: 70/100 A, 90/100 B, 100/100 C
    assert out["abc"].cast(pl.String).to_list() == ["A", "B", "C"]
    # by monetary (the default) customer 3 alone holds 97/100 > b: A as the top group, the others C
    assert classify_frame(df, "abc", registry=registry)["abc"].cast(pl.String).to_list() == ["C", "C", "A"]


def test_metric_must_exist_and_be_numeric(registry):
    df = pl.DataFrame({"customer_id": [1], "monetary": [1.0], "region": ["x"]})
    with pytest.raises(ParamError, match=r"no customer column 'monetry'.*did you mean 'monetary'"):
        classify_frame(df, "abc", {"abc.metric": "monetry"}, registry=registry)
    with pytest.raises(ParamError, match=r"'region' is String, not numeric"):
        classify_frame(df, "abc", {"abc.metric": "region"}, registry=registry)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"a": 0.9, "b": 0.9}, r"a \(0.9\) must be below b \(0.9\)"),
        ({"a_rank": 0.6, "b_rank": 0.5}, r"a_rank \(0.6\) must be below b_rank \(0.5\)"),
        ({"a_rank": 0.5, "b_rank": 0.5}, r"a_rank \(0.5\) must be below b_rank \(0.5\)"),
        ({"mode": "ranks"}, r"'ranks' is not one of share, rank.*did you mean 'rank'"),
        ({"a": 1.2}, r"above the maximum"),
    ],
)
def test_bad_parameters(registry, params, message):
    with pytest.raises(ParamError, match=message):
        classify_frame(frame([1.0]), "abc", {"abc": params}, registry=registry)


def test_output_is_an_enum_best_to_worst(registry):
    out = classify_frame(frame([3.0, 2.0, 1.0]), "abc", registry=registry)
    assert out.schema["abc"] == pl.Enum(["A", "B", "C"])


@settings(settings.get_profile("key"))  # 300 examples in CI (tests/conftest.py)
@example(values=[100.0, 1.0, 1.0], cuts=(0.5, 0.9))  # issue 10 item 7: one customer above a was never A
@example(values=[50.0, 50.0, 1.0], cuts=(0.3, 0.9))  # a top tie group above a is A, all of it
@given(values=st.lists(st.one_of(st.none(), st.integers(-5, 30).map(float),
                                 st.floats(allow_nan=True, allow_infinity=True)), max_size=40),
       cuts=st.tuples(st.floats(0.01, 0.99), st.floats(0.02, 1.0)).filter(lambda c: c[0] < c[1]))
def test_share_mode_matches_the_documented_rule_for_any_values(registry, values, cuts):
    # NaN counts as the largest value (Polars' order); a NaN or infinite total leaves every share undefined: C.
    a, b = cuts
    total = sum(v for v in values if v is not None)
    expected = (["C"] * len(values) if math.isnan(total) or math.isinf(total)
                else reference_share(values, a + 1e-12, b + 1e-12))
    assert abc(values, registry, a=a, b=b) == expected


# ------------------------------------------------------- the crossing group (issue 10, item 7)
def test_one_customer_above_a_is_a_not_b(registry):
    # 90 of 100 from one customer: A was empty and the best customer B or C
    assert abc([90, 5, 5], registry) == ["A", "C", "C"]
    assert abc([90, 5, 5], registry, crossing="upper") == ["A", "B", "B"]
    assert abc([85, 10, 5], registry) == ["A", "B", "C"]


def test_upper_keeps_the_crossing_group_in_the_higher_class(registry):
    # total 130: 50 (before 0) A; 30, 30 (before .38 < .8, end .85) A; 10 (before .85) B; 5, 5 (before .92 < .95) B
    assert abc([50, 30, 30, 10, 5, 5], registry, crossing="upper") == ["A", "A", "A", "B", "B", "B"]
    # a group ending exactly at a: the next group starts at a, not below it, so it is not A
    assert abc([80, 15, 5], registry, crossing="upper") == ["A", "B", "C"]
    # A passes b already: B is empty (documented)
    assert abc([96, 3, 1], registry, crossing="upper") == ["A", "C", "C"]
    # rank mode: 10 customers; before-share 0, .1 A (a_rank .2); .2 .. .4 B (b_rank .5); .5 on C
    assert abc(list(range(10, 0, -1)), registry, mode="rank", crossing="upper") == ["A"] * 2 + ["B"] * 3 + ["C"] * 5
    assert abc([5, 4, 4, 3, 2, 0, 0, 0, 0, 0], registry, mode="rank", crossing="upper")[:5] == ["A", "A", "A", "B",
                                                                                               "B"]


def test_crossing_is_a_checked_parameter(registry):
    with pytest.raises(ParamError, match=r"'middle' is not one of lower, upper"):
        classify_frame(frame([1.0]), "abc", {"abc": {"crossing": "middle"}}, registry=registry)


def reference_rank(values, a, b, crossing="lower"):
    """Rank mode by brute force: per customer, count the customers with a greater (or equal) value."""
    n = len(values)
    key = [v if v is not None else -math.inf for v in values]
    top = max((v for v in values if v is not None and v > 0), default=None)
    out = []
    for v, k in zip(values, key):
        if v is None or not v > 0:
            out.append("C")
            continue
        end = sum(1 for x in key if x >= k) / n
        before = sum(1 for x in key if x > k) / n
        if crossing == "lower":
            in_a, in_b = end <= a + 1e-12, end <= b + 1e-12
        else:
            in_a, in_b = before < a - 1e-12, before < b - 1e-12
        out.append("A" if in_a or v == top else "B" if in_b else "C")
    return out


@settings(settings.get_profile("key"))  # 300 examples in CI (tests/conftest.py)
@given(values=st.lists(st.one_of(st.none(), st.integers(-5, 30).map(float), st.sampled_from([0.1, 0.2, 0.3, 1e9])),
                       max_size=40),
       cuts=st.tuples(st.floats(0.01, 0.99), st.floats(0.02, 1.0)).filter(lambda c: c[0] < c[1]),
       crossing=st.sampled_from(["lower", "upper"]), mode=st.sampled_from(["share", "rank"]))
@example(values=[100.0, 1.0, 1.0], cuts=(0.5, 0.9), crossing="lower", mode="share")  # issue 10 item 7
@example(values=[100.0, 1.0, 1.0], cuts=(0.5, 0.9), crossing="upper", mode="share")
# every share before a group below a: everyone is A (no position past the cut-off to search to)
@example(values=[10.0, 5.0], cuts=(0.8, 0.95), crossing="upper", mode="share")
# b = 1.0, its maximum: every positive customer is A or B, the last ones included
@example(values=[10.0, 5.0, 1.0], cuts=(0.5, 1.0), crossing="lower", mode="share")
def test_both_crossings_and_modes_match_brute_force(registry, values, cuts, crossing, mode):
    a, b = cuts
    if mode == "share":
        # the reference compares exactly at the cut-off, the plugin within 1e-12 of it
        slack = 1e-12 if crossing == "lower" else -1e-12
        expected = reference_share(values, a + slack, b + slack, crossing)
        got = abc(values, registry, a=a, b=b, crossing=crossing)
    else:
        expected = reference_rank(values, a, b, crossing)
        got = abc(values, registry, mode="rank", a_rank=a, b_rank=b, crossing=crossing)
    assert got == expected
    total = sum(v for v in values if v is not None)
    if (total > 0 if mode == "share" else any(v is not None and v > 0 for v in values)):
        assert "A" in got  # A is never empty when there is revenue to rank
        best = max(v for v in values if v is not None)
        assert all(lab == "A" for v, lab in zip(values, got) if v == best)
    if mode == "share" and crossing == "lower" and total > 0 and got.count("A") > sum(
            1 for v in values if v == max(v for v in values if v is not None)):
        a_sum = sum(v for v, lab in zip(values, got) if lab == "A")
        assert a_sum / total <= a + 1e-9  # beyond the top group, A holds at most a
