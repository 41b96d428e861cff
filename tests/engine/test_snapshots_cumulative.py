"""engine.snapshots: each customer's running totals over their buckets, in NumPy where that is exact, against the
Polars route they replace (``_cumulative`` and the amounts), value for value and bit for bit."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import snapshots
from engine.features import _amounts
from engine.snapshots import _AGGREGATED, _FLOAT_EXACT, _cumulative, _cumulative_amounts

KEY_FEATURES = [f for f in _AGGREGATED if f.compute.op == "n_unique"]
DAY = dt.date(2020, 1, 1)
#: The scan's bucket columns the running totals read (as compute_snapshot_features has them, orders counted).
SCHEMA = {"customer_id": pl.Int64, "_bucket": pl.Int32, "_monetary_units": pl.Int64, "first_order": pl.Date,
          "last_order": pl.Date, "last_activity": pl.Date, "returns": pl.Int64, "_returned_value_units": pl.Int64,
          "_purchases": pl.Int64, "_new_frequency": pl.Int64}


def by_polars(buckets: pl.DataFrame) -> pl.DataFrame:
    return _cumulative(buckets, KEY_FEATURES).with_columns(_amounts())


def assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal tables, floats compared bit for bit (0.0 and -0.0 are equal to ``equals``, not here)."""
    assert got.schema == want.schema
    assert got.equals(want)
    for name, dtype in want.schema.items():
        if dtype == pl.Float64:
            assert np.array_equal(got[name].to_numpy().view(np.int64), want[name].to_numpy().view(np.int64)), name


units = st.one_of(st.integers(-50_000, 50_000), st.sampled_from([0, 2**53, -2**53, 2**53 + 1, 3 * 2**60]))
dates = st.one_of(st.none(), st.integers(0, 900))
bucket_rows = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9), units, dates, dates, st.integers(0, 900),
                                 st.integers(0, 3), st.integers(-10**6, 0), st.integers(0, 4)),
                       min_size=1, max_size=60)


def buckets_of(rows, id_type=pl.Int64) -> pl.DataFrame:
    """One row per (customer, bucket), sorted by both, as the scan gives them (customers' rows together)."""
    seen = {}
    for r in rows:
        seen.setdefault((r[0], r[1]), r)
    data = sorted(seen.values(), key=lambda r: (r[0], r[1]))
    day = lambda d: None if d is None else DAY + dt.timedelta(days=d)  # noqa: E731
    frame = pl.DataFrame({
        "customer_id": [r[0] for r in data], "_bucket": [r[1] for r in data], "_monetary_units": [r[2] for r in data],
        "first_order": [day(r[3]) for r in data], "last_order": [day(r[4]) for r in data],
        "last_activity": [day(r[5]) for r in data], "returns": [r[6] for r in data],
        "_returned_value_units": [r[7] for r in data], "_purchases": [r[8] for r in data],
        "_new_frequency": [r[8] for r in data]}, schema=SCHEMA)
    return frame.with_columns(pl.col("customer_id").cast(id_type))


@settings(max_examples=300, deadline=None)
@example(rows=[(1, 0, 0, None, None, 5, 0, 0, 0)])  # one row, no purchase: the dates stay null, 0 units are +0.0
@example(rows=[(1, 0, 5, 3, 3, 3, 0, -5, 1), (1, 2, -5, None, None, 9, 1, 0, 0), (2, 1, 7, None, 4, 4, 0, 0, 1)])
@example(rows=[(1, 0, 2**53, 1, 1, 1, 0, 0, 1), (1, 1, 1, 2, 2, 2, 0, 0, 1)])  # a running sum past 2**53
@given(rows=bucket_rows)
def test_running_totals_in_numpy_equal_the_polars_route(rows):
    buckets = buckets_of(rows)
    assert_same(_cumulative_amounts(buckets, KEY_FEATURES), by_polars(buckets))


@pytest.mark.parametrize("id_type", [pl.String, pl.UInt64, pl.Int32])
def test_other_id_types(id_type):
    rows = [(c, b, (c - 3) * 10_007 * (b + 1), b if c % 2 else None, b, b + 1, b % 2, -b, c % 3)
            for c in range(7) for b in range(0, 9, c % 3 + 1)]
    buckets = buckets_of(rows, id_type)
    assert_same(_cumulative_amounts(buckets, KEY_FEATURES), by_polars(buckets))


def test_units_past_exact_floats_take_the_decimal_conversion(monkeypatch):
    """Amounts of units beyond 2**53 are converted as engine.features.to_amount does: here a float division of
    the units would be off by one unit in the last place."""
    buckets = buckets_of([(1, 0, 2**53 + 1, 1, 1, 1, 0, 0, 1), (2, 1, 2380885244041669274, 2, 2, 2, 0, 0, 1)])
    want = by_polars(buckets)
    assert_same(_cumulative_amounts(buckets, KEY_FEATURES), want)
    # the float division alone would differ: so the bound is what keeps the amounts exact
    monkeypatch.setattr(snapshots, "_FLOAT_EXACT", 2**63)
    got = _cumulative_amounts(buckets, KEY_FEATURES)
    assert not got["monetary"].equals(want["monetary"])


