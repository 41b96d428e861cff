"""Rebuild the bundled demo sample from the full UCI Online Retail data.

    python tools/make_sample.py ../shared/data/online_retail_uci.parquet

Takes every row (cancellations included) of 400 customers drawn with a fixed
seed, plus every 60th row without a customer id, in the source order, values
unchanged. Writes engine/sample/online_retail_sample.csv, and
engine/sample/customers_sample.csv (see engine/sample/README.md).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl

SEED = 20111209
CUSTOMERS = 250
NULL_EVERY = 150
PROSPECTS = 20


def main(source: str) -> None:
    df = pl.read_parquet(source).with_row_index("_row")
    ids = df["CustomerID"].drop_nulls().unique().sort().sample(CUSTOMERS, seed=SEED)
    picked = df.filter(pl.col("CustomerID").is_in(ids.implode()) | (pl.col("CustomerID").is_null()
                                                                    & (pl.col("_row") % NULL_EVERY == 0)))
    out = Path(__file__).resolve().parents[1] / "engine" / "sample" / "online_retail_sample.csv"
    picked.drop("_row").write_csv(out, datetime_format="%Y-%m-%d %H:%M:%S")
    print(f"wrote {out}: {picked.height} rows, {picked['CustomerID'].n_unique() - 1} customers")

    # The customer table: the sample's customers plus PROSPECTS other customers of
    # the data set whose transactions are not in the sample (known, no orders here).
    # country is real (each customer's most frequent Country); birthday is
    # SYNTHETIC (seeded), because the source has none: it only demonstrates
    # birthday rules.
    others = df["CustomerID"].drop_nulls().unique().sort().filter(~df["CustomerID"].drop_nulls().unique().sort()
                                                                  .is_in(ids.implode()))
    prospects = others.sample(PROSPECTS, seed=SEED + 1)
    table_ids = pl.concat([ids, prospects]).sort()
    country = (df.filter(pl.col("CustomerID").is_in(table_ids.implode()))
               .group_by("CustomerID", "Country").agg(pl.len())
               .sort(["CustomerID", "len", "Country"], descending=[False, True, False])
               .group_by("CustomerID", maintain_order=True).first().select("CustomerID", "Country"))
    rng = np.random.default_rng(SEED)
    days = rng.integers(0, 365 * 50, size=len(table_ids))
    birthday = pl.Series("birthday", [dt.date(1950, 1, 1) + dt.timedelta(days=int(d)) for d in days])
    table = (pl.DataFrame({"customer_id": table_ids}).with_columns(birthday)
             .join(country.rename({"CustomerID": "customer_id", "Country": "country"}), on="customer_id", how="left")
             .select("customer_id", "country", "birthday"))
    out2 = out.with_name("customers_sample.csv")
    table.write_csv(out2)
    print(f"wrote {out2}: {table.height} customers ({PROSPECTS} without transactions in the sample)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/online_retail_uci.parquet")
