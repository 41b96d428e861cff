"""engine.features: the dense pass (an ordered pass on integer customer ids, aggregated in arrays indexed by the id)
against the streaming pass that hashes customer ids, and against hashing the orders.

Every input is computed with the dense pass allowed and with it turned off (``DENSE_PASS``), both trying the
boundary count, and by hashing: the customer tables must be equal, the reports too (rows, rejects, net revenue,
the customers recounted), and the dense pass must have run (or, where the ids are too far apart, have given up).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import engine.features as features
from engine.data import read_transactions
from engine.errors import DataError
from engine.classifier import Feature
from engine.features import compute_features

KEY = settings(settings.get_profile("key"))
START = dt.date(2011, 1, 1)
MAPPING = {c: c for c in ("customer_id", "order_id", "order_date", "amount")}
SCHEMA = {"customer_id": pl.Int64, "order_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64}


def frame(rows, schema=SCHEMA) -> pl.DataFrame:
    """rows: (customer, order, day offset or None, amount or None)."""
    return pl.DataFrame(
        {"customer_id": [r[0] for r in rows], "order_id": [r[1] for r in rows],
         "order_date": [None if r[2] is None else START + dt.timedelta(days=r[2]) for r in rows],
         "amount": [r[3] for r in rows]}, schema=schema)


def spy_dense_pass(monkeypatch) -> list[bool]:
    """What each dense pass returns, from now on: True for tables, False where it gave up (the ids too far apart)."""
    ran: list[bool] = []
    real = features._dense_pass

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(features, "_dense_pass", spy)
    return ran


@pytest.fixture
def dense_runs(monkeypatch):
    """:func:`spy_dense_pass` for one test."""
    return spy_dense_pass(monkeypatch)


def both_ways(data, monkeypatch, as_of=None, batch_rows=None):
    """The customer table and report with the dense pass and without it (boundaries tried both times) and by
    hashing; asserts they agree and returns the dense pass's result (None where no row is usable)."""
    if batch_rows is not None:
        monkeypatch.setattr(features, "DENSE_BATCH_ROWS", batch_rows)
    out, errors = {}, {}
    for name, dense, orders in (("dense", True, "boundaries"), ("streaming", False, "boundaries"),
                                ("hashing", True, "hashing")):
        monkeypatch.setattr(features, "DENSE_PASS", dense)
        try:
            out[name] = compute_features(read_transactions(data, MAPPING), as_of=as_of, orders=orders)
        except DataError as exc:
            errors[name] = str(exc)
    if errors:
        assert not out and len(set(errors.values())) == 1, errors
        return None
    dense, streaming = out["dense"], out["streaming"]
    assert dense.customers.equals(streaming.customers)
    assert dense.customers.equals(out["hashing"].customers)
    assert dense.as_of == streaming.as_of
    assert dense.report.to_dict() == streaming.report.to_dict()
    return dense


customer_ids = st.one_of(st.none(), st.integers(-3, 6), st.sampled_from([1_000, -70_000, 2**31 - 1]))
order_ids = st.one_of(st.none(), st.integers(0, 12))
amounts = st.one_of(st.none(), st.sampled_from([0.0, 0.00001, 0.0001, -2.5, 1.0, 10.0, 3.33, -0.0001]))
days = st.one_of(st.none(), st.integers(0, 40))
lines = st.lists(st.tuples(customer_ids, order_ids, days, amounts), min_size=1, max_size=50)


@KEY
@example(rows=[(1, 1, 1, 1.0), (2, 2, 1, 1.0), (1, 1, 2, 1.0)], as_of=None, ordered=False, batch_rows=1)  # split
@example(rows=[(1, 1, 1, 1.0), (2, 1, 1, 1.0), (1, 1, 1, 1.0)], as_of=None, ordered=False, batch_rows=2)  # shared
@example(rows=[(1, 5, 1, -1.0), (1, 5, 1, 1.0), (2, 6, 1, 1.0)], as_of=None, ordered=False, batch_rows=1)
@example(rows=[(1, None, 1, 1.0), (1, 1, 1, 1.0), (2, 0, 2, 1.0)], as_of=None, ordered=False, batch_rows=1)
# the largest key of the batches before, carried: customer 2's order 4 again after order 3 in the next batch
@example(rows=[(2, 4, 0, 1.0), (3, 5, 0, 1.0), (1, 3, 0, 1.0), (2, 4, 0, 1.0)], as_of=None, ordered=False,
         batch_rows=2)
