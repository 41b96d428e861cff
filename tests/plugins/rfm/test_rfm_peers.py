"""plugins.rfm in pymc-marketing's conventions: its own tests' expectations, ported.

The transaction data and the expected values are those of pymc-marketing's tests/clv/test_utils.py
(``TestRFM``, themselves adapted from lifetimes' tests/test_utils.py); the settings are the ones the
plugin's docstring gives (``bins=4, binning=qcut, monetary=mean, segments_by=code``), on transactions
without an order id (one order per customer and day, as pymc-marketing counts purchase days). The BTYD
summary (``rfm_summary`` without the first transaction) comes from the clv plugin's features.
"""

from __future__ import annotations

import polars as pl
import pytest

import engine
from engine.registry import get_registry
from plugins.clv import SUMMARY_COLUMNS, btyd_summary

PYMC = {"bins": 4, "binning": "qcut", "monetary": "mean", "segments_by": "code"}
MAPPING = {"customer_id": "identifier", "order_date": "date", "amount": "monetary_value"}


def transactions(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"identifier": pl.Int64, "date": pl.String, "monetary_value": pl.Float64},
                        orient="row").with_columns(pl.col("date").str.to_date())


# TestRFM.transaction_data
DATA = transactions([
    [1, "2015-01-01", 1], [1, "2015-02-06", 2], [2, "2015-01-01", 2], [3, "2015-01-01", 3],
    [3, "2015-01-02", 1], [3, "2015-01-05", 5], [4, "2015-01-16", 6], [4, "2015-02-02", 3],
    [4, "2015-02-05", 3], [4, "2015-02-05", 6], [5, "2015-01-16", 3], [5, "2015-01-17", 1],
    [5, "2015-01-18", 8], [6, "2015-02-02", 5],
])


@pytest.fixture(scope="module")
def registry():
    return get_registry(allow=["abc", "adc", "rfm", "clv"], strict=True)


def test_rfm_summary_returns_correct_results(registry):
    """rfm_summary(..., observation_period_end="2015-02-07") (inclusive): tierbook's as_of is the day after."""
    prep = engine.prepare(DATA, mapping=MAPPING, as_of="2015-02-08", registry=registry, needs=SUMMARY_COLUMNS)
    got = btyd_summary(prep.customers).sort("customer_id")
    expected = [[1, 1.0, 36.0, 37.0, 2], [2, 0.0, 0.0, 37.0, 0], [3, 2.0, 4.0, 37.0, 3], [4, 2.0, 20.0, 22.0, 6],
                [5, 2.0, 2.0, 22.0, 4.5], [6, 0.0, 0.0, 5.0, 0]]
    assert got.rows() == [tuple(r) for r in expected]


def test_rfm_summary_include_first_transaction(registry):
    """include_first_transaction=True: frequency counts every purchase day, recency is T - recency (days
    from the last purchase to the inclusive end: tierbook's recency_days - 1), M the mean per day."""
    out = engine.classify(DATA, mapping=MAPPING, as_of="2015-02-08", registry=registry, classifiers=["rfm"],
                          params={"rfm": PYMC}).sort("customer_id")
    got = out.select("customer_id", "frequency", pl.col("recency_days") - 1,
                     pl.col("monetary") / pl.col("frequency")).rows()
    expected = [[1, 2.0, 1.0, 1.5], [2, 1.0, 37.0, 2], [3, 3.0, 33.0, 3], [4, 3.0, 2.0, 6], [5, 3.0, 20.0, 4],
                [6, 1.0, 5.0, 5]]
    assert got == [tuple(r) for r in expected]


def test_rfm_summary_will_choose_the_correct_first_order_to_drop(registry):
    for dates, sales in ((["2014-03-14", "2014-04-09", "2014-05-21"], [10, 20, 25]),
                         (["2014-04-09", "2014-03-14", "2014-05-21"], [20, 10, 25])):
        data = transactions([[2, d, s] for d, s in zip(dates, sales)])
        prep = engine.prepare(data, mapping=MAPPING, registry=registry, needs=SUMMARY_COLUMNS)
        assert btyd_summary(prep.customers)["monetary_value"].to_list() == [22.5]


