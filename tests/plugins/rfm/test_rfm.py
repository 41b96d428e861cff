"""plugins.rfm: scores 1..bins by min-rank quantiles, rfm_code, the segment grid, value tiers.

With n customers of distinct values a customer's score is its position: the
tests build frames where the wanted scores are the ranks, and the expected
segment comes from this file's own copy of the grid documented in plugins/rfm.
"""

from __future__ import annotations

import math
import random

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ParamError, classify_frame

#: The grid as the plugin's docstring documents it: rows R = 5 .. 1, columns FM = 1 .. 5.
DOCUMENTED_GRID = {
    5: ["New Customers", "Potential Loyalists", "Potential Loyalists", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalists", "Potential Loyalists", "Loyal Customers", "Champions"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
    1: ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],
}
SEGMENTS = ["Champions", "Loyal Customers", "Potential Loyalists", "New Customers", "Promising", "Need Attention",
            "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost"]


def by_scores(r, f, m):
    """A frame whose customers (ids 1..n, distinct values) get exactly these R, F, M scores with bins = n."""
    n = len(r)
    return pl.DataFrame({
        "customer_id": list(range(1, n + 1)),
        "recency_days": [100 - 10 * s for s in r],  # a higher R score is a more recent last order
        "frequency": list(f),
        "monetary": [10.0 * s for s in m],
    })


def rfm(df, registry, **params):
    return classify_frame(df, "rfm", {"rfm": params}, registry=registry)


def strings(series):
    return series.cast(pl.String).to_list()


# ---------------------------------------------------------------------- scores
def test_distinct_values_score_by_quantile(registry):
    # score = floor((rank - 1) * 5 / 10) + 1 for ranks 1..10
    df = pl.DataFrame({"customer_id": range(10), "recency_days": range(10, 0, -1), "frequency": range(1, 11),
                       "monetary": [float(x) for x in range(1, 11)]})
    out = rfm(df, registry)
    expected = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert out["rfm_r"].to_list() == expected  # recency 10 (oldest) scores 1, recency 1 scores 5
    assert out["rfm_f"].to_list() == expected
    assert out["rfm_m"].to_list() == expected


def test_ties_share_the_lowest_score_of_their_group(registry):
    # min ranks: 1 x6 -> rank 1 -> 1; 2, 2 -> rank 7 -> floor(6 * .5) + 1 = 4; 3 -> rank 9 -> 5; 5 -> rank 10 -> 5
    df = pl.DataFrame({"customer_id": range(10), "recency_days": [5] * 10,
                       "frequency": [1, 1, 1, 1, 1, 1, 2, 2, 3, 5], "monetary": [1.0] * 10})
    out = rfm(df, registry)
    assert out["rfm_f"].to_list() == [1] * 6 + [4, 4, 5, 5]
    # everyone ties on R and M: one score for all, the lowest
    assert set(out["rfm_r"].to_list()) == {1}
    assert set(out["rfm_m"].to_list()) == {1}


def test_scores_do_not_depend_on_row_order(registry):
    rng = random.Random(3)
    n = 300
    df = pl.DataFrame({"customer_id": range(n), "recency_days": [rng.randint(1, 40) for _ in range(n)],
                       "frequency": [rng.choice([1, 1, 1, 2, 2, 3, 7]) for _ in range(n)],
                       "monetary": [float(rng.choice([5, 10, 10, 20, 99])) for _ in range(n)]})
    base = rfm(df, registry).select("customer_id", "rfm_code", "rfm_segment", "value_tier").sort("customer_id")
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=5)
    again = rfm(shuffled, registry).select("customer_id", "rfm_code", "rfm_segment", "value_tier")
    assert again.sort("customer_id").equals(base)
    # equal values always get equal scores
    scored = rfm(df, registry)
    for col, score in (("recency_days", "rfm_r"), ("frequency", "rfm_f"), ("monetary", "rfm_m")):
        assert scored.group_by(col).agg(pl.col(score).n_unique())[score].max() == 1


