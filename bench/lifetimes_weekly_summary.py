"""Reference output: lifetimes' BTYD summary of the CDNOW calibration period in calendar weeks.

    bench/.venv-baselines/bin/python bench/lifetimes_weekly_summary.py

Reads tests/plugins/clv/data/CDNOW_sample.txt, keeps the purchases before 1997-10-01 and writes
lifetimes 0.11.3's ``summary_data_from_transaction_data(..., observation_period_end="1997-09-30",
freq="W", monetary_value_col="amount")`` to tests/plugins/clv/data/lifetimes_cdnow_summary_weekly.csv,
which tests/plugins/clv/test_clv.py compares tierbook's weekly summary (``btyd_summary(..., "W")``) with.
"""

from pathlib import Path

import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data

DATA = Path(__file__).resolve().parent.parent / "tests" / "plugins" / "clv" / "data"


def main() -> None:
    raw = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None,
                      names=["master", "customer_id", "date", "cds", "amount"])
    raw["order_date"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    cal = raw[raw["order_date"] < "1997-10-01"]
    s = summary_data_from_transaction_data(cal, "customer_id", "order_date", monetary_value_col="amount",
                                           observation_period_end="1997-09-30", freq="W")
    s.reset_index().to_csv(DATA / "lifetimes_cdnow_summary_weekly.csv", index=False, float_format="%.10f")


if __name__ == "__main__":
    main()
