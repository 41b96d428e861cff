"""Deterministic, seeded generator of realistic retail transactions for the benchmark.

    python bench/generate.py --rows 10m [--seed 20240601] [--out bench/data/tx_10m.parquet]

One row is one order line. Columns:

=============  ====================================================================
customer_id    Int64, 1..C with C = rows / 10 (about ten lines per customer)
order_id       Int64, unique per order (an order has one or more lines)
order_date     Date, between 2022-01-01 and 2024-12-31 (three years)
amount         Float64, the line's net value in currency units (cents), negative
               for a return; about 2% of lines are returns
=============  ====================================================================

How the data is shaped (all draws from one ``numpy.random.Generator`` seeded by
``--seed``, so the same arguments give the same file byte for byte):

* Activity: each customer's share of the lines is Pareto distributed (shape
  1.5), so most customers buy a few times and a few buy very often. Every
  customer has at least one line.
* Spend: each customer has a spend level (log-normal, correlated with
  activity); a line's value is the spend level times a log-normal basket value.
  Together they make the top 20% of customers bring about 75% of the revenue
  (printed by the generator).
* Orders: lines of one customer are grouped into orders (a new order starts
  with probability 0.55, so about 1.8 lines an order).
* Dates: a customer is acquired on a day of the three years (more customers
  later, as a growing shop), stays for an exponentially distributed lifetime
  (mean 500 days, cut at the end of the period); each order falls on a uniform
  day of that span. Many customers have therefore churned by the end.
* Returns: 2% of lines are returns: the amount is negated and the line gets
  an order of its own (a credit note) dated at or after the purchase; half of
  the credit notes hold only that return, so they are not orders in tierbook's
  sense (``frequency`` counts orders with a positive line).

Rows are written sorted by date (as a transaction log would be), then order id.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

SIZES = {"1m": 1_000_000, "10m": 10_000_000, "50m": 50_000_000}
START = dt.date(2022, 1, 1)
END = dt.date(2024, 12, 31)
DEFAULT_SEED = 20240601


def parse_rows(text: str) -> int:
    text = text.lower().strip()
    if text in SIZES:
        return SIZES[text]
    if text.endswith("m"):
        return int(float(text[:-1]) * 1_000_000)
    if text.endswith("k"):
        return int(float(text[:-1]) * 1_000)
    return int(text)


def generate(rows: int, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_cust = max(rows // 10, 1)
    days = (END - START).days + 1

    # Activity (lines per customer): Pareto shares, at least one line each.
    activity = rng.pareto(1.5, n_cust) + 1.0
    extra = rng.multinomial(rows - n_cust, activity / activity.sum()) if rows > n_cust else np.zeros(n_cust, int)
    lines = (extra + 1).astype(np.int64)
    cust = np.repeat(np.arange(1, n_cust + 1, dtype=np.int64), lines)

    # Spend level per customer, mildly correlated with activity.
    spend = np.exp(rng.normal(0.0, 0.7, n_cust) + 0.25 * np.log(activity))

    # Acquisition day (more customers later) and lifetime.
    first = (np.sqrt(rng.random(n_cust)) * days).astype(np.int64)
    life = rng.exponential(500.0, n_cust)
    last = np.minimum(first + life.astype(np.int64), days - 1)

    # Orders: a new order starts with probability 0.55; a customer's first line always starts one.
    starts = rng.random(rows) < 0.55
    cust_start = np.zeros(rows, dtype=bool)
    cust_start[np.concatenate(([0], np.cumsum(lines)[:-1]))] = True
    starts |= cust_start
    order_seq = np.cumsum(starts)  # 1-based order number, grouped by customer
    n_orders = int(order_seq[-1])
    c_of_order = cust[starts] - 1
    span = last[c_of_order] - first[c_of_order] + 1
    order_day = first[c_of_order] + (rng.random(n_orders) * span).astype(np.int64)
    day = order_day[order_seq - 1]

    # Line values: spend level x log-normal basket value, in cents.
    value = spend[cust - 1] * np.exp(rng.normal(3.0, 0.8, rows))
    amount = np.round(value, 2)
    amount = np.maximum(amount, 0.01)

    # Returns: 2% of lines, negated, in a credit note of their own dated at or after the purchase.
    is_return = rng.random(rows) < 0.02
    n_ret = int(is_return.sum())
    amount[is_return] = -amount[is_return]
    order_id = order_seq.astype(np.int64)
    # Half of the credit notes are new order ids; the other half stay on the purchase's order
    # (a partly returned order), so both kinds exist.
    own_note = is_return & (rng.random(rows) < 0.5)
    k = int(own_note.sum())
    order_id[own_note] = n_orders + 1 + np.arange(k, dtype=np.int64)
    delay = rng.integers(0, 30, k)
    day[own_note] = np.minimum(day[own_note] + delay, last[cust[own_note] - 1])

    # Scramble order ids so they do not follow customer order (hash-like permutation).
    perm = rng.permutation(n_orders + k).astype(np.int64) + 100_000_001
    order_id = perm[order_id - 1]

    # Sort like a transaction log: by day, then order id.
    idx = np.lexsort((order_id, day))
    base = np.datetime64(START.isoformat(), "D")
    df = pl.DataFrame({
        "customer_id": cust[idx],
        "order_id": order_id[idx],
        "order_date": pl.Series((base + day[idx]).astype("datetime64[D]")).cast(pl.Date),
        "amount": amount[idx],
    })
    del idx, cust, order_id, day, amount
    _ = n_ret
    return df


def describe(df: pl.DataFrame) -> str:
    per = df.group_by("customer_id").agg(pl.col("amount").sum().alias("m"))
    m = per["m"].sort(descending=True)
    top = m.head(max(len(m) // 5, 1)).sum() / m.sum()
    returns = (df["amount"] < 0).mean()
    return (f"{df.height:,} rows, {per.height:,} customers, {df['order_id'].n_unique():,} order ids, "
            f"{df['order_date'].min()} .. {df['order_date'].max()}, returns {returns:.1%} of lines, "
            f"top 20% of customers bring {top:.1%} of net revenue")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1m", help="1m, 10m, 50m or a number (default 1m)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", help="output Parquet file (default bench/data/tx_<rows>.parquet)")
    ap.add_argument("--describe", action="store_true", help="print the shape of the data (slower)")
    args = ap.parse_args(argv)
    rows = parse_rows(args.rows)
    out = Path(args.out) if args.out else Path(__file__).parent / "data" / f"tx_{args.rows.lower()}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    df = generate(rows, args.seed)
    tmp = out.with_suffix(".parquet.tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {df.estimated_size() / 1e6:.0f} MB in memory) "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if args.describe:
        print(describe(df), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