@pytest.mark.parametrize("bins", [2, 3, 7, 10])
def test_scores_run_from_1_to_bins(registry, bins):
    n = 40
    df = pl.DataFrame({"customer_id": range(n), "recency_days": range(n, 0, -1), "frequency": range(1, n + 1),
                       "monetary": [float(x) for x in range(n)]})
    out = rfm(df, registry, bins=bins, hv_min_r=1, hv_min_f=1, hv_min_m=1, potential_min_total=3)
    for col in ("rfm_r", "rfm_f", "rfm_m"):
        assert sorted(set(out[col].to_list())) == list(range(1, bins + 1))
        # each score has n / bins customers (rounded): quantiles, not equal-width bins
        counts = out[col].value_counts()["count"].to_list()
        assert max(counts) - min(counts) <= 1


def test_rfm_code_joins_the_three_scores(registry):
    out = rfm(by_scores(r=[5, 4, 3, 2, 1], f=[4, 5, 1, 3, 2], m=[5, 1, 2, 4, 3]), registry)
    assert out["rfm_code"].to_list() == ["545", "451", "312", "234", "123"]
    assert out.schema["rfm_code"] == pl.String
    assert out.schema["rfm_r"] == pl.Int8


# -------------------------------------------------------------------- segments
@pytest.mark.parametrize("r", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fm", [1, 2, 3, 4, 5])
def test_every_cell_of_the_documented_grid(registry, r, fm):
    # customer 1 gets scores R = r, F = M = fm; the other four take the remaining ranks
    others_r = [s for s in range(1, 6) if s != r]
    others_fm = [s for s in range(1, 6) if s != fm]
    df = by_scores(r=[r, *others_r], f=[fm, *others_fm], m=[fm, *others_fm])
    out = rfm(df, registry)
    assert out["rfm_code"][0] == f"{r}{fm}{fm}"
    assert strings(out["rfm_segment"])[0] == DOCUMENTED_GRID[r][fm - 1]


def test_fm_is_the_mean_of_f_and_m_rounded_up(registry):
    # R = 5: FM = ceil((1 + 2) / 2) = 2 -> Potential Loyalists (51 would be New Customers);
    # R = 4: ceil((5 + 2) / 2) = 4 -> Loyal Customers; R = 3: ceil((2 + 1) / 2) = 2 -> About to Sleep;
    # R = 2: ceil((4 + 5) / 2) = 5 -> Can't Lose Them; R = 1: ceil((3 + 4) / 2) = 4 -> At Risk
    out = rfm(by_scores(r=[5, 4, 3, 2, 1], f=[1, 5, 2, 4, 3], m=[2, 3, 1, 5, 4]), registry)
    assert strings(out["rfm_segment"]) == ["Potential Loyalists", "Loyal Customers", "About to Sleep",
                                           "Can't Lose Them", "At Risk"]


def test_segment_labels_are_the_eleven_named_segments_best_first(registry):
    out = rfm(by_scores([1, 2], [1, 2], [1, 2]), registry, bins=2, hv_min_r=1, hv_min_f=1, hv_min_m=1,
              potential_min_total=3)
    assert out.schema["rfm_segment"] == pl.Enum(SEGMENTS)


def test_other_bins_are_rescaled_to_the_five_by_five_grid(registry):
    # bins = 10, customer i has R = F = M = i; ceil(i * 5 / 10): 1, 1, 2, 2, 3, 3, 4, 4, 5, 5
    out = rfm(by_scores(*[list(range(1, 11))] * 3), registry, bins=10)
    five = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert strings(out["rfm_segment"]) == [DOCUMENTED_GRID[s][s - 1] for s in five]
    assert out["rfm_code"][9] == "101010"


@pytest.mark.parametrize("bins", range(2, 11))
def test_every_bins_is_rescaled_as_documented(registry, bins):
    """ceil(score * 5 / bins) for R, F and M, FM the mean of F and M rounded up, for every score of every bins."""
    scores = list(range(1, bins + 1))
    r, f, m = scores, scores[1:] + scores[:1], scores[::-1]  # every score once in each, in different pairs

    def five(score):
        return -(-score * 5 // bins)

    out = rfm(by_scores(r, f, m), registry, bins=bins, hv_min_r=1, hv_min_f=1, hv_min_m=1, potential_min_total=3)
    assert out.select("rfm_r", "rfm_f", "rfm_m").rows() == list(zip(r, f, m))
    assert strings(out["rfm_segment"]) == [DOCUMENTED_GRID[five(a)][-(-(five(b) + five(c)) // 2) - 1]
                                           for a, b, c in zip(r, f, m)]


def test_segment_grid_override(registry):
    top = ("55", "43")
    grid = {"Top": list(top), "Everyone else": [f"{r}{fm}" for r in range(1, 6) for fm in range(1, 6)
                                                if f"{r}{fm}" not in top]}
    out = rfm(by_scores(r=[3, 2, 1], f=[3, 2, 1], m=[3, 1, 2]), registry, bins=3, hv_min_r=1, hv_min_f=1,
              hv_min_m=1, segments=grid)
    # bins 3 rescaled to five: ceil(s * 5 / 3): 3 -> 5, 2 -> 4, 1 -> 2
    # customer 1: R 5, FM 5 -> 55; customer 2: R 4, FM ceil((4 + 2) / 2) = 3 -> 43; customer 3: R 2, FM 3 -> 23
    assert out.schema["rfm_segment"] == pl.Enum(["Top", "Everyone else"])
    assert strings(out["rfm_segment"]) == ["Top", "Top", "Everyone else"]


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"Top": ["55"]}, "cells not covered by any segment: 11, 12"),
        ({"A": ["55"], "B": ["55"]}, "cell 55 is in both 'A' and 'B'"),
        ({"A": ["56"]}, "'56' is not a cell"),
        ({"A": "55"}, "expected a list of cells"),
        ({"": ["55"]}, "segment names must be non-empty text, got ''"),
        ({" ": ["55"]}, "segment names must be non-empty text, got ' '"),
        ({5: ["55"]}, "segment names must be non-empty text, got 5"),
    ],
)
def test_bad_grid_override(registry, grid, message):
    with pytest.raises(ParamError, match=message):
        rfm(by_scores([1, 2], [1, 2], [1, 2]), registry, segments=grid)