# zero amounts in a batch without a null (counted directly): customer 2 has usable rows but no purchase, and the
# zero line of customer 1's order 1 is not another order, in the run starts and in the positions
@example(rows=[(1, 1, 0, 0.0), (1, 1, 0, 1.0), (2, 2, 1, 0.0), (1, 3, 2, 2.0), (1, 4, 3, 0.0)], as_of=None,
         ordered=False, batch_rows=1 << 18)
@example(rows=[(1, 1, 0, 0.0), (1, 1, 0, 1.0), (2, 2, 1, 0.0), (1, 3, 2, 2.0), (1, 4, 3, 0.0)], as_of=None,
         ordered=True, batch_rows=1 << 18)
# a line on the as_of day itself in a batch without a null: not usable (the batch is not counted directly)
@example(rows=[(1, 1, 0, 1.0), (1, 2, 5, 2.0), (2, 3, 10, 3.0)], as_of=START + dt.timedelta(days=10),
         ordered=True, batch_rows=1 << 18)
@given(rows=lines, as_of=st.one_of(st.none(), st.integers(1, 41).map(lambda d: START + dt.timedelta(days=d))),
       ordered=st.booleans(), batch_rows=st.sampled_from([1, 2, 3, 7, 1 << 18]))
def test_any_input_the_same_as_the_streaming_pass(rows, as_of, ordered, batch_rows):
    """Nulls in every column, zero and sub-unit amounts, returns, ids that are negative or far apart, an as_of that
    drops rows; as given or written order by order (sorted by order id), read in batches of a few rows."""
    if ordered:
        rows = sorted(rows, key=lambda r: (r[1] is not None, r[1] or 0))
    with pytest.MonkeyPatch.context() as mp:
        ran = []
        real = features._dense_pass
        mp.setattr(features, "_dense_pass", lambda *a, **k: ran.append(real(*a, **k)) or ran[-1])
        result = both_ways(frame(rows), mp, as_of, batch_rows)
    usable = [r for r in rows if None not in (r[0], r[2], r[3]) and (as_of is None or START + dt.timedelta(days=r[2])
                                                                     < as_of)]
    if result is None:
        assert not usable
        return
    assert result.report.orders_counted == "boundaries"
    ids = [r[0] for r in usable]
    # the dense pass ran, or gave up where the ids are more than DENSE_SPAN_SLACK apart (2**31 - 1 and the rest)
    assert ran and (ran[0] is not None) == (max(ids) - min(ids) < features.DENSE_SPAN_SLACK)


