"""engine.snapshots: orders counted from run starts per bucket on ordered input, against hashing.

Each input is turned into snapshots three ways (``orders="boundaries"``, ``"auto"``, ``"hashing"``); every
snapshot's customer table must be the same, and the path each reports must be the one that was exact: the
bucket an order counts from is the first one it has a purchase line in, so an order whose lines go back to an
earlier bucket puts its customer in doubt, as an order written in two places does.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import example, given
from hypothesis import strategies as st

from engine.data import read_transactions
from engine.errors import DataError
from engine.snapshots import compute_snapshot_features, snapshot_spec
from test_features_ordered import KEY, MAPPING, START, frame  # the same inputs as the single pass's tests

DATES = [START + dt.timedelta(days=d) for d in (8, 16, 30, 45)]


def frequency_by_hand(rows, as_of) -> dict:
    """frequency as of ``as_of`` by its definition: distinct order ids of purchase lines before it (a sale
    without an order id is one order)."""
    out: dict = {}
    for c, o, d, a in rows:
        if c is None or d is None or a is None or START + dt.timedelta(days=d) >= as_of:
            continue
        out.setdefault(c, set())
        if round(a * 10_000) > 0:
            out[c].add(o)
    return {c: len(keys) for c, keys in out.items()}


#: A buyer in every period (at the end, with the largest order ids), so that no generated input is refused for a
#: period without a purchase and every one is compared.
BACKGROUND = [("z", "~1", 1, 1.0), ("z", "~2", 10, 1.0), ("z", "~3", 20, 1.0), ("z", "~4", 35, 1.0)]


def three_ways(rows, id_type=pl.String):
    rows = [*rows, *BACKGROUND]
    tx = read_transactions(frame(rows, id_type), MAPPING)
    spec = snapshot_spec(as_of=DATES)
    tables, reports, errors = {}, {}, {}
    for how in ("boundaries", "auto", "hashing"):
        try:
            feats = compute_snapshot_features(tx, spec, orders=how)
        except DataError as exc:  # a snapshot before the data, a period without a buyer: whichever path
            errors[how] = str(exc)
            continue
        tables[how] = [feats.build(i).customers for i in range(len(DATES))]
        reports[how] = feats.report
        for table in tables[how]:  # flagged sorted after the buckets' filter (no sort): so it must be
            assert table["customer_id"].to_list() == sorted(table["customer_id"].to_list())
        ids = feats.activity["customer_id"].to_list()  # flagged sorted for the joins on it: so it must be
        assert ids == sorted(ids)
    assert not errors, errors
    for how in ("boundaries", "auto"):
        for i, (got, want) in enumerate(zip(tables[how], tables["hashing"])):
            assert got.equals(want), (how, DATES[i])
    assert reports["hashing"].orders_counted == "hashing"
    assert reports["boundaries"].orders_counted == "boundaries"
    for i, as_of in enumerate(DATES):
        got = dict(tables["hashing"][i].select("customer_id", "frequency").iter_rows())
        assert {c: f for c, f in got.items() if c in frequency_by_hand(rows, as_of)} == frequency_by_hand(rows, as_of)
    return reports


customers = st.sampled_from(["a", "b", "c", "12346", "007"])
order_ids = st.one_of(st.none(), st.sampled_from(["536365", "536366", "536367", "C536379", "o1", "o2", "o10"]))
amounts = st.one_of(st.none(), st.sampled_from([0.0, -2.5, 1.0, 10.0]))
days = st.one_of(st.none(), st.integers(0, 44))
lines = st.lists(st.tuples(st.one_of(st.none(), customers), order_ids, days, amounts), min_size=1, max_size=40)


def order_by_order(rows):
    """Sorted by order id and customer (stably, nulls first), each order's lines by day: as a shop writes."""
    return sorted(rows, key=lambda r: ((r[1] is not None, r[1] or ""), (r[0] is not None, r[0] or ""),
                                       (r[2] is not None, r[2] or 0)))


