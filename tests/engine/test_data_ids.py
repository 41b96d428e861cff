"""engine.data: float customer and order ids (issue 10, item 4).

0.0 and -0.0 are one customer; the id written for it was whichever came first, so it changed
with the row order and the thread timing. Float ids are normalised before grouping: -0.0 is
0.0 and NaN (pandas' missing value) is a missing id.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import engine


def frame(n: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "customer_id": rng.choice([0.0, -0.0, 1.0, 17850.0, np.nan], size=n),
        "order_id": rng.choice([0.0, -0.0, 3.0, 4.0], size=n),
        "order_date": [dt.date(2011, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 300, size=n)],
        "amount": rng.integers(1, 10_000, size=n) / 100,
    })


def test_minus_zero_is_zero_and_nan_is_a_missing_id():
    got = engine.prepare(frame(2_000))
    ids = got.customers["customer_id"].to_list()
    assert ids == [0.0, 1.0, 17850.0]
    assert not math.copysign(1.0, ids[0]) < 0  # 0.0, not -0.0
    assert got.report.rejected["null_customer"] == int(frame(2_000)["customer_id"].is_nan().sum())
    # 0.0 and -0.0 orders are one order: at most 3 distinct order ids each (0, 3, 4)
    assert got.customers["frequency"].max() == 3


def test_customer_table_float_ids_match(tmp_path):
    table = pl.DataFrame({"customer_id": [-0.0, 1.0, 99.0], "region": ["n", "s", "e"]})
    got = engine.prepare(frame(500), customers=table).customers
    assert got.filter(pl.col("customer_id") == 0)["region"].to_list() == ["n"]
    assert got.height == 4  # 0, 1, 17850 and the prospect 99


def test_the_written_ids_do_not_depend_on_row_order_or_threads(tmp_path):
    # 200,000 rows: enough for the streaming group_by to split the work between threads.
    data = frame(200_000)
    paths = [tmp_path / "in.parquet", tmp_path / "shuffled.parquet"]
    data.write_parquet(paths[0])
    data.sample(fraction=1.0, shuffle=True, seed=7).write_parquet(paths[1])
    outputs = []
    for threads in ("1", "2", "4"):
        for path in paths:
            out = tmp_path / f"out-{threads}-{path.stem}.parquet"
            env = {**os.environ, "POLARS_MAX_THREADS": threads, "TIERBOOK_LOAD_PLUGINS": "abc"}
            done = subprocess.run([sys.executable, "-m", "engine", "classify", str(path), "-o", str(out)], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            outputs.append(pl.read_parquet(out))
    for other in outputs[1:]:
        assert other.equals(outputs[0])
    signs = [math.copysign(1.0, v) for v in outputs[0]["customer_id"].to_list()]
    assert signs == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [pl.Float32, pl.Float64])
def test_order_ids_minus_zero(dtype):
    df = pl.DataFrame({"customer_id": ["a", "a", "a"], "order_id": pl.Series([0.0, -0.0, 1.0], dtype=dtype),
                       "order_date": [dt.date(2011, 1, 1)] * 3, "amount": [1.0, 1.0, 1.0]})
    assert engine.prepare(df).customers["frequency"].to_list() == [2]


def test_ids_compared_as_text_carry_no_untrue_sorted_flag():
    """Integer ids in the transactions and text ids in the customer table that do not all convert ('007' is not
    the number 7) are compared as text. The table's ids, in no order, must not come out flagged sorted: a false
    flag lets Polars merge where it must hash, and customers silently miss their attributes or the prospects."""
    from engine.features import _align_ids

    feats = pl.DataFrame({"customer_id": [3, 10, 9]})
    table = pl.DataFrame({"customer_id": ["z1", "007", "10", "3"], "region": ["n", "s", "e", "w"]})
    for got in _align_ids(feats, table):
        ids = got["customer_id"]
        assert ids.dtype == pl.String
        assert not ids.flags["SORTED_ASC"] or ids.to_list() == sorted(ids.to_list())
        assert not ids.flags["SORTED_DESC"] or ids.to_list() == sorted(ids.to_list(), reverse=True)


def test_text_table_ids_beside_integer_ids_join_every_customer():
    """The same mix through the public API: every customer with transactions gets its attribute, and the table's
    customers without transactions are prospects, whatever order the table is in."""
    tx = pl.DataFrame({"customer_id": [3, 10, 9, 3], "order_id": [1, 2, 3, 4],
                       "order_date": [dt.date(2024, 1, d) for d in (2, 3, 4, 5)], "amount": [1.0, 2.0, 3.0, 4.0]})
    table = pl.DataFrame({"customer_id": ["z1", "9", "007", "10", "3"], "region": ["n", "x", "s", "e", "w"]})
    got = engine.prepare(tx, customers=table, as_of=dt.date(2024, 2, 1)).customers
    regions = dict(zip(got["customer_id"].to_list(), got["region"].to_list()))
    assert regions == {"3": "w", "9": "x", "10": "e", "007": "s", "z1": "n"}
    assert got.filter(pl.col("frequency") > 0).height == 3
