"""The floor: a plain Polars lazy group_by from Parquet, nothing else.

    python bench/floor.py DATA.parquet OUT.parquet

Per customer: last date, distinct orders (every order id, returns included) and
net revenue, collected with the streaming engine and written to Parquet. This is
the least any tool computing per-customer features from this file has to do;
tierbook's targets are stated relative to it.
"""

import sys

import polars as pl


def main(data: str, out: str) -> None:
    (
        pl.scan_parquet(data)
        .group_by("customer_id")
        .agg(
            pl.col("order_date").max().alias("last_order"),
            pl.col("order_id").n_unique().alias("orders"),
            pl.col("amount").sum().alias("monetary"),
        )
        .collect(engine="streaming")
        .write_parquet(out)
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