def test_wide_sums_take_the_polars_route(monkeypatch):
    """Sums in Int128 (a scan that summed wide) are not NumPy's: the Polars route computes them."""
    buckets = buckets_of([(1, 0, 10, 1, 1, 1, 0, 0, 1), (1, 3, 20, 2, 2, 2, 0, 0, 1), (2, 1, -7, 3, 3, 3, 0, 0, 1)])
    wide = buckets.with_columns(pl.col("_monetary_units").cast(pl.Int128) * 2**70)
    called = []
    real = snapshots._cumulative
    monkeypatch.setattr(snapshots, "_cumulative", lambda *a: called.append(1) or real(*a))
    assert_same(_cumulative_amounts(wide, KEY_FEATURES), by_polars(wide))
    assert called
    assert _FLOAT_EXACT == 2**53
    called.clear()  # a bucket without a number (never from a scan) is not NumPy's either
    unbucketed = buckets.with_columns(pl.when(pl.col("customer_id") == 2).then(pl.col("_bucket")))
    _cumulative_amounts(unbucketed, KEY_FEATURES)
    assert called


def test_freed_memory_is_given_back_where_the_c_library_can(monkeypatch):
    """After the running totals, the C heap's freed memory goes back to the system (glibc's malloc_trim, called
    with 0); without that function nothing happens and nothing fails."""
    import ctypes

    calls = []

    class Function:  # as ctypes gives a C function: typed by attributes, then called
        argtypes = restype = None

        def __call__(self, pad):
            calls.append((pad, self.argtypes, self.restype))
            return 1

    class Libc:
        malloc_trim = Function()

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    snapshots._give_back_freed_memory()
    assert calls == [(0, [ctypes.c_size_t], ctypes.c_int)]

    class Other:
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Other())
    snapshots._give_back_freed_memory()  # no such function: nothing to do


def test_the_snapshot_scan_gives_the_memory_back_after_the_running_totals(monkeypatch):
    import engine
    from engine.data import read_transactions
    from engine.sample import SAMPLE_MAPPING

    calls = []
    monkeypatch.setattr(snapshots, "_give_back_freed_memory", lambda: calls.append(1))
    tx = read_transactions(engine.sample_path(), SAMPLE_MAPPING)
    snapshots.compute_snapshot_features(tx, snapshots.snapshot_spec(every="quarter", periods=3, end="2011-12-01"))
    assert calls == [1]


def test_the_scans_buckets_are_let_go_without_a_window():
    """Without a lookback window nothing reads the scan's bucket rows once the running totals and the activity
    are counted: they are not held while the snapshots are built and classified (with a window they are)."""
    import engine
    from engine.data import read_transactions
    from engine.sample import SAMPLE_MAPPING

    def held(feats) -> dict:
        code = feats.build_window.__code__
        return {name: cell.cell_contents for name, cell in zip(code.co_freevars, feats.build_window.__closure__)}

    tx = read_transactions(engine.sample_path(), SAMPLE_MAPPING)
    plain = snapshots.compute_snapshot_features(tx, snapshots.snapshot_spec(every="quarter", periods=3,
                                                                            end="2011-12-01"))
    assert held(plain)["buckets"] is None
    windowed = snapshots.compute_snapshot_features(tx, snapshots.snapshot_spec(
        every="quarter", periods=3, end="2011-12-01", windows={"abc": "3 months"}))
    assert isinstance(held(windowed)["buckets"], pl.DataFrame)


@settings(max_examples=100, deadline=None)
@example(rows=[(1, 0, 3 * 2**60, 1, 1, 1, 0, 0, 1), (1, 1, 3 * 2**60, 2, 2, 2, 0, 0, 1)])  # wide: the Polars route
@given(rows=bucket_rows)
def test_running_totals_from_columns_handed_over_equal_the_frames(rows):
    """Given the bucket rows as a list of their columns (the scan's way: each let go once read), the running totals
    are the frame's, and the list is emptied, on the NumPy route and on the Polars one."""
    buckets = buckets_of(rows)
    if (buckets["_monetary_units"].abs() >= 2**60).any():
        buckets = buckets.with_columns(pl.col("_monetary_units").cast(pl.Int128))
    columns = buckets.get_columns()
    got = _cumulative_amounts(columns, KEY_FEATURES)
    assert columns == []
    assert_same(got, _cumulative_amounts(buckets, KEY_FEATURES))


def test_the_running_totals_hold_the_units_of_the_net_revenue_only():
    """A table reads the amounts of the summed features and the net revenue's units (its report's exact total):
    the other units are not held with the running totals, and each table copies only the columns it keeps."""
    import engine
    from engine.data import read_transactions
    from engine.sample import SAMPLE_MAPPING

    tx = read_transactions(engine.sample_path(), SAMPLE_MAPPING)
    feats = snapshots.compute_snapshot_features(tx, snapshots.snapshot_spec(every="quarter", periods=3,
                                                                           end="2011-12-01"))
    code = feats.build.__code__
    held = {name: cell.cell_contents for name, cell in zip(code.co_freevars, feats.build.__closure__)}
    cumulative = held["cumulative"]
    sums = [f.name for f in _AGGREGATED if f.compute.op == "sum"]
    assert "_monetary_units" in cumulative.columns and "monetary" in sums
    assert [f"_{n}_units" for n in sums if f"_{n}_units" in cumulative.columns] == ["_monetary_units"]
    assert all(n in cumulative.columns for n in sums)
    table = feats.table(1).customers
    assert "_bucket" not in table.columns and "_next" not in table.columns