# ----------------------------------------------------------------- value tiers
def test_value_tiers_default_rules(registry):
    # (R, F, M): (3, 4, 4) high-value (each at its minimum); (2, 5, 5) not high (R < 3), total 12 potential;
    # (5, 3, 1) total 9 potential (at the minimum); (4, 1, 3) total 8 ordinary; (1, 2, 2) ordinary
    df = by_scores(r=[3, 2, 5, 4, 1], f=[4, 5, 3, 1, 2], m=[4, 5, 1, 3, 2])
    out = rfm(df, registry)
    assert out["rfm_code"].to_list() == ["344", "255", "531", "413", "122"]
    assert strings(out["value_tier"]) == ["high-value", "potential", "potential", "ordinary", "ordinary"]
    assert out.schema["value_tier"] == pl.Enum(["high-value", "potential", "ordinary"])


def test_value_tier_parameters(registry):
    df = by_scores(r=[3, 2, 5, 4, 1], f=[4, 5, 3, 1, 2], m=[4, 5, 1, 3, 2])
    # F must now be 5: (3, 4, 4) drops to potential (total 11); (2, 5, 5) becomes high with R >= 2
    out = rfm(df, registry, hv_min_r=2, hv_min_f=5, hv_min_m=5)
    assert strings(out["value_tier"]) == ["potential", "high-value", "potential", "ordinary", "ordinary"]
    # potential needs 10 now: (5, 3, 1) = 9 is ordinary
    out = rfm(df, registry, potential_min_total=10)
    assert strings(out["value_tier"]) == ["high-value", "potential", "ordinary", "ordinary", "ordinary"]