def test_rfm_summary_squashes_period_purchases_to_one_purchase(registry):
    data = transactions([[1, "2015-01-01", 1], [1, "2015-01-01", 1]])
    prep = engine.prepare(data, mapping=MAPPING, registry=registry, needs=SUMMARY_COLUMNS)
    assert btyd_summary(prep.customers)["frequency"].to_list() == [0]


def test_rfm_summary_statistics_identical_to_hardie_paper(registry):
    """CDNOW, observation_period_end 1997-10-01 (inclusive): the repeat buyers' monetary_value statistics."""
    from tests.plugins.clv.test_clv import cdnow_transactions

    prep = engine.prepare(cdnow_transactions(), as_of="1997-10-02", registry=registry, needs=SUMMARY_COLUMNS)
    m = btyd_summary(prep.customers).filter(pl.col("frequency") > 0)["monetary_value"]
    assert (m.len(), round(m.mean()), round(m.std()), round(m.min()), round(m.median()), round(m.max())) == (
        946, 35, 30, 3, 27, 300)


@pytest.mark.parametrize("config", [None, "custom"])
def test_rfm_segmentation_config(registry, config):
    params = dict(PYMC)
    if config is None:
        expected = ["Other", "Inactive Customer", "At Risk Customer", "Premium Customer", "Repeat Customer",
                    "Top Spender"]
    else:
        params["segment_codes"] = {"Test Segment": ["111", "222", "333", "444"]}
        expected = ["Other", "Test Segment", "Other", "Other", "Other", "Other"]
    out = engine.classify(DATA, mapping=MAPPING, registry=registry, classifiers=["rfm"], params={"rfm": params})
    assert out.sort("customer_id")["rfm_segment"].cast(pl.String).to_list() == expected


def test_rfm_segmentation_fewer_bins_when_edges_repeat(registry):
    """pymc-marketing warns "RFM score will not exceed 2 for f_quartile": its qcut drops repeated edges."""
    data = transactions([[1, "2015-01-01", 1], [1, "2015-02-06", 2], [2, "2015-01-01", 2], [3, "2015-01-02", 1],
                         [3, "2015-01-05", 3], [4, "2015-01-16", 4], [4, "2015-02-05", 5], [5, "2015-01-17", 1],
                         [5, "2015-01-18", 2], [5, "2015-01-19", 2]])
    out = engine.classify(data, mapping=MAPPING, registry=registry, classifiers=["rfm"], params={"rfm": PYMC})
    assert out["rfm_f"].max() == 2 and out["rfm_r"].max() == 4


def test_qcut_scores_are_pandas_qcut():
    """Against pandas.qcut itself (duplicates dropped), R reversed, on values with many ties."""
    pd = pytest.importorskip("pandas")
    import random

    rng = random.Random(5)
    for trial in range(30):
        n = rng.randint(1, 60)
        spread = rng.choice([2, 5, 50])
        frame = pl.DataFrame({"customer_id": list(range(n)),
                              "recency_days": [rng.randint(1, spread) for _ in range(n)],
                              "frequency": [rng.randint(1, spread) for _ in range(n)],
                              "monetary": [float(rng.randint(1, spread * 10)) for _ in range(n)]})
        bins = rng.choice([4, 5, 6])
        out = engine.classify_frame(frame, "rfm", {"rfm.bins": bins, "rfm.binning": "qcut"})
        for col, score, reverse in (("recency_days", "rfm_r", True), ("frequency", "rfm_f", False),
                                    ("monetary", "rfm_m", False)):
            codes = pd.qcut(frame[col].to_pandas(), q=bins, labels=False, duplicates="drop")
            if codes.isna().any():  # a single distinct value: pandas gives no bin; tierbook scores 1
                assert out[score].to_list() == [1] * n
                continue
            k = int(codes.max()) + 1
            want = [(k - c) if reverse else (c + 1) for c in codes.astype(int)]
            assert out[score].to_list() == want, (trial, col)