def test_numbered_orders_in_many_batches(monkeypatch, dense_runs, tmp_path):
    """A log numbered as the orders come, with returns inside orders and credit notes, as Parquet in small row
    groups read in batches of 1,000 rows; then one line out of place: its customer counted again by hashing."""
    n = 30_000
    i = pl.int_range(0, n)
    data = pl.select(customer_id=(i // 3 * 7919) % 997 + 10, order_id=i // 3,
                     order_date=pl.lit(START) + pl.duration(days=i // 1000),
                     amount=pl.when(i % 11 == 4).then(-1.5).when(i % 13 == 0).then(0.0)
                     .otherwise(i % 50 + 0.25).cast(pl.Float64))
    bad = data.with_columns(pl.when(i == 12_289).then(pl.col("order_id") - 5).otherwise(pl.col("order_id"))
                            .alias("order_id"))
    for table, recounted in ((data, 0), (bad, 1)):
        path = tmp_path / f"{recounted}.parquet"
        table.write_parquet(path, row_group_size=4096)
        result = both_ways(path, monkeypatch, batch_rows=1000)
        assert result.report.orders_recounted == recounted
        assert result.report.customers == 997
    assert dense_runs == [True, True]


def test_ids_spread_downwards_and_upwards(monkeypatch, dense_runs):
    """The arrays grow to take ids below the first batch's and above them, keeping what they hold."""
    rows = [(500, 1, 0, 1.0), (501, 2, 0, 2.0), (-40, 3, 1, 3.0), (500, 4, 1, -1.0), (9_000, 5, 2, 4.0),
            (-41, 6, 2, 5.0), (-40, 7, 3, 1.0), (501, 7, 3, 1.0)]
    result = both_ways(frame(rows), monkeypatch, batch_rows=2)
    assert dense_runs == [True]
    assert dict(result.customers.select("customer_id", "frequency").iter_rows()) == {
        -41: 1, -40: 2, 500: 1, 501: 2, 9_000: 1}
    assert result.report.orders_recounted == 1  # 501's line in order 7, after -40's


def test_ids_too_far_apart_fall_back_to_the_streaming_pass(monkeypatch, dense_runs):
    """Ids more than half the rows read plus DENSE_SPAN_SLACK apart: the dense pass gives up, the streaming pass
    computes the same table."""
    monkeypatch.setattr(features, "DENSE_SPAN_SLACK", 100)
    rows = [(c, n, 0, 1.0) for n, c in enumerate([1, 50, 99, 3, 10_000, 7])]
    both_ways(frame(rows), monkeypatch, batch_rows=2)
    assert dense_runs == [False]
    rows = [(c, n, 0, 1.0) for n, c in enumerate([1, 50, 99, 3, 102, 7])]  # 102 ids: within 6 // 2 + 100
    both_ways(frame(rows), monkeypatch, batch_rows=2)
    assert dense_runs == [False, True]


@pytest.mark.parametrize("widest", ["last", "first"])
def test_ids_may_span_half_the_rows_plus_the_slack_and_not_one_more(monkeypatch, dense_runs, tmp_path, widest):
    """The arrays' limit at its edge: over 21 rows, customer ids may span 21 // 2 + DENSE_SPAN_SLACK = 20 ids, not
    21. With the widest ids in the last row, the rows read by then are the whole file; in the first batch of 8
    rows (which alone would allow 8 // 2 + 10 = 14 ids), the limit is the Parquet file's own row count."""
    monkeypatch.setattr(features, "DENSE_SPAN_SLACK", 10)
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 8)
    n = 21
    for span, dense in ((20, True), (21, False)):
        small = [i % 10 for i in range(n - 2)]  # ids 0 .. 9: within any batch's own limit
        ids = [0, *small, span - 1] if widest == "last" else [0, span - 1, *small]
        data = pl.DataFrame({"customer_id": ids, "order_id": list(range(n)),
                             "order_date": [START + dt.timedelta(days=i) for i in range(n)],
                             "amount": [float(i + 1) for i in range(n)]})
        path = tmp_path / f"edge-{span}.parquet"
        data.write_parquet(path)
        result = compute_features(read_transactions(path, MAPPING), orders="boundaries")
        assert dense_runs[-1] is dense, (widest, span)
        assert result.customers.equals(compute_features(read_transactions(path, MAPPING), orders="hashing").customers)


@pytest.mark.parametrize("id_type", [pl.Int8, pl.Int32, pl.UInt16, pl.UInt32])
def test_other_integer_types(monkeypatch, dense_runs, id_type):
    rows = [(1, 1, 0, 1.0), (2, 2, 0, 2.0), (1, 3, 1, -1.0), (2, 3, 1, 1.0), (1, 2, 2, 4.0)]
    result = both_ways(frame(rows, {**SCHEMA, "customer_id": id_type, "order_id": id_type}), monkeypatch,
                       batch_rows=2)
    assert result.customers.schema["customer_id"] == id_type
    assert dense_runs == [True]


def test_date_order_ids(monkeypatch, dense_runs):
    rows = [(1, 0, 0, 1.0), (2, 1, 0, 2.0), (1, 1, 1, -1.0), (2, 1, 1, 1.0), (1, 0, 2, 4.0)]
    data = frame(rows).with_columns((pl.lit(START) + pl.duration(days=pl.col("order_id"))).alias("order_id"))
    assert data.schema["order_id"] == pl.Date
    result = both_ways(data, monkeypatch, batch_rows=2)
    assert result.report.orders_recounted == 1  # customer 1's order of day 0 again after day 1's
    assert dense_runs == [True]


def test_where_the_dense_pass_does_not_apply(monkeypatch, dense_runs):
    """Text or UInt64 customer ids, no order id: the streaming pass."""
    rows = [(1, 1, 0, 1.0), (2, 2, 0, 2.0)]
    both_ways(frame(rows).with_columns(pl.col("customer_id").cast(pl.String)), monkeypatch)
    both_ways(frame(rows, {**SCHEMA, "customer_id": pl.UInt64}), monkeypatch)
    tx = read_transactions(frame(rows).drop("order_id"), {"customer_id": "customer_id", "order_date": "order_date",
                                                          "amount": "amount"})
    assert not tx.has_order_id
    compute_features(tx, orders="boundaries")
    assert dense_runs == []


def test_a_bad_amount_stops_the_run_the_same_way(monkeypatch):
    """The totals made batch by batch stop the run on the same row as the streaming pass."""
    rows = [(1, 1, 0, 1.0), (2, 2, 0, 2.0), (3, 3, 1, float("nan")), (1, 4, 1, 1.0)]
    errors = []
    for dense in (True, False):
        monkeypatch.setattr(features, "DENSE_PASS", dense)
        monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 2)
        with pytest.raises(DataError) as exc:
            compute_features(read_transactions(frame(rows), MAPPING), orders="boundaries")
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and "row 3" in errors[0]


