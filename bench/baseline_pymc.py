"""Baseline: pymc-marketing's ``rfm_segments`` on the transactions.

    python bench/baseline_pymc.py DATA.parquet OUT.parquet

Reads the Parquet file with pandas and calls
``pymc_marketing.clv.utils.rfm_segments`` as its documentation shows. Its
native definitions differ from tierbook's (see bench/README.md):

* ``frequency``: distinct *days* with any transaction (returns included), not
  distinct orders with a positive line;
* ``recency``: days from the last transaction to the last date of the data, so
  tierbook's ``recency_days`` (measured to the day after) is ``recency + 1``;
* ``monetary_value``: mean net revenue per active day, so tierbook's
  ``monetary`` is ``monetary_value * frequency``;
* scores are quartiles (``pandas.qcut``), segments its own five.

Writes its output unchanged (one row per customer) to OUT; the benchmark's
agreement check converts as above.
"""

import sys
import warnings

import pandas as pd
from pymc_marketing.clv.utils import rfm_segments


def main(data: str, out: str) -> None:
    tx = pd.read_parquet(data, columns=["customer_id", "order_date", "amount"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segments = rfm_segments(tx, customer_id_col="customer_id", datetime_col="order_date",
                                monetary_value_col="amount")
    segments.to_parquet(out, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
