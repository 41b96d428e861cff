"""Baseline: a hand-written Polars script, the same features and classification as tierbook.

    python bench/baseline_polars.py DATA.parquet OUT.parquet

What a Polars user would write by hand: one lazy group_by (streaming engine)
for dates, revenue (rounded to cents) and distinct orders with a positive line,
then ABC, lifecycle (ADC) and RFM quintile scores with the named segments and
value tiers as expressions, using tierbook's definitions (see
bench/README.md). No input validation, no rejects accounting, no rules.
"""

import datetime as dt
import sys

import polars as pl

GRID = {
    "Champions": ["54", "55", "45"], "Loyal Customers": ["44", "34", "35"],
    "Potential Loyalists": ["52", "53", "42", "43"], "New Customers": ["51"], "Promising": ["41"],
    "Need Attention": ["33"], "About to Sleep": ["31", "32"], "At Risk": ["23", "24", "13", "14"],
    "Can't Lose Them": ["25", "15"], "Hibernating": ["21", "22"], "Lost": ["11", "12"],
}
CELLS = {int(c): name for name, cells in GRID.items() for c in cells}


def score(e: pl.Expr) -> pl.Expr:
    return ((e.rank("min") - 1) * 5 // pl.len() + 1).cast(pl.Int8)


def main(data: str, out: str) -> None:
    amount = pl.col("amount")
    cust = (
        pl.scan_parquet(data)
        .group_by("customer_id")
        .agg(
            pl.col("order_date").filter(amount > 0).min().alias("first_order"),  # purchases only
            pl.col("order_date").filter(amount > 0).max().alias("last_order"),
            pl.col("order_date").max().alias("last_activity"),
            pl.col("order_id").filter(amount > 0).n_unique().alias("frequency"),
            amount.sum().round(2).alias("monetary"),
        )
        .collect(engine="streaming")
    )
    as_of = cust["last_activity"].max() + dt.timedelta(days=1)
    m = pl.col("monetary")
    pos = pl.when(m > 0).then(m).otherwise(0.0)
    cum = pos.sort(descending=True).cum_sum().gather(m.rank("max", descending=True).cast(pl.Int64) - 1)
    share, valid = cum / m.sum(), (m > 0) & (m.sum() > 0)
    r, f, mm = pl.col("rfm_r"), pl.col("rfm_f"), pl.col("rfm_m")
    (
        cust.lazy()
        .with_columns(
            (pl.lit(as_of) - pl.col("last_order")).dt.total_days().alias("recency_days"),
            (pl.lit(as_of) - pl.col("first_order")).dt.total_days().alias("tenure_days"),
        )
        .with_columns(
            pl.when(valid & (share <= 0.8 + 1e-12)).then(pl.lit("A"))
            .when(valid & (share <= 0.95 + 1e-12)).then(pl.lit("B")).otherwise(pl.lit("C")).alias("abc"),
            pl.when(pl.col("tenure_days") <= 30).then(pl.lit("new"))
            .when(pl.col("recency_days") <= 90).then(pl.lit("active"))
            .when(pl.col("recency_days") <= 365).then(pl.lit("dormant")).otherwise(pl.lit("churned")).alias("adc"),
            score(-pl.col("recency_days")).alias("rfm_r"),
            score(pl.col("frequency")).alias("rfm_f"),
            score(m).alias("rfm_m"),
        )
        .with_columns(
            (r.cast(pl.Int32) * 10 + (f.cast(pl.Int32) + mm + 1) // 2)
            .replace_strict(list(CELLS), list(CELLS.values()), return_dtype=pl.String).alias("rfm_segment"),
            pl.when((r >= 3) & (f >= 4) & (mm >= 4)).then(pl.lit("high-value"))
            .when(r.cast(pl.Int32) + f + mm >= 9).then(pl.lit("potential")).otherwise(pl.lit("ordinary"))
            .alias("value_tier"),
        )
        .collect()
        .write_parquet(out)
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