def test_amounts_too_large_for_int64_sums(monkeypatch, dense_runs):
    """Absolute amounts adding up past 2**62 units: the pass runs again with Int128 sums (the streaming pass)."""
    rows = [(1, 1, 0, 9e13), (1, 2, 0, 9e13), (2, 3, 1, -9e13), (1, 4, 1, 9e13), (2, 5, 2, 9e13)] * 3
    result = both_ways(frame(rows), monkeypatch, batch_rows=4)
    assert dense_runs == [True]  # then the wide pass, which the dense pass does not take
    assert result.customers["monetary"].to_list() == [9 * 9e13, 0.0]


@KEY
@example(units=[2**53, -(2**53), 2**53 - 1, 77700, -1, 0, 1])
@given(units=st.lists(st.one_of(st.integers(-(2**53), 2**53), st.integers(-10**9, 10**9)), min_size=1, max_size=200))
def test_amounts_by_division_are_to_amount(units):
    """The dense pass's amounts (units / AMOUNT_SCALE as floats, while the units are at most 2**53 from 0) are
    to_amount's (the nearest float to the exact decimal)."""
    import numpy as np

    from engine.features import AMOUNT_SCALE, to_amount

    exact = pl.select(to_amount(pl.lit(pl.Series(units, dtype=pl.Int64)))).to_series()
    assert pl.Series(np.array(units, dtype=np.int64) / AMOUNT_SCALE).equals(exact, check_names=False)


def test_customers_past_2_to_the_53_units(monkeypatch, dense_runs):
    """A customer's units past 2**53 (amounts of 1e12 and more): the amounts are made by to_amount instead."""
    rows = [(1, 1, 0, 1e12), (1, 2, 0, 0.0001), (2, 3, 1, -1e12 - 0.0003), (2, 4, 1, 1.5), (3, 5, 2, 2.25)]
    result = both_ways(frame(rows), monkeypatch)
    assert dense_runs == [True]
    assert result.customers["monetary"].to_list() == [1e12 + 0.0001, -1e12 - 0.0003 + 1.5, 2.25]


# ------------------------------------------------------------------ input not written order by order: positions
def positions_both_ways(data, monkeypatch, as_of=None, batch_rows=None):
    """The customer table counted with the order ids as positions (the pass that runs on input not written order by
    order) and by the streaming hashing pass; asserts they agree and returns the first (None: no usable row)."""
    if batch_rows is not None:
        monkeypatch.setattr(features, "DENSE_BATCH_ROWS", batch_rows)
    out, errors = {}, {}
    for name, positions in (("positions", True), ("hashing", False)):
        try:
            out[name] = features._compute(read_transactions(data, MAPPING), as_of=as_of, customers=None,
                                          plugin_features=None, streaming=True, feature_owners=None, wide=False,
                                          ordered=False, positions=positions)
        except DataError as exc:
            errors[name] = str(exc)
    if errors:
        assert not out and len(set(errors.values())) == 1, errors
        return None
    assert out["positions"].customers.equals(out["hashing"].customers)
    assert out["positions"].as_of == out["hashing"].as_of
    how = {"orders_counted", "orders_check", "orders_recounted"}
    assert ({k: v for k, v in out["positions"].report.to_dict().items() if k not in how}
            == {k: v for k, v in out["hashing"].report.to_dict().items() if k not in how})
    assert out["hashing"].report.orders_counted == "hashing"
    return out["positions"]


@KEY
@example(rows=[(1, 1, 1, 1.0), (2, 1, 1, 1.0), (1, 1, 2, 1.0)], as_of=None, batch_rows=1)  # one id, two customers
@example(rows=[(1, 1, 1, 1.0), (2, 1, 1, 1.0), (1, 1, 2, 1.0)], as_of=None, batch_rows=7)  # the same in one batch
@example(rows=[(2, 3, 1, 1.0), (1, 3, 1, -1.0), (1, None, 1, 1.0), (2, 3, 2, 2.0)], as_of=None, batch_rows=2)
@given(rows=lines, as_of=st.one_of(st.none(), st.integers(1, 41).map(lambda d: START + dt.timedelta(days=d))),
       batch_rows=st.sampled_from([1, 2, 3, 7, 1 << 18]))
