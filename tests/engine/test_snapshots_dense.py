"""engine.snapshots: the snapshot scan on the dense pass (integer ids, input in date order: each bucket's lines in
arrays indexed by the customer id) against the streaming scan's ``group_by`` and against hashing.

Every input is turned into snapshots with the dense scan allowed and turned off (``dense=False``), trying run
starts (``boundaries``) and order ids as positions (``auto`` on input not written order by order), and by hashing:
every snapshot's table, the activity and the report must be the same; the dense scan must have run where it
applies (integer ids, no window, the usable lines' buckets in input order, ids close enough) and given up
elsewhere.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import engine
import engine.features as features
import engine.snapshots as snapshots
from engine.data import read_transactions
from engine.errors import DataError
from engine.snapshots import compute_snapshot_features, run_snapshots, snapshot_spec
from test_features_dense import KEY, MAPPING, START, frame  # the single dense pass's inputs

DATES = [START + dt.timedelta(days=d) for d in (8, 16, 30, 45)]
#: A buyer in every period (customer 5, orders of their own), so that no input is refused for a period without one.
BACKGROUND = [(5, 90, 1, 1.0), (5, 91, 10, 1.0), (5, 92, 20, 1.0), (5, 93, 35, 1.0)]
ORDER_FIELDS = ("orders_counted", "orders_check", "orders_recounted")


def spy(monkeypatch) -> list:
    """What each dense snapshot scan returns, from now on (None where it gave up)."""
    ran: list = []
    real = snapshots._dense_buckets

    def spied(*args, **kwargs):
        ran.append(real(*args, **kwargs))
        return ran[-1]

    monkeypatch.setattr(snapshots, "_dense_buckets", spied)
    return ran


def tables_of(tx, spec, **kwargs):
    feats = compute_snapshot_features(tx, spec, **kwargs)
    return [feats.build(i).customers for i in range(len(spec.as_of))], feats.activity, feats.report


def four_ways(rows, monkeypatch, batch_rows=None, schema=None):
    """``rows`` (with :data:`BACKGROUND`'s) turned into snapshots with the dense scan (boundaries tried, then
    auto) and without it, and by hashing: all equal. Returns the dense scans' results (``boundaries`` then ``auto``) and the reports, or None where every way
    refused the input alike."""
    if batch_rows is not None:
        monkeypatch.setattr(features, "DENSE_BATCH_ROWS", batch_rows)
    tx = read_transactions(frame(rows, **({"schema": schema} if schema else {})), MAPPING)
    spec = snapshot_spec(as_of=DATES)
    ran = spy(monkeypatch)
    out, errors, scans = {}, {}, {}
    for name, orders, dense in (("boundaries", "boundaries", True), ("auto", "auto", True),
                                ("boundaries-streaming", "boundaries", False), ("auto-streaming", "auto", False),
                                ("hashing", "hashing", True)):
        before = len(ran)
        try:
            out[name] = tables_of(tx, spec, orders=orders, dense=dense)
        except DataError as exc:
            errors[name] = str(exc)
        scans[name] = ran[before:]
    if errors:
        assert not out and len(set(errors.values())) == 1, errors
        return None
    want_tables, want_activity, want_report = out["hashing"]
    for name, (got_tables, activity, report) in out.items():
        for i, (got, want) in enumerate(zip(got_tables, want_tables)):
            assert_frame_equal(got, want, check_exact=True), (name, DATES[i])
            assert got["customer_id"].to_list() == sorted(got["customer_id"].to_list())
        assert_frame_equal(activity, want_activity, check_exact=True)
        assert {k: v for k, v in report.to_dict().items() if k not in ORDER_FIELDS} == \
            {k: v for k, v in want_report.to_dict().items() if k not in ORDER_FIELDS}, name
    for name in ("boundaries-streaming", "auto-streaming", "hashing"):
        assert not scans[name], name  # the dense scan was not tried
    return scans["boundaries"], scans["auto"], {k: v[2] for k, v in out.items()}


def in_date_order(rows):
    """The rows sorted by day, stably (a line without a date anywhere: it is not usable)."""
    return sorted(rows, key=lambda r: r[2] if r[2] is not None else 0)


def buckets_in_order(rows) -> bool:
    """Whether the usable lines' buckets never go back in the input's order (the dense scan's condition)."""
    edges = [(d - START).days for d in [DATES[0] - (DATES[1] - DATES[0]), *DATES]]
    usable = [r for r in rows if None not in (r[0], r[2], r[3]) and r[2] < edges[-1]]
    buckets = [sum(r[2] >= e for e in edges) for r in usable]
    return all(a <= b for a, b in zip(buckets, buckets[1:]))


customer_ids = st.one_of(st.none(), st.integers(-3, 6), st.sampled_from([1_000, -70_000, 2**31 - 1]))
order_ids = st.one_of(st.none(), st.integers(0, 12))
amounts = st.one_of(st.none(), st.sampled_from([0.0, 0.00001, 0.0001, -2.5, 1.0, 10.0, 3.33, -0.0001]))
days = st.one_of(st.none(), st.integers(0, 50))
lines = st.lists(st.tuples(customer_ids, order_ids, days, amounts), min_size=1, max_size=40)


@KEY
@example(rows=[(1, 1, 3, 1.0), (1, 1, 20, 1.0), (2, 2, 21, 1.0)], dated=True, batch_rows=1)  # an order in two buckets
@example(rows=[(1, 1, 3, 1.0), (2, 1, 3, 1.0), (1, 1, 9, 1.0)], dated=True, batch_rows=2)  # an order id shared
@example(rows=[(1, None, 3, 1.0), (1, 1, 4, 1.0), (1, None, 20, 1.0)], dated=True, batch_rows=1)  # no order id
@example(rows=[(1, 4, 3, -1.0), (1, 4, 20, 1.0), (2, 4, 21, 0.0)], dated=True, batch_rows=3)  # returns, zero
@example(rows=[(1, 1, 20, 1.0), (1, 2, 3, 1.0)], dated=False, batch_rows=7)  # a bucket goes back: gives up
@example(rows=[(1, 1, 9, 1.0), (1, 2, 3, 1.0)], dated=False, batch_rows=1)  # back by one bucket, in the next batch
@example(rows=[(2**31 - 1, 1, 3, 1.0), (1, 2, 4, 1.0)], dated=True, batch_rows=1)  # ids far apart: gives up
@given(rows=lines, dated=st.booleans(), batch_rows=st.sampled_from([1, 2, 3, 7, 1 << 18]))
def test_any_input_the_same_as_the_streaming_scan(rows, dated, batch_rows):
    """Nulls in every column, zero and sub-unit amounts, returns, ids negative or far apart, lines on and after the
    last snapshot, orders with lines in two buckets or shared by two customers; in date order or as given, read in
    batches of a few rows."""
    rows = in_date_order([*rows, *BACKGROUND]) if dated else [*rows, *BACKGROUND]
    with pytest.MonkeyPatch.context() as mp:
        result = four_ways(rows, mp, batch_rows)
    if result is None:
        return
    boundaries, auto, _ = result
    usable = [r for r in rows if None not in (r[0], r[2], r[3]) and r[2] < 45]
    ids = [r[0] for r in usable]
    close = max(ids) - min(ids) < features.DENSE_SPAN_SLACK
    for scans in (boundaries, auto):
        assert len(scans) <= 1  # tried at most once (a fall-back does not try it again)
        assert bool(scans and scans[0] is not None) == (close and buckets_in_order(rows))


def test_ordered_and_numbered_input_counts_from_run_starts(monkeypatch):
    """Input in date order, its orders numbered as they come: the dense scan with run starts, no customer counted
    again; an order id reused by another customer later puts that customer in doubt (counted again)."""
    rows = [(1, 1, 1, 2.0), (1, 1, 1, 3.0), (5, 2, 1, 1.0), (2, 3, 9, 1.0), (5, 4, 10, 1.0), (1, 5, 20, 4.0),
            (1, 6, 20, -4.0), (5, 7, 20, 1.0), (2, 8, 31, 1.0), (5, 9, 35, 1.0), (3, 10, 40, 0.0), (3, 11, 41, 2.0)]
    boundaries, auto, reports = four_ways(rows, monkeypatch, batch_rows=3)
    assert boundaries[0] is not None and auto[0] is not None
    assert reports["boundaries"].orders_counted == "boundaries" and reports["boundaries"].orders_recounted == 0
    assert reports["auto"].orders_counted == "boundaries"
    boundaries, _, reports = four_ways([*rows, (2, 5, 42, 1.0)], monkeypatch, batch_rows=3)
    assert boundaries[0] is not None
    assert reports["boundaries"].orders_recounted == 1


def test_shuffled_order_ids_count_as_positions(monkeypatch):
    """Input in date order with order ids out of order (not written order by order): the dense scan with the
    order ids as positions; an order id shared by two customers puts the later one in doubt, counted again by
    hashing, and the report says so."""
    rows = [(1, 9, 1, 2.0), (2, 3, 1, 1.0), (1, 9, 2, 3.0), (3, 12, 9, 1.0), (1, 0, 20, 4.0), (2, 5, 31, 1.0),
            (3, 11, 33, 1.0), (1, 2, 40, -1.0), (2, 9, 41, 2.0)]
    _, auto, reports = four_ways(in_date_order([*rows, *BACKGROUND]), monkeypatch, batch_rows=2)
    assert auto[0] is not None
    report = reports["auto"]
    assert report.orders_counted == "positions" and report.orders_recounted == 1
    assert "sharing an order id" in report.orders_check


@pytest.mark.parametrize("id_type", [pl.String, pl.UInt64])
def test_ids_not_taken_by_the_dense_scan(id_type, monkeypatch):
    """Text and UInt64 customer ids keep the streaming scan (exact either way)."""
    rows = [(1, 1, 1, 2.0), (2, 2, 9, 1.0), (1, 3, 20, 4.0), (3, 4, 40, 1.0), *BACKGROUND]
    schema = {"customer_id": id_type, "order_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64}
    convert = str if id_type == pl.String else int
    tx = read_transactions(frame([(convert(c), o, d, a) for c, o, d, a in rows], schema), MAPPING)
    ran = spy(monkeypatch)
    dense, _, _ = tables_of(tx, snapshot_spec(as_of=DATES))
    streaming, _, _ = tables_of(tx, snapshot_spec(as_of=DATES), dense=False)
    assert not ran
    for got, want in zip(dense, streaming):
        assert_frame_equal(got, want)


def test_a_window_keeps_the_streaming_scan(monkeypatch):
    rows = [(1, 1, 1, 2.0), (1, 2, 10, 3.0), (1, 4, 20, 3.0), (2, 3, 33, 1.0), *BACKGROUND]
    tx = read_transactions(frame(in_date_order(rows)), MAPPING)
    ran = spy(monkeypatch)
    feats = compute_snapshot_features(tx, snapshot_spec(as_of=DATES, windows={"x": "5 days"}),
                                      window_features={"x": {}})
    assert not ran and feats.report.orders_counted == "hashing"


def test_plugin_features_keep_the_streaming_scan(monkeypatch):
    from engine.classifier import Feature

    rows = in_date_order([(1, 1, 1, 2.0), (1, 2, 10, 3.0), (2, 3, 33, 1.0), *BACKGROUND])
    tx = read_transactions(frame(rows), MAPPING)
    ran = spy(monkeypatch)
    lines = {"lines": Feature("lines", "lines before as_of", agg=pl.len().cast(pl.Int64))}
    feats = compute_snapshot_features(tx, snapshot_spec(as_of=DATES), plugin_features=lines)
    assert not ran
    assert feats.table(-1).customers["lines"].to_list() == [2, 1, 4]


def test_every_snapshot_equals_a_single_run_on_dated_integer_input(registry, monkeypatch):
    """A transaction log in date order with integer ids (the dense scan, by positions and by run starts): every
    classified snapshot equals a single run at its as_of."""
    import random

    rng = random.Random(5)
    start = dt.date(2023, 1, 1)
    rows, order, customer = [], 0, None
    for n in range(600):  # an order's lines together, numbered as they come; later customers first buy later
        same = customer is not None and rng.random() < 0.5
        customer = customer if same else rng.choice([-5, 0, 3, 17, 40, 99, 123456][: 3 + n // 120])
        order += not same
        rows.append((customer, rng.choice([None, *[order] * 9]), start + dt.timedelta(days=n // 2),
                     rng.choice([-3.5, 0.0, 1.25, 20.0, 99.99])))
    mapping = {"customer_id": "customer_id", "order_id": "order_id", "order_date": "order_date", "amount": "amount"}
    schema = {"customer_id": pl.Int64, "order_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64}
    dates = [dt.date(2023, 3, 1), dt.date(2023, 5, 1), dt.date(2023, 7, 1), dt.date(2023, 9, 1)]
    monkeypatch.setattr(features, "DENSE_BATCH_ROWS", 64)
    for numbered in (True, False):
        data = rows if numbered else [(c, None if o is None else (o * 7919) % 1009, d, a) for c, o, d, a in rows]
        tx = pl.DataFrame(data, schema=schema, orient="row")
        ran = spy(monkeypatch)
        snaps = run_snapshots(tx, as_of=dates, mapping=mapping, registry=registry)
        assert ran and ran[0] is not None
        assert snaps.report.orders_counted == ("boundaries" if numbered else "positions")
        for as_of, table in zip(snaps.as_of, snaps.customers):
            assert_frame_equal(table, engine.classify(tx, mapping=mapping, as_of=as_of, registry=registry))


def test_the_bucket_rows_are_put_in_order_by_customer_then_bucket():
    """The dense scan's parts come bucket by bucket, each sorted by customer: a stable sort by customer puts the rows
    in order of (customer, bucket), as a sort by both does; parts out of bucket order take the sort by both, empty
    parts are left out, and none at all gives None."""
    import random

    rng = random.Random(7)
    parts = []
    for bucket in (0, 2, 3, 5):
        ids = sorted(rng.sample(range(-20, 60), rng.randint(0, 25)))
        parts.append(pl.DataFrame({"customer_id": ids, "_bucket": [bucket] * len(ids),
                                   "_x": [rng.randint(-9, 9) for _ in ids]},
                                  schema={"customer_id": pl.Int64, "_bucket": pl.Int32, "_x": pl.Int64}))
    parts.insert(1, parts[0].clear())
    want = pl.concat(parts).sort("customer_id", "_bucket")
    for arrived in (parts, parts[::-1], [parts[2], parts[0], parts[4], parts[3], parts[1]]):
        dense = snapshots._DenseBuckets([], pl.Int64)
        dense.frames = list(arrived)
        got = dense.table()
        assert_frame_equal(got, want)
        assert dense.frames == []
    dense = snapshots._DenseBuckets([], pl.Int64)
    assert dense.table() is None