def test_prospects_get_no_scores_and_are_potential(registry):
    df = by_scores(r=[1, 2, 3, 4, 5], f=[1, 2, 3, 4, 5], m=[1, 2, 3, 4, 5]).vstack(
        pl.DataFrame({"customer_id": [6], "recency_days": [None], "frequency": [0], "monetary": [0.0]},
                     schema={"customer_id": pl.Int64, "recency_days": pl.Int64, "frequency": pl.Int64,
                             "monetary": pl.Float64}))
    out = rfm(df, registry)
    # n counts customers with orders only: the five keep scores 1..5
    assert out["rfm_code"].to_list() == ["111", "222", "333", "444", "555", None]
    assert out.row(5, named=True)["rfm_segment"] is None
    assert strings(out["value_tier"])[5] == "potential"
    out = rfm(df, registry, prospects_are_potential=False)
    assert strings(out["value_tier"])[5] == "ordinary"


def test_a_customer_who_only_returned_goods_is_no_prospect(registry):
    # issue 10: with last_activity, only a customer never seen is a prospect; one seen only through returns
    # (no recency: no purchase) gets no scores and is ordinary, whatever prospects_are_potential says
    import datetime as dt

    df = by_scores(r=[1, 2, 3], f=[1, 2, 3], m=[1, 2, 3]).with_columns(pl.lit(dt.date(2011, 1, 1)).alias("last_activity"))
    extra = pl.DataFrame({"customer_id": [7, 8], "recency_days": [None, None], "frequency": [0, 0],
                          "monetary": [-6.24, 0.0], "last_activity": [dt.date(2011, 1, 1), None]},
                         schema=df.schema)
    out = rfm(df.vstack(extra), registry)
    assert out["rfm_code"].to_list()[3:] == [None, None]
    assert strings(out["value_tier"])[3:] == ["ordinary", "potential"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bins": 3}, r"hv_min_f \(4\) is above bins \(3\)"),
        ({"bins": 4, "hv_min_f": 4, "hv_min_m": 4, "potential_min_total": 13}, r"above 3 x bins \(12\)"),
        ({"bins": 1}, "below the minimum 2"),
        ({"prospects_are_potential": "maybe"}, "not a boolean"),
    ],
)
def test_bad_parameters(registry, params, message):
    with pytest.raises(ParamError, match=message):
        rfm(by_scores([1, 2], [1, 2], [1, 2]), registry, **params)


def test_single_customer_and_all_equal_values_score_1(registry):
    # min rank 1 for everyone: floor(0 * 5 / n) + 1 = 1 (ties share the lowest score of their group)
    one = rfm(pl.DataFrame({"customer_id": [1], "recency_days": [3], "frequency": [9], "monetary": [500.0]}),
              registry)
    assert one.row(0, named=True)["rfm_code"] == "111"
    assert strings(one["rfm_segment"]) == ["Lost"] and strings(one["value_tier"]) == ["ordinary"]
    same = rfm(pl.DataFrame({"customer_id": [1, 2, 3], "recency_days": [3] * 3, "frequency": [2] * 3,
                             "monetary": [10.0] * 3}), registry)
    assert same["rfm_code"].to_list() == ["111"] * 3