@KEY
@example(rows=[("a", "o1", 20, 1.0), ("a", "o1", 3, 1.0), ("b", "o2", 1, 1.0)])  # an order back to a bucket
@example(rows=[("a", "o1", 3, 1.0), ("a", "o1", 20, 1.0), ("b", "o2", 1, 1.0)])  # an order across buckets
@example(rows=[("a", "o1", 1, 1.0), ("b", "o2", 1, 1.0), ("a", "o1", 2, 1.0)])  # an order split
@example(rows=[("a", None, 20, 1.0), ("a", "o1", 1, 1.0), ("a", None, 2, 1.0)])  # sales without an order id
@example(rows=[("a", "o1", 1, -1.0), ("a", "o1", 20, 1.0), ("a", "o2", 2, 1.0)])  # the order's sale is later
@given(rows=lines)
def test_any_input(rows):
    three_ways(rows)


@KEY
@given(rows=lines, i=st.integers(0, 100), j=st.integers(0, 100))
def test_written_order_by_order_then_two_lines_swapped(rows, i, j):
    rows = order_by_order(rows)
    three_ways(rows)
    i, j = i % len(rows), j % len(rows)
    rows[i], rows[j] = rows[j], rows[i]
    three_ways(rows)


def test_ordered_input_counts_from_run_starts_and_says_so():
    rows = [("a", "o1", 1, 2.0), ("a", "o1", 1, 3.0), ("b", "o2", 9, 1.0), ("a", "o3", 20, 4.0),
            ("a", "o4", 20, -4.0), ("b", "o5", 31, 1.0)]
    reports = three_ways(rows)
    assert reports["auto"].orders_counted == "boundaries" and reports["auto"].orders_recounted == 0
    assert "order by order" in reports["auto"].orders_check
    # an order whose second line is in an earlier bucket than its first: its customer is counted by hashing
    reports = three_ways([*rows[:3], ("a", "o3", 20, 4.0), ("a", "o3", 5, 1.0), ("b", "o5", 31, 1.0)])
    assert reports["boundaries"].orders_recounted == 1


def test_windows_count_by_hashing():
    tx = read_transactions(frame([("a", "o1", 1, 2.0), ("a", "o2", 10, 3.0), ("a", "o4", 20, 3.0),
                                   ("b", "o3", 33, 1.0)]), MAPPING)
    spec = snapshot_spec(as_of=DATES, windows={"x": "5 days"})
    feats = compute_snapshot_features(tx, spec, window_features={"x": {}})
    assert feats.report.orders_counted == "hashing"
    assert "window" in feats.report.orders_check


def test_hashing_counts_again_only_the_customers_with_an_order_in_two_buckets():
    """By hashing, each bucket's distinct orders are its own; a customer whose buckets' counts add up to more than
    their orders over all history has an order in two buckets, and only such a customer is counted again."""
    from engine.snapshots import _across_buckets

    buckets = pl.DataFrame({"customer_id": ["a", "a", "b", "c"], "_bucket": [1, 2, 1, 2], "_runs": [2, 1, 1, 0]})
    orders = pl.DataFrame({"customer_id": ["b", "a"], "_orders": [1, 2]})  # a's order o2 is in buckets 1 and 2
    assert _across_buckets(buckets, pl.DataFrame({"_pairs": [3]}), lambda: orders).to_list() == ["a"]

    def unread():
        raise AssertionError("the customers' counts were read although the buckets' add up to the pairs")

    assert _across_buckets(buckets, pl.DataFrame({"_pairs": [4]}), unread).to_list() == []
    orders = pl.DataFrame({"customer_id": ["b", "a"], "_orders": [1, 3]})  # codes collided: 3 pairs seen, not 4
    assert _across_buckets(buckets, pl.DataFrame({"_pairs": [3]}), lambda: orders).to_list() == []
    # by hand: an order across buckets (a), one bucket with two orders (b), by hashing as by boundaries
    three_ways([("a", "o2", 3, 1.0), ("b", "o1", 20, 1.0), ("b", "o3", 21, 1.0), ("a", "o2", 20, 1.0)])


#: Integer ids, negative ones and one too large for a packed (customer, bucket) key among them.
int_customers = st.sampled_from([0, 1, -3, 12346, 2**40])
int_lines = st.lists(st.tuples(int_customers, st.one_of(st.none(), st.sampled_from([536365, 536366, -7, 10])), days,
                               amounts), min_size=1, max_size=40)