def test_defaults_unchanged():
    frame = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5], "recency_days": [1, 10, 50, 200, 400],
                          "frequency": [20, 8, 4, 2, 1], "monetary": [900.0, 400, 100, 50, 10]})
    out = engine.classify_frame(frame, "rfm")
    assert out["rfm_segment"].dtype == pl.Enum(["Champions", "Loyal Customers", "Potential Loyalists",
                                                "New Customers", "Promising", "Need Attention", "About to Sleep",
                                                "At Risk", "Can't Lose Them", "Hibernating", "Lost"])


def test_segment_codes_from_the_command_line(tmp_path, run_cli):
    DATA.write_csv(tmp_path / "tx.csv")
    code, _, err = run_cli("classify", tmp_path / "tx.csv", "--map", "customer_id=identifier", "--map",
                           "order_date=date", "--map", "amount=monetary_value", "--classifier", "rfm",
                           *[x for k, v in PYMC.items() for x in ("--set", f"rfm.{k}={v}")],
                           "--set", 'rfm.segment_codes={Test Segment: ["111", "222", "333", "444"], Any: ["**4"]}',
                           "-o", tmp_path / "out.csv")
    assert code == 0, err
    out = pl.read_csv(tmp_path / "out.csv").sort("customer_id")
    assert out["rfm_segment"].to_list() == ["Other", "Test Segment", "Other", "Any", "Other", "Any"]  # 434, 314
    code, _, err = run_cli("classify", tmp_path / "tx.csv", "--map", "customer_id=identifier", "--map",
                           "order_date=date", "--map", "amount=monetary_value", "--classifier", "rfm",
                           "--set", 'rfm.segment_codes={Bad: ["4x4"]}', "-o", tmp_path / "out.csv")
    assert code == 2 and "'4x4' is not an RFM code pattern" in err


def test_wildcards_and_first_match(registry):
    frame = pl.DataFrame({"customer_id": [1, 2, 3, 4], "recency_days": [1, 2, 3, 4],
                          "frequency": [4, 3, 2, 1], "monetary": [4.0, 3, 2, 1]})
    out = engine.classify_frame(frame, "rfm", {"rfm": {"bins": 4, "segments_by": "code",
                                                       "segment_codes": {"Top": ["44*"], "Mid": ["*3*", "444"]},
                                                       "segment_other": "Rest"}})
    assert out["rfm_code"].to_list() == ["444", "333", "222", "111"]
    assert out["rfm_segment"].cast(pl.String).to_list() == ["Top", "Mid", "Rest", "Rest"]
    assert out["rfm_segment"].dtype == pl.Enum(["Top", "Mid", "Rest"])


@pytest.mark.parametrize("codes, message", [
    ({"": ["444"]}, "segment names must be non-empty text, got ''"),
    ({"  ": ["444"]}, "segment names must be non-empty text, got '  '"),
    ({5: ["444"]}, "segment names must be non-empty text, got 5"),
    ({"Top": "444"}, r"segment 'Top': expected a list of codes like \['444', '34\*'\], got '444'"),
    ({"Top": ["44"]}, "'44' is not an RFM code pattern"),
    ({"Top": ["4444"]}, "'4444' is not an RFM code pattern"),
    ({"Top": ["404"]}, "'404' is not an RFM code pattern"),
])
def test_bad_segment_codes(codes, message):
    """Every way a segment_codes mapping can be wrong is refused, naming the segment and the bad value."""
    from engine import ParamError

    frame = pl.DataFrame({"customer_id": [1, 2], "recency_days": [1, 2], "frequency": [2, 1], "monetary": [2.0, 1]})
    with pytest.raises(ParamError, match=message):
        engine.classify_frame(frame, "rfm", {"rfm": {"bins": 4, "segments_by": "code", "segment_codes": codes}})