# ------------------------------------------------ scores against the definition
def reference_scores(values, bins):
    """``floor((rank - 1) * bins / n) + 1`` with the min rank, written plainly (NaN sorts above every number,
    as in Polars); None for a missing value."""
    def key(x):
        return (math.isnan(x), 0.0 if math.isnan(x) else x)

    present = [v for v in values if v is not None]
    n = len(present)
    return [None if v is None else sum(1 for x in present if key(x) < key(v)) * bins // n + 1 for v in values]


number = st.one_of(st.none(), st.integers(-3, 6).map(float), st.floats(allow_nan=True, allow_infinity=True))


@settings(settings.get_profile("key"))  # 300 examples in CI (tests/conftest.py)
@given(values=st.lists(number, max_size=40), bins=st.integers(2, 10))
def test_monetary_scores_follow_the_rank_definition_for_any_values(registry, values, bins):
    # M is scored on monetary among customers with orders; a missing recency makes a prospect (no score).
    df = pl.DataFrame({
        "customer_id": list(range(len(values))),
        "recency_days": [None if v is None else 5 for v in values],
        "frequency": [0 if v is None else 1 for v in values],
        "monetary": [0.0 if v is None else v for v in values],
    }, schema={"customer_id": pl.Int64, "recency_days": pl.Int64, "frequency": pl.Int64, "monetary": pl.Float64})
    params = {"bins": bins, "hv_min_r": 1, "hv_min_f": 1, "hv_min_m": 1, "potential_min_total": 3}
    out = rfm(df, registry, **params)
    assert out["rfm_m"].to_list() == reference_scores(values, bins)


@settings(settings.get_profile("key"))  # 300 examples in CI (tests/conftest.py)
@given(recency=st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=40), bins=st.integers(2, 10))
def test_recency_and_frequency_scores_follow_the_rank_definition(registry, recency, bins):
    freq = [None if r is None else (r * 7) % 5 for r in recency]
    df = pl.DataFrame({
        "customer_id": list(range(len(recency))),
        "recency_days": recency,
        "frequency": [0 if f is None else f for f in freq],
        "monetary": [0.0] * len(recency),
    }, schema={"customer_id": pl.Int64, "recency_days": pl.Int64, "frequency": pl.Int64, "monetary": pl.Float64})
    params = {"bins": bins, "hv_min_r": 1, "hv_min_f": 1, "hv_min_m": 1, "potential_min_total": 3}
    out = rfm(df, registry, **params)
    # R: the most recent (smallest recency) scores highest
    assert out["rfm_r"].to_list() == reference_scores([None if r is None else float(-r) for r in recency], bins)
    assert out["rfm_f"].to_list() == reference_scores([None if f is None else float(f) for f in freq], bins)
    codes = [None if r is None else f"{r}{f}{m}" for r, f, m in
             zip(out["rfm_r"].to_list(), out["rfm_f"].to_list(), out["rfm_m"].to_list())]
    assert out["rfm_code"].to_list() == codes


def test_value_tier_thresholds_are_bounded_as_listed(registry):
    from engine import ParamError
    from engine.registry import describe_registry

    rfm = registry.classifier("rfm")
    listed = {p["name"]: (p.get("min"), p.get("max")) for c in describe_registry(registry) if c["name"] == "rfm"
              for p in c["params"]}
    for name in ("hv_min_r", "hv_min_f", "hv_min_m"):
        low, high = listed[name]
        assert (low, high) == (1, 10)
        rfm.resolve({"bins": 10, name: high})
        with pytest.raises(ParamError, match="maximum"):
            rfm.resolve({"bins": 10, name: high + 1})