def packed_and_not(rows):
    """Each snapshot's table with the buckets grouped by one packed integer key and by (customer, bucket)."""
    rows = [*rows, *[(99, 10**6 + k, d, a) for k, (_, _, d, a) in enumerate(BACKGROUND)]]
    tx = read_transactions(frame(rows, pl.Int64), MAPPING)
    spec = snapshot_spec(as_of=DATES)
    for how in ("boundaries", "hashing"):
        packed, plain = (compute_snapshot_features(tx, spec, orders=how, pack=pack) for pack in (True, False))
        for i in range(len(DATES)):
            assert packed.build(i).customers.equals(plain.build(i).customers), (how, DATES[i])
            ids = packed.build(i).customers["customer_id"].to_list()
            assert ids == sorted(ids)  # flagged sorted after the buckets' filter (no sort): so it must be
        assert packed.activity.equals(plain.activity)
        assert packed.activity["customer_id"].to_list() == sorted(packed.activity["customer_id"].to_list())
    for i, as_of in enumerate(DATES):
        got = dict(packed.build(i).customers.select("customer_id", "frequency").iter_rows())
        want = frequency_by_hand(rows, as_of)
        assert {c: f for c, f in got.items() if c in want} == want


@KEY
@example(rows=[(-3, 10, 3, 1.0), (-3, 10, 20, 1.0), (1, -7, 1, 1.0), (0, None, 33, -2.5)])
@given(rows=int_lines)
def test_integer_ids_grouped_by_a_packed_key_as_by_two_columns(rows):
    packed_and_not(rows)


def test_ids_too_large_for_a_packed_key_are_grouped_by_two_columns():
    from engine.snapshots import _pack_fits, _pack_step

    step = _pack_step(pl.Int64(), snapshot_spec(as_of=DATES))
    assert step == 8  # four dates, the period before the first: six buckets
    assert _pack_fits(pl.DataFrame({"_id_min": [-(2**59) + 2], "_id_max": [2**59 - 2]}), step)
    assert not _pack_fits(pl.DataFrame({"_id_min": [0], "_id_max": [2**60]}), step)
    assert not _pack_fits(pl.DataFrame({"_id_min": [-(2**60)], "_id_max": [0]}), step)
    assert _pack_step(pl.String(), snapshot_spec(as_of=DATES)) is None
    packed_and_not([(2**62, 1, 3, 1.0), (-(2**62), 2, 20, 4.0), (2**62, 3, 31, 2.0)])


def test_hashing_groups_by_customer_only_when_an_order_is_in_two_buckets(tmp_path, count_scans, monkeypatch):
    """By hashing, the buckets' distinct orders are checked against the distinct (customer, order) codes counted
    over all the lines in the same pass: when they add up, no order has lines in two buckets, and the file is read
    once. An order in two buckets, or codes that collide (forced here: every pair one code), read each customer's
    orders from the file again and count the customers who differ by hashing: the same tables either way."""
    import engine.snapshots as snapshots

    path = tmp_path / "tx.parquet"
    apart = [("a", "o1", 1, 2.0), ("a", "o2", 10, 3.0), ("b", "o3", 12, 1.0), ("a", "o4", 20, -1.0),
             ("b", "o5", 33, 4.0), ("c", None, 40, 1.0), *BACKGROUND]
    across = [*apart, ("b", "o3", 20, 2.0)]  # b's order o3 now has purchase lines in two buckets

    def tables(rows):
        frame(rows).write_parquet(path)
        feats = compute_snapshot_features(read_transactions(path, MAPPING), snapshot_spec(as_of=DATES),
                                          orders="hashing")
        return [feats.build(i).customers for i in range(len(DATES))]

    reads = count_scans(path)
    alone = tables(apart)
    assert reads == [1]  # the pass alone
    reads.clear()
    both = tables(across)
    assert reads == [1, 1, 1]  # the pass, each customer's orders, the customers who differ
    b = [dict(t.select("customer_id", "frequency").iter_rows()).get("b") for t in both]
    assert b == [frequency_by_hand(across, d).get("b") for d in DATES] == [None, 1, 1, 2]
    monkeypatch.setattr(snapshots, "_pair_codes", lambda: pl.lit(0, pl.UInt64))  # every pair one code
    for rows, want in ((apart, alone), (across, both)):
        reads.clear()
        got = tables(rows)
        assert len(reads) >= 2  # read again: the codes no longer tell
        for g, w in zip(got, want):
            assert g.equals(w)