def test_qcut_edges_are_the_customers_values_only():
    """Prospects (no recency, frequency 0, monetary 0) take no part in the quantile edges and get no score: the
    customers' qcut scores are pandas.qcut's over the customers alone."""
    pd = pytest.importorskip("pandas")
    import random

    rng = random.Random(11)
    for trial in range(12):
        n, prospects = rng.randint(2, 30), rng.randint(1, 8)
        values = {"recency_days": [rng.randint(1, 40) for _ in range(n)],
                  "frequency": [rng.randint(1, 6) for _ in range(n)],
                  "monetary": [float(rng.randint(-5, 500)) for _ in range(n)]}
        frame = pl.DataFrame({"customer_id": list(range(n + prospects)),
                              "recency_days": values["recency_days"] + [None] * prospects,
                              "frequency": values["frequency"] + [0] * prospects,
                              "monetary": values["monetary"] + [0.0] * prospects},
                             schema={"customer_id": pl.Int64, "recency_days": pl.Int64, "frequency": pl.Int64,
                                     "monetary": pl.Float64})
        order = list(range(n + prospects))
        rng.shuffle(order)  # prospects anywhere in the table
        out = engine.classify_frame(frame[order], "rfm", {"rfm.bins": 4, "rfm.binning": "qcut"}).sort("customer_id")
        for col, score, reverse in (("recency_days", "rfm_r", True), ("frequency", "rfm_f", False),
                                    ("monetary", "rfm_m", False)):
            codes = pd.qcut(pd.Series(values[col]), q=4, labels=False, duplicates="drop")
            if codes.isna().any():  # a single distinct value: pandas gives no bin; tierbook scores 1
                want = [1] * n
            else:
                k = int(codes.max()) + 1
                want = [(k - c) if reverse else (c + 1) for c in codes.astype(int)]
            assert out[score].to_list() == want + [None] * prospects, (trial, col)


@pytest.mark.parametrize("binning", ["rank", "qcut"])
def test_no_mean_per_order_without_an_order(binning):
    """monetary=mean is monetary / frequency: undefined for a customer without an order (a hand-made table can
    give one a recency), who gets no M score rather than one from a division by zero (-inf: the lowest, +inf:
    the highest)."""
    frame = pl.DataFrame({"customer_id": [1, 2, 3, 4], "recency_days": [1, 2, 3, 4], "frequency": [2, 1, 0, 0],
                          "monetary": [10.0, 3.0, -4.0, 7.0]})
    out = engine.classify_frame(frame, "rfm", {"rfm": {"bins": 4, "binning": binning, "monetary": "mean"}})
    assert out["rfm_m"].to_list()[2:] == [None, None]
    assert out["rfm_code"].to_list()[2:] == [None, None]
    assert out["rfm_m"][0] > out["rfm_m"][1]  # 5 per order against 3
    # by rank, n counts all four customers with a recency: the rank definition floor((rank - 1) * bins / n) + 1
    # gives 5 (rank 2) the score 2 and 3 (rank 1) the score 1; the third cut value falls past the two means (null)
    # and is above both. By qcut the edges are the two means' quantiles: 3 in the lowest bin, 5 in the highest.
    assert out["rfm_m"].to_list()[:2] == ([2, 1] if binning == "rank" else [4, 1])


def test_qcut_edges_to_the_last_bit_where_an_edge_falls_halfway():
    """An edge halfway between two values (n = 4, the median) is numpy's ``b - (b - a) * (1 - t)`` at t = 0.5, not
    ``a + (b - a) * t``: between two subnormal values the two round apart (1.5e-323 against 1e-323), and the value
    1.5e-323 on the edge is in the lower bin, as pandas puts it."""
    pd = pytest.importorskip("pandas")
    values = [0.0, 1e-323, 1.5e-323, 1.0]
    codes = pd.qcut(pd.Series(values), q=2, labels=False, duplicates="drop").tolist()
    frame = pl.DataFrame({"customer_id": [1, 2, 3, 4], "recency_days": [1, 2, 3, 4], "frequency": [1, 1, 1, 1],
                          "monetary": values})
    out = engine.classify_frame(frame, "rfm", {"rfm": {"bins": 2, "binning": "qcut", "hv_min_r": 1, "hv_min_f": 1,
                                                       "hv_min_m": 1, "potential_min_total": 3}})
    assert out["rfm_m"].to_list() == [c + 1 for c in codes] == [1, 1, 1, 2]