def test_every_number_parameter_is_bounded_and_stepped_as_the_scores_allow(registry):
    """Scores run from 1 to bins, bins from 2 to 10: a score threshold is 1..10, R + F + M is 3..30; every
    bound is enforced where `tierbook plugins` lists it, at its edge, and the workbench's sliders move one
    score at a time (a step of 2 would skip scores)."""
    from engine import ParamError
    from engine.registry import describe_registry

    rfm = registry.classifier("rfm")
    listed = {p["name"]: (p.get("min"), p.get("max"), p.get("step"), p.get("default"))
              for c in describe_registry(registry) if c["name"] == "rfm" for p in c["params"]
              if p["type"] == "int"}
    # the defaults are the docstring's: 5 bins, high-value at R >= 3, F >= 4, M >= 4, potential from 9
    assert listed == {"bins": (2, 10, 1, 5), "hv_min_r": (1, 10, 1, 3), "hv_min_f": (1, 10, 1, 4),
                      "hv_min_m": (1, 10, 1, 4), "potential_min_total": (3, 30, 1, 9)}
    widest = {"bins": 10}  # every threshold fits 10 bins
    smallest = {"bins": 2, "hv_min_r": 1, "hv_min_f": 1, "hv_min_m": 1, "potential_min_total": 3}
    for name, (low, high, _, _) in listed.items():
        base = smallest if name == "bins" else widest
        assert rfm.resolve({**base, name: high})[name] == high
        assert rfm.resolve({**smallest, name: low})[name] == low
        with pytest.raises(ParamError, match="maximum"):
            rfm.resolve({**base, name: high + 1})
        with pytest.raises(ParamError, match="minimum"):
            rfm.resolve({**smallest, name: low - 1})
    # the cross-checks at their edges: a threshold may equal bins, R + F + M may reach 3 x bins, not more
    for bins in (2, 4, 9):
        for name in ("hv_min_r", "hv_min_f", "hv_min_m"):
            assert rfm.resolve({**smallest, "bins": bins, name: bins})[name] == bins
            with pytest.raises(ParamError, match=rf"{name} \({bins + 1}\) is above bins \({bins}\)"):
                rfm.resolve({**smallest, "bins": bins, name: bins + 1})
        assert rfm.resolve({**smallest, "bins": bins, "potential_min_total": 3 * bins})["potential_min_total"] \
            == 3 * bins
        with pytest.raises(ParamError, match=rf"above 3 x bins \({3 * bins}\)"):
            rfm.resolve({**smallest, "bins": bins, "potential_min_total": 3 * bins + 1})


@pytest.mark.parametrize("bins", [2, 8, 9])
def test_segments_by_code_up_to_nine_bins(registry, bins):
    """One digit a score: segments by code take up to 9 bins, and 10 is refused."""
    df = pl.DataFrame({"customer_id": list(range(bins)), "recency_days": list(range(bins, 0, -1)),
                       "frequency": list(range(1, bins + 1)), "monetary": [float(x) for x in range(1, bins + 1)]})
    params = {"bins": bins, "segments_by": "code", "segment_codes": {"Top": [f"{bins}{bins}{bins}"]},
              "hv_min_r": 1, "hv_min_f": 1, "hv_min_m": 1, "potential_min_total": 3}
    out = rfm(df, registry, **params)
    assert out["rfm_code"].to_list() == [f"{s}{s}{s}" for s in range(1, bins + 1)]
    assert strings(out["rfm_segment"]) == ["Other"] * (bins - 1) + ["Top"]
    with pytest.raises(ParamError, match=r"segments_by=code needs bins <= 9 \(one digit a score\), not 10"):
        rfm(df, registry, **{**params, "bins": 10})


def test_f_and_m_do_not_depend_on_the_recency_values(registry):
    """F and M rank every customer with a recency (of a hand-made table too: a float column, infinite or NaN
    included) by frequency and monetary alone; only a missing recency (a prospect) leaves them out."""
    df = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5, 6],
                       "recency_days": [1.0, float("inf"), float("nan"), float("-inf"), 2.5, None],
                       "frequency": [3, 1, 2, 5, 4, 9], "monetary": [1.0, 20.0, 3.0, -4.0, 5.0, 99.0]})
    out = rfm(df, registry)
    assert out["rfm_f"].to_list() == reference_scores([3.0, 1.0, 2.0, 5.0, 4.0, None], 5) == [3, 1, 2, 5, 4, None]
    assert out["rfm_m"].to_list() == reference_scores([1.0, 20.0, 3.0, -4.0, 5.0, None], 5) == [2, 5, 3, 1, 4, None]
