"""Baseline: idiomatic pandas, the same features and classification as tierbook.

    python bench/baseline_pandas.py DATA.parquet OUT.parquet

Reads the Parquet file whole (pyarrow), one ``groupby`` for dates and revenue,
one for distinct orders with a positive line, then ABC (cumulative revenue
share, ties share a class), lifecycle (ADC) and RFM quintile scores with the
named segments and value tiers, using tierbook's definitions (see
bench/README.md). Writes one row per customer to OUT.
"""

import sys

import numpy as np
import pandas as pd

GRID = {
    "Champions": ["54", "55", "45"], "Loyal Customers": ["44", "34", "35"],
    "Potential Loyalists": ["52", "53", "42", "43"], "New Customers": ["51"], "Promising": ["41"],
    "Need Attention": ["33"], "About to Sleep": ["31", "32"], "At Risk": ["23", "24", "13", "14"],
    "Can't Lose Them": ["25", "15"], "Hibernating": ["21", "22"], "Lost": ["11", "12"],
}
CELL_TO_SEGMENT = {int(c): name for name, cells in GRID.items() for c in cells}


def score(values: pd.Series, bins: int = 5) -> pd.Series:
    """floor((min-rank - 1) * bins / n) + 1: ties share the lowest rank."""
    rank = values.rank(method="min").astype("int64")
    return ((rank - 1) * bins // len(values) + 1).astype("int8")


def main(data: str, out: str) -> None:
    tx = pd.read_parquet(data, columns=["customer_id", "order_id", "order_date", "amount"])
    tx["order_date"] = pd.to_datetime(tx["order_date"])
    as_of = tx["order_date"].max() + pd.Timedelta(days=1)

    cust = tx.groupby("customer_id").agg(monetary=("amount", "sum"))
    bought = tx[tx["amount"] > 0].groupby("customer_id")["order_date"]  # purchases only
    cust["first_order"] = bought.min().reindex(cust.index)
    cust["last_order"] = bought.max().reindex(cust.index)
    cust["monetary"] = cust["monetary"].round(2)
    cust["frequency"] = (
        tx[tx["amount"] > 0].groupby("customer_id")["order_id"].nunique()
        .reindex(cust.index, fill_value=0).astype("int64")
    )
    cust["recency_days"] = (as_of - cust["last_order"]).dt.days
    cust["tenure_days"] = (as_of - cust["first_order"]).dt.days

    # ABC: share of revenue held by every customer with at least this customer's revenue.
    m = cust["monetary"]
    ordered = m.sort_values(ascending=False)
    cum = ordered.clip(lower=0).cumsum()
    cum = cum.groupby(ordered.values).transform("max")  # a tie group shares its cumulative share
    total = m.sum()
    share = (cum / total).reindex(cust.index)
    valid = (m > 0) & (total > 0)
    cust["abc"] = np.select([valid & (share <= 0.8 + 1e-12), valid & (share <= 0.95 + 1e-12)], ["A", "B"], "C")

    # Lifecycle.
    cust["adc"] = np.select(
        [cust["tenure_days"] <= 30, cust["recency_days"] <= 90, cust["recency_days"] <= 365],
        ["new", "active", "dormant"], "churned")

    # RFM quintile scores, segments and value tiers.
    cust["rfm_r"] = score(-cust["recency_days"])
    cust["rfm_f"] = score(cust["frequency"])
    cust["rfm_m"] = score(cust["monetary"])
    fm = (cust["rfm_f"].astype(int) + cust["rfm_m"].astype(int) + 1) // 2
    cust["rfm_segment"] = (cust["rfm_r"].astype(int) * 10 + fm).map(CELL_TO_SEGMENT)
    high = (cust["rfm_r"] >= 3) & (cust["rfm_f"] >= 4) & (cust["rfm_m"] >= 4)
    total_score = cust["rfm_r"].astype(int) + cust["rfm_f"] + cust["rfm_m"]
    cust["value_tier"] = np.select([high, total_score >= 9], ["high-value", "potential"], "ordinary")

    cust.reset_index().to_parquet(out, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
