"""Deterministic, seeded generator of realistic retail transactions for the benchmark.

    python bench/generate.py --rows 10m [--seed 20240601] [--out bench/data/tx_10m.parquet]
    python bench/generate.py --rows 200m [--chunk-rows 10000000]   # written in blocks, see below
    python bench/generate.py --rows 1m --messy   # bench/data/tx_1m-messy.parquet, see "Messy data"
    python bench/generate.py --rows 10m --variant numbered   # bench/data/tx_10m-numbered.parquet, see VARIANTS

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

Messy data
----------

``--messy`` writes the same set with some values missing or odd (``make_messy``): 0.5% of customer
ids, 2% of order ids, 0.3% of dates and 0.5% of amounts empty, 1% of amounts zero, the returns as
above. The changes are drawn from a random stream of their own after the clean set is generated,
so the clean files stay byte for byte what they were.

Large sets are written in blocks
--------------------------------

Generating in one piece holds every column and its intermediates in memory
(about 6 GB at 50M rows), so 200M rows would not fit. Sets of up to 50M rows (1m, 10m, 50m) are
still generated and written in one piece, exactly as before, so their files are
unchanged byte for byte. A larger set (200m), or any set larger than an explicit
``--chunk-rows``, is written as ``ceil(rows / chunk_rows)`` consecutive blocks
of nearly equal size (they differ by at most one row, none is above
``--chunk-rows``; 10,000,000 by default above 50M rows) streamed into one
Parquet file (``pl.concat`` of ``pl.defer`` frames into ``sink_parquet``, one
block after the other), so about one block is in memory at a time, never the
whole set.

Each block is an independent "shop" drawn by the same ``generate()`` with its
own seed, derived from (``--seed``, block index) by ``numpy.random.SeedSequence``
(block 0 is therefore not the one-piece set of its size). Its ids are shifted so
that they are unique over the whole file:

* customer ids: block b's customers follow block b-1's, so the file has
  customers 1..C, C = the sum of ``rows_b // 10``, each in exactly one block;
* order ids: ``generate()`` gives a block of n rows ids within 100,000,001 ..
  100,000,000 + 2n (orders plus credit notes, at most one of each per line);
  block b's are shifted by b x 2 x (the largest block's rows), so the ranges of
  two blocks never overlap.

How a chunked file differs from a one-piece one: each block is sorted by date,
then order id, on its own, so the file as a whole is not date-sorted (the dates
run from 2022 to 2024 once per block) and order ids grow from block to block.
The statistical shape is the same: every block has the shape described above
(Pareto activity, spend, acquisition and churn, about 1.8 lines an order, 2%
returns, ten lines per customer), so their union has it too; only the tail of
the largest customers is drawn per block (the biggest customer of 200M rows in
20 blocks is the biggest of 20 shops of 1M customers, not of one of 20M).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

SIZES = {"1m": 1_000_000, "10m": 10_000_000, "50m": 50_000_000, "200m": 200_000_000}
# Sets up to ONE_PIECE_MAX rows are generated in one piece (the files of 1m, 10m and 50m are unchanged);
# larger ones in blocks of DEFAULT_CHUNK_ROWS unless --chunk-rows says otherwise.
ONE_PIECE_MAX = 50_000_000
DEFAULT_CHUNK_ROWS = 10_000_000
SCHEMA = {"customer_id": pl.Int64, "order_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64}
ROW_BYTES = 8 + 8 + 4 + 8  # a loaded row's bytes in Polars: fixed-width columns, no nulls
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


def block_rows(rows: int, chunk_rows: int | None = None) -> list[int]:
    """The sizes of the consecutive blocks a set of ``rows`` rows is written in.

    ``chunk_rows`` None: one piece up to ONE_PIECE_MAX rows, blocks of DEFAULT_CHUNK_ROWS above.
    Otherwise ceil(rows / chunk_rows) blocks of nearly equal size (differing by at most one row).

    >>> block_rows(50_000_000), block_rows(200_000_000) == [10_000_000] * 20
    ([50000000], True)
    >>> block_rows(25, 10), block_rows(10, 10)
    ([9, 8, 8], [10])
    """
    if chunk_rows is None:
        chunk_rows = rows if rows <= ONE_PIECE_MAX else DEFAULT_CHUNK_ROWS
    if rows < 1 or chunk_rows < 1:
        raise ValueError(f"rows and chunk_rows must be positive, got {rows} and {chunk_rows}")
    n = -(-rows // chunk_rows)
    return [rows // n + (1 if i < rows % n else 0) for i in range(n)]


def block_seed(seed: int, index: int) -> int:
    """The seed of block ``index`` of a chunked set: deterministic, independent streams per block."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def generate_block(sizes: list[int], index: int, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """Block ``index`` of a chunked set whose blocks have ``sizes`` rows: ``generate()`` with the block's
    seed, customer ids after the earlier blocks' customers and order ids shifted past theirs."""
    cust_offset = sum(max(n // 10, 1) for n in sizes[:index])
    # generate() gives n rows order ids within 100_000_001 .. 100_000_000 + 2n (orders + credit notes).
    order_offset = index * 2 * max(sizes)
    df = generate(sizes[index], block_seed(seed, index))
    return df.with_columns(pl.col("customer_id") + cust_offset, pl.col("order_id") + order_offset)


#: Shares of the rows the messy variant changes (each drawn independently, so a row may have several).
MESSY = {"customer_id": 0.005, "order_id": 0.02, "order_date": 0.003, "amount": 0.005, "zero_amount": 0.01}


def make_messy(df: pl.DataFrame, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """The messy variant of a generated set: some customer ids, order ids, dates and amounts empty
    (``MESSY``), some amounts zero; returns stay as generated. Its own random stream (derived from
    ``seed`` and the word "messy"), applied after ``generate()``, so the clean sets are unchanged.
    tierbook counts the rows without customer, date or amount as unusable and leaves them out; a
    sale without an order id is one order of its customer; a zero amount is no order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, int.from_bytes(b"messy", "big")]))
    n = df.height
    masks = {k: pl.Series(rng.random(n) < share) for k, share in MESSY.items()}
    return df.with_columns(
        pl.when(masks["customer_id"]).then(None).otherwise(pl.col("customer_id")).alias("customer_id"),
        pl.when(masks["order_id"]).then(None).otherwise(pl.col("order_id")).alias("order_id"),
        pl.when(masks["order_date"]).then(None).otherwise(pl.col("order_date")).alias("order_date"),
        pl.when(masks["amount"]).then(None).when(masks["zero_amount"]).then(0.0).otherwise(pl.col("amount"))
        .alias("amount"),
    )


#: Variants of a written set, made from its file (``derive``): the same rows, in another order or numbering.
VARIANTS = {
    "numbered": "order ids numbered as the orders come in the file (as a shop numbers its invoices): each order "
                "keeps its lines, its customer and its place, only its id changes",
    "shuffled": "the rows in a random order (seeded): no order's lines sit together any more",
}


def derive(base: Path, variant: str, out: Path, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """The ``variant`` (see :data:`VARIANTS`) of the set in ``base``, written to ``out`` (atomically).

    ``numbered``: the generator writes orders by day, then by a scrambled order id, so ids do not grow
    through the file; this variant numbers them 100,000,001, 100,000,002, ... in the order they first
    appear. Each order's lines are together in the generated file, so this is the rank of the order's
    run; the function checks that there are as many runs as order ids (no order split) before writing.
    """
    df = pl.read_parquet(base)
    if variant == "numbered":
        runs = pl.col("order_id").rle_id()
        df = df.with_columns((runs.cast(pl.Int64) + 100_000_001).alias("order_id"))
        original = pl.read_parquet(base, columns=["order_id"])["order_id"]
        if df["order_id"].n_unique() != original.n_unique():
            raise SystemExit(f"{base}: an order's lines are not together, so its ids cannot be renumbered by run")
    elif variant == "shuffled":
        df = df.sample(fraction=1.0, shuffle=True, seed=seed)
    else:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    tmp = out.with_suffix(".parquet.tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(out)
    return df


def write_one_piece(rows: int, seed: int, out: Path) -> pl.DataFrame:
    """The set in one piece (the only way before chunking; 1m, 10m and 50m): generated, written, renamed."""
    df = generate(rows, seed)
    tmp = out.with_suffix(".parquet.tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(out)
    return df


def write_chunked(sizes: list[int], seed: int, out: Path) -> None:
    """The blocks streamed into one Parquet file, one block after the other: a deferred frame per block,
    concatenated in order (not in parallel, so one block is built at a time) and sunk to a temporary
    file renamed at the end."""
    parts = [pl.defer(lambda i=i: generate_block(sizes, i, seed), schema=SCHEMA) for i in range(len(sizes))]
    tmp = out.with_suffix(".parquet.tmp")
    pl.concat(parts, how="vertical", parallel=False).sink_parquet(tmp, compression="zstd", statistics=True,
                                                                   engine="streaming")
    tmp.replace(out)


def write(rows: int, out: Path, seed: int = DEFAULT_SEED, chunk_rows: int | None = None) -> pl.DataFrame | None:
    """Write the set of ``rows`` rows to ``out``: in one piece (returns the frame) when it is one block,
    else in blocks (returns None: the set was never whole in memory)."""
    sizes = block_rows(rows, chunk_rows)
    if len(sizes) == 1:
        return write_one_piece(rows, seed, out)
    write_chunked(sizes, seed, out)
    return None


def describe_file(path: Path) -> str:
    """``describe`` of a written file without loading it whole (streaming engine)."""
    lf = pl.scan_parquet(path)
    per = lf.group_by("customer_id").agg(pl.col("amount").sum().alias("m"))
    n_cust = per.select(pl.len()).collect(engine="streaming").item()
    k = max(n_cust // 5, 1)
    tops = per.select(pl.col("m").top_k(k).sum().alias("top"), pl.col("m").sum().alias("all"))
    facts = lf.select(pl.len().alias("rows"), pl.col("order_id").n_unique().alias("orders"),
                      pl.col("order_date").min().alias("lo"), pl.col("order_date").max().alias("hi"),
                      (pl.col("amount") < 0).mean().alias("returns"))
    t, f = pl.collect_all([tops, facts], engine="streaming")
    return (f"{f['rows'][0]:,} rows, {n_cust:,} customers, {f['orders'][0]:,} order ids, "
            f"{f['lo'][0]} .. {f['hi'][0]}, returns {f['returns'][0]:.1%} of lines, "
            f"top 20% of customers bring {t['top'][0] / t['all'][0]:.1%} of net revenue")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1m", help="1m, 10m, 50m, 200m or a number (default 1m)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", help="output Parquet file (default bench/data/tx_<rows>.parquet)")
    ap.add_argument("--chunk-rows", type=parse_rows, default=None,
                    help="write in blocks of at most this many rows (e.g. 10m) when the set is larger "
                         f"(default: one piece up to {ONE_PIECE_MAX:,} rows, blocks of "
                         f"{DEFAULT_CHUNK_ROWS:,} above)")
    ap.add_argument("--describe", action="store_true", help="print the shape of the data (slower)")
    ap.add_argument("--messy", action="store_true",
                    help="the messy variant (empty ids, dates and amounts, zero amounts; see make_messy), "
                         "default file bench/data/tx_<rows>-messy.parquet; one piece only")
    ap.add_argument("--variant", choices=sorted(VARIANTS),
                    help="write a variant of the set --rows names (made first if missing): "
                         + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items())
                         + "; default file bench/data/tx_<rows>-<variant>.parquet")
    ap.add_argument("--base", help="with --variant: the set to make it from (default bench/data/tx_<rows>.parquet)")
    args = ap.parse_args(argv)
    rows = parse_rows(args.rows)
    if args.variant:
        base = Path(args.base) if args.base else Path(__file__).parent / "data" / f"tx_{args.rows.lower()}.parquet"
        if not base.exists():
            main(["--rows", args.rows, "--seed", str(args.seed), "--out", str(base)])
        out = Path(args.out) if args.out else base.with_name(f"tx_{args.rows.lower()}-{args.variant}.parquet")
        t = time.perf_counter()
        derive(base, args.variant, out, args.seed)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {args.variant}) in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        return 0
    name = f"tx_{args.rows.lower()}{'-messy' if args.messy else ''}.parquet"
    out = Path(args.out) if args.out else Path(__file__).parent / "data" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    sizes = block_rows(rows, args.chunk_rows)
    if args.messy:
        if len(sizes) != 1:
            ap.error("--messy writes one piece: at most 50M rows")
        df = make_messy(generate(rows, args.seed), args.seed)
        tmp = out.with_suffix(".parquet.tmp")
        df.write_parquet(tmp, compression="zstd", statistics=True)
        tmp.replace(out)
        nulls = {c: df[c].null_count() for c in df.columns}
        print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s; empty values "
              f"{nulls}, zero amounts {(df['amount'] == 0).sum():,}, returns {(df['amount'] < 0).sum():,}",
              file=sys.stderr)
        return 0
    if len(sizes) == 1:
        df = write_one_piece(rows, args.seed, out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {df.estimated_size() / 1e6:.0f} MB in memory) "
              f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        if args.describe:
            print(describe(df), file=sys.stderr)
        return 0
    write_chunked(sizes, args.seed, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {rows * ROW_BYTES / 1e6:.0f} MB in memory when "
          f"loaded; {len(sizes)} blocks of at most {max(sizes):,} rows) in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    if args.describe:
        print(describe_file(out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