def test_positions_the_same_as_hashing(rows, as_of, batch_rows):
    """Any input (nulls everywhere, zero amounts, returns, order ids shared by customers, in any order): the same
    table as hashing, and the customers recounted are those with a counted line whose order id another customer's
    counted line took first (in the order the batches come)."""
    with pytest.MonkeyPatch.context() as mp:
        result = positions_both_ways(frame(rows), mp, as_of, batch_rows)
    if result is None:
        return
    usable = [r for r in rows if None not in (r[0], r[2], r[3])
              and (as_of is None or START + dt.timedelta(days=r[2]) < as_of)]
    ids = [r[0] for r in usable]
    if max(ids) - min(ids) >= features.DENSE_SPAN_SLACK:  # 2**31 - 1 and the rest: the streaming pass hashes
        assert result.report.orders_counted == "hashing"
        return
    owner, shared = {}, set()
    for c, o, _, a in usable:
        if o is not None and round(a * 10_000) > 0:
            if owner.setdefault(o, c) != c:
                shared.add(c)
    assert result.report.orders_counted == "positions"
    assert result.report.orders_recounted == len(shared)


def test_auto_counts_positions_where_the_first_rows_are_out_of_order(monkeypatch, dense_runs, tmp_path):
    """A shuffled log of integer ids: auto counts the order ids as positions, and says so."""
    n = 20_000
    i = pl.int_range(0, n)
    data = pl.select(customer_id=(i // 2 * 7919) % 1999, order_id=i // 2 * 3 + 10**8,
                     order_date=pl.lit(START) + pl.duration(days=i // 500),
                     amount=pl.when(i % 9 == 4).then(-2.0).otherwise(i % 40 + 0.5).cast(pl.Float64)).sample(
        fraction=1.0, shuffle=True, seed=7)
    path = tmp_path / "shuffled.parquet"
    data.write_parquet(path, row_group_size=3000)
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 1000)
    auto = compute_features(read_transactions(path, MAPPING))
    assert dense_runs == [True]
    assert (auto.report.orders_counted, auto.report.orders_recounted) == ("positions", 0)
    assert auto.report.orders_check == ("the first 10,000 rows are not written order by order; each order id held "
                                        "one customer (checked on every purchase line)")
    assert auto.customers.equals(compute_features(read_transactions(path, MAPPING), orders="hashing").customers)
    monkeypatch.setattr(features, "DENSE_SPAN_SLACK", 10)  # 30,000 order ids apart, 20,000 rows: hashing
    again = compute_features(read_transactions(path, MAPPING))
    assert dense_runs == [True, False]
    assert again.report.orders_counted == "hashing" and again.customers.equals(auto.customers)


def test_a_parquet_file_tells_its_rows_before_the_ids_have_spread(monkeypatch, dense_runs, tmp_path):
    """The arrays' limit counts the rows a Parquet file says it has, not only the rows read so far: customer ids
    spread over 8,000 in the first batch of 1,000 rows do not send a 20,000-row file to the streaming pass."""
    n = 20_000
    i = pl.int_range(0, n)
    data = pl.select(customer_id=(i // 2 * 7919) % 8000, order_id=i // 2,
                     order_date=pl.lit(START) + pl.duration(days=i // 500),
                     amount=(i % 40 + 0.5).cast(pl.Float64)).sample(fraction=1.0, shuffle=True, seed=11)
    path = tmp_path / "spread.parquet"
    data.write_parquet(path, row_group_size=3000)
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 1000)
    monkeypatch.setattr(features, "DENSE_SPAN_SLACK", 10)  # the first batch alone allows 1,000 // 2 + 10 ids
    auto = compute_features(read_transactions(path, MAPPING))
    assert dense_runs == [True] and auto.report.orders_counted == "positions"
    assert auto.customers.equals(compute_features(read_transactions(path, MAPPING), orders="hashing").customers)


def _per_customer_table(rows: pl.LazyFrame, *, int64_safe: bool = False) -> pl.LazyFrame:
    """A plugin's table feature over the canonical columns: per customer and day, then per customer."""
    units = pl.col("amount_units") if int64_safe else pl.col("amount_units").cast(pl.Int128)
    days = rows.filter(pl.col("amount") >= 0).group_by("customer_id", "order_date").agg(
        units.sum().alias("u"), pl.col("order_id").n_unique().alias("o"))
    return days.group_by("customer_id").agg(pl.len().alias("t_days"), pl.col("u").sum().cast(pl.Int64).alias("t_units"),
                                            pl.col("o").sum().alias("t_orders"),
                                            pl.col("order_date").min().alias("t_first"))


TABLE_FEATURES = {name: Feature(name, "a table feature of the tests", table=_per_customer_table)
                  for name in ("t_days", "t_units", "t_orders", "t_first")}


def with_tables(data, monkeypatch, as_of=None, batch_rows=None, orders="boundaries"):
    """The customer table with plugin table features, with the dense pass and without it: they must agree."""
    if batch_rows is not None:
        monkeypatch.setattr(features, "DENSE_BATCH_ROWS", batch_rows)
    out = {}
    for dense in (True, False):
        monkeypatch.setattr(features, "DENSE_PASS", dense)
        out[dense] = compute_features(read_transactions(data, MAPPING), as_of=as_of, orders=orders,
                                      plugin_features=TABLE_FEATURES)
    assert out[True].customers.equals(out[False].customers)
    reports = [{k: v for k, v in out[d].report.to_dict().items() if not k.startswith("orders_")} for d in (True, False)]
    assert reports[0] == reports[1]  # how the orders were counted aside (positions against hashing)
    return out[True]


@KEY
@given(rows=st.lists(st.tuples(st.integers(-3, 6), order_ids, st.integers(0, 40), amounts), min_size=1, max_size=50),
       as_of=st.one_of(st.none(), st.integers(1, 41).map(lambda d: START + dt.timedelta(days=d))),
       batch_rows=st.sampled_from([1, 3, 1 << 18]))
def test_table_features_ride_on_the_dense_pass(rows, as_of, batch_rows):
    """A plugin's table feature runs on the usable rows the dense pass keeps: the same table as the streaming pass
    gives it, whatever the rows, as_of and batches."""
    with pytest.MonkeyPatch.context() as m:
        ran = spy_dense_pass(m)
        data = frame(sorted(rows, key=lambda r: (r[2], r[1] if r[1] is not None else -1)))
        try:
            result = with_tables(data, m, as_of=as_of, batch_rows=batch_rows)
        except DataError:
            return
        assert ran and all(ran)
        assert set(TABLE_FEATURES) <= set(result.customers.columns)


def test_table_features_on_the_dense_pass_numbered(monkeypatch, dense_runs):
    """Orders numbered in the input's order over 3 batches, three or four orders of a customer a day: the dense pass
    runs and the table is the streaming one."""
    rows = [(i % 3, i, i // 10, 1.0 + i % 4 - (i % 11 == 0) * 5) for i in range(60)]
    result = with_tables(frame(rows), monkeypatch, batch_rows=20)
    assert dense_runs == [True]
    assert result.customers.select("t_days", "t_orders").rows() == [(6, 18), (6, 18), (6, 18)]  # two returns each


def test_table_features_on_the_positions_pass(monkeypatch, dense_runs):
    """Input not written order by order (orders counted with the order ids as positions): the table features ride
    on that dense pass too, and equal the streaming hashing pass's."""
    rows = [(i % 3, 59 - i, (i * 7) % 10, 1.0 + i % 4 - (i % 11 == 0) * 5) for i in range(60)]
    result = with_tables(frame(rows), monkeypatch, batch_rows=20, orders="auto")
    assert dense_runs == [True] and result.report.orders_counted == "positions"
    assert result.customers["t_days"].to_list() == [10, 10, 10]


def test_table_reading_another_column_falls_back(monkeypatch, dense_runs):
    """A table query reading a column the kept rows do not have: the dense pass gives up, the streaming pass runs
    (and says what is missing); an agg feature keeps the streaming pass."""
    def odd(rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.group_by("customer_id").agg(pl.col("quantity").sum().alias("q"))

    rows = [(1, 1, 0, 1.0), (2, 2, 0, 2.0)]
    with pytest.raises(DataError, match="quantity"):
        compute_features(read_transactions(frame(rows), MAPPING), orders="boundaries",
                         plugin_features={"q": Feature("q", "reads quantity", table=odd)})
    assert dense_runs == [False]
    result = compute_features(read_transactions(frame(rows), MAPPING), orders="boundaries",
                              plugin_features={"n": Feature("n", "lines", agg=pl.len())})
    assert dense_runs == [False] and result.customers["n"].to_list() == [1, 1]


@pytest.mark.parametrize("shuffled", [False, True])
def test_order_ids_that_are_dates(monkeypatch, dense_runs, tmp_path, shuffled):
    """Order ids of Date type (an export whose order id is the order's day): the dense pass takes their day
    numbers as keys, as array positions and as run starts, and gives the table hashing gives."""
    n = 3_000
    i = pl.int_range(0, n)
    data = pl.select(customer_id=(i * 7919) % 400, order_date=pl.lit(START) + pl.duration(days=i // 7),
                     amount=pl.when(i % 13 == 5).then(-2.5).otherwise(i % 40 + 0.5).cast(pl.Float64))
    data = data.with_columns(order_day=pl.col("order_date"))
    if shuffled:
        data = data.sample(fraction=1.0, shuffle=True, seed=5)
    path = tmp_path / "days.parquet"
    data.write_parquet(path)
    mapping = {"customer_id": "customer_id", "order_id": "order_day", "order_date": "order_date", "amount": "amount"}
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 500)
    auto = compute_features(read_transactions(path, mapping))
    assert dense_runs == [True]
    # the auto pass sees lines of one order apart (each day's customers interleave) and takes positions; one
    # order id (a day) held by several customers puts them in doubt, counted again by hashing
    assert auto.report.orders_counted == "positions" and auto.report.orders_recounted > 0
    hashed = compute_features(read_transactions(path, mapping), orders="hashing")
    assert auto.customers.equals(hashed.customers)
    assert auto.customers["frequency"].sum() > 400  # several days per customer
    ordered = compute_features(read_transactions(path, mapping), orders="boundaries")  # run starts tried
    assert dense_runs == [True, True] and ordered.customers.equals(hashed.customers)


@pytest.mark.parametrize("batch_rows", [1, 2, 1 << 18])
def test_text_times_with_and_without_an_offset_are_refused_on_the_dense_pass(monkeypatch, dense_runs, batch_rows):
    """A frame with integer ids and text times, some with a time-zone offset and some without: the tallies of
    every batch, those counted directly included, reach the check, which refuses the mix as the streaming pass
    does (naming the first row of each kind)."""
    data = pl.DataFrame({"customer_id": [1, 2, 1], "order_id": [1, 2, 3],
                         "order_date": ["2011-01-01T10:00:00+01:00", "2011-01-02T10:00:00", "2011-01-03T10:00:00"],
                         "amount": [1.0, 2.0, 3.0]})
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", batch_rows)
    errors = []
    for dense in (True, False):
        monkeypatch.setattr(features, "DENSE_PASS", dense)
        with pytest.raises(DataError, match="mixes times with a time-zone offset") as exc:
            compute_features(read_transactions(data, MAPPING), orders="boundaries")
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and "row 1" in errors[0] and "row 2" in errors[0]
    assert dense_runs == [True]


@pytest.mark.parametrize("widest", ["last", "first"])
def test_order_ids_may_span_the_rows_plus_the_slack_and_not_one_more(monkeypatch, dense_runs, tmp_path, widest):
    """The order-id arrays' limit at its edge (input not in order: order ids as array positions): over 21 rows,
    order ids may span 21 + DENSE_SPAN_SLACK = 31 ids, not 32. With the widest id in the first batch of 8 rows
    (which alone would allow 8 + 10 = 18 ids), the limit is the Parquet file's own row count."""
    monkeypatch.setattr(features, "DENSE_SPAN_SLACK", 10)
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 8)
    n = 21
    middle = [(i * 7) % 19 + 1 for i in range(n - 2)]  # order ids 1 .. 19, out of order
    for span, counted in ((31, "positions"), (32, "hashing")):
        orders = [0, *middle, span - 1] if widest == "last" else [0, span - 1, *middle]
        data = pl.DataFrame({"customer_id": [i % 5 for i in range(n)], "order_id": orders,
                             "order_date": [START + dt.timedelta(days=i) for i in range(n)],
                             "amount": [float(i + 1) for i in range(n)]})
        path = tmp_path / f"orders-{span}.parquet"
        data.write_parquet(path)
        result = compute_features(read_transactions(path, MAPPING))
        assert result.report.orders_counted == counted, (widest, span)
        assert dense_runs[-1] is (counted == "positions"), (widest, span)
        assert result.customers.equals(compute_features(read_transactions(path, MAPPING), orders="hashing").customers)


def test_a_feature_the_dense_pass_does_not_compute_sends_the_pass_to_the_group_by(monkeypatch, dense_runs):
    """The dense pass computes a fixed list of aggregations (``_DENSE_AGGREGATIONS``); were the features' list to
    hold one it does not compute, the streaming group_by computes the table instead, with the same result here."""
    rows = [(1, 1, 0, 1.0), (2, 2, 0, 2.0), (1, 3, 1, -1.0), (2, 3, 1, 1.0), (1, 2, 2, 4.0)]
    expected = compute_features(read_transactions(frame(rows), MAPPING)).customers
    assert dense_runs == [True]
    monkeypatch.setattr(features, "_DENSE_AGGREGATIONS", features._DENSE_AGGREGATIONS[:-1])
    again = compute_features(read_transactions(frame(rows), MAPPING))
    assert dense_runs == [True] and again.customers.equals(expected)


@pytest.mark.parametrize("ids", [["C1", "C2", "C1", "C3"], ["12", "07", "12", "9"]])
def test_text_customer_ids_never_take_the_dense_pass(monkeypatch, dense_runs, ids):
    """Arrays are indexed by integer customer ids: text ids (even all digits, where a leading zero is part of the
    id) go to the streaming pass, whatever the order ids are."""
    data = pl.DataFrame({"customer_id": ids, "order_id": [3, 1, 2, 4],
                         "order_date": [START + dt.timedelta(days=i) for i in range(4)],
                         "amount": [1.0, 2.0, 3.0, 4.0]})
    result = compute_features(read_transactions(data, MAPPING))
    assert dense_runs == []
    assert result.customers.schema["customer_id"] == pl.String
    assert dict(result.customers.select("customer_id", "frequency").iter_rows()) == {ids[0]: 2, ids[1]: 1, ids[3]: 1}


@pytest.mark.parametrize("ordered", [True, False])
def test_the_smallest_int64_customer_id_is_left_to_hashing(monkeypatch, dense_runs, ordered):
    """-2**63 marks an order id without an owner in the positions pass's array: a customer with that id makes the
    dense pass give up, and the streaming pass counts their orders."""
    low = -(2**63)
    orders = [1, 2, 3, 4, 5] if ordered else [4, 1, 5, 2, 3]
    rows = [(low, orders[0], 0, 1.0), (low + 1, orders[1], 0, 2.0), (low, orders[2], 1, 3.0),
            (low + 2, orders[3], 1, 4.0), (low, orders[4], 2, 5.0)]
    result = compute_features(read_transactions(frame(rows), MAPPING))
    assert dense_runs == [False]
    assert dict(result.customers.select("customer_id", "frequency").iter_rows()) == {low: 3, low + 1: 1, low + 2: 1}


def test_returns_beyond_int64_are_summed_exactly(monkeypatch, dense_runs):
    """Ten returns of 1e14 (1e19 units, beyond Int64) in one batch beside small sales: the bound on the batch's
    absolute units sees the returns, not only the largest sale, and the sums are exact."""
    top = 100_000_000_000_000
    rows = [(1, i, i % 5, -float(top)) for i in range(10)] + [(1, 10, 5, 1.0), (2, 11, 5, 5.0)]
    result = both_ways(frame(rows), monkeypatch)
    got = {r[0]: r[1:] for r in result.customers.select("customer_id", "monetary", "returned_value").iter_rows()}
    assert got == {1: (1.0 - 10 * top, 10.0 * top), 2: (5.0, 0.0)}


def test_the_day_arrays_marks_as_real_dates_are_left_to_the_streaming_pass(monkeypatch, dense_runs):
    """The day arrays mark "no such line" with the smallest Int32 day (and the largest): a purchase on that very day
    (Polars' earliest Date) makes the dense pass give up, and the streaming pass keeps the purchase."""
    days = pl.Series([-(2**31), 0, 1], dtype=pl.Int32).cast(pl.Date)
    data = pl.DataFrame({"customer_id": [3, 2, 1], "order_id": [1, 2, 3], "order_date": days,
                         "amount": [1.0, 2.0, 3.0]})
    result = compute_features(read_transactions(data, MAPPING), as_of=dt.date(2000, 1, 1))
    assert dense_runs == [False]
    got = result.customers.select("customer_id", "frequency", pl.col("first_order", "last_order").cast(pl.Int32))
    assert sorted(got.iter_rows()) == [(1, 1, 1, 1), (2, 1, 0, 0), (3, 1, -(2**31), -(2**31))]


@pytest.mark.parametrize("order_ids", [pl.Series(["C536379", "536380", "C536379", "A1"]),
                                       pl.Series([2**64 - 1, 2**63, 2**64 - 1, 5], dtype=pl.UInt64)])
def test_text_and_uint64_order_ids_are_hashed(monkeypatch, dense_runs, order_ids):
    """Order ids as array positions or run starts need integers that fit Int64 (or dates): text ids (UCI's 'C'
    cancellations) and UInt64 ids from 2**63 on are hashed by the streaming pass."""
    data = pl.DataFrame({"customer_id": [1, 2, 1, 1], "order_id": order_ids,
                         "order_date": [START + dt.timedelta(days=i) for i in range(4)],
                         "amount": [1.0, 2.0, 3.0, 4.0]})
    result = compute_features(read_transactions(data, MAPPING))
    assert dense_runs == []
    assert dict(result.customers.select("customer_id", "frequency").iter_rows()) == {1: 2, 2: 1}
