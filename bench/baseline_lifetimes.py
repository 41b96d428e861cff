"""Baseline: lifetimes' BTYD summary, BG/NBD and Gamma-Gamma fits and CLV for every customer.

    python bench/baseline_lifetimes.py DATA.parquet OUT.parquet

As lifetimes' documentation shows: ``summary_data_from_transaction_data`` (days, monetary value),
``BetaGeoFitter().fit``, ``GammaGammaFitter().fit`` on the repeat buyers, then
``conditional_probability_alive``, ``conditional_expected_number_of_purchases_up_to_time`` and
``customer_lifetime_value`` (12 months, 0.01 a month) for every customer. Only the rows with a
zero or positive amount are passed (tierbook's purchases; lifetimes would count returns as purchases and its
Gamma-Gamma fitter refuses a non-positive mean). Writes one row per customer.
"""

import sys
import time
import warnings

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data


def main(data: str, out: str) -> None:
    t0 = time.perf_counter()
    tx = pd.read_parquet(data, columns=["customer_id", "order_date", "amount"])
    tx = tx[tx["amount"] >= 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summary_data_from_transaction_data(tx, "customer_id", "order_date", monetary_value_col="amount")
        t1 = time.perf_counter()
        bgf = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
        repeat = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
        ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
        t2 = time.perf_counter()
        s["p_alive"] = bgf.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
        s["expected_purchases"] = bgf.conditional_expected_number_of_purchases_up_to_time(
            360, s["frequency"], s["recency"], s["T"])
        s["expected_value"] = ggf.conditional_expected_average_profit(s["frequency"], s["monetary_value"])
        s["clv"] = ggf.customer_lifetime_value(bgf, s["frequency"], s["recency"], s["T"], s["monetary_value"],
                                               time=12, discount_rate=0.01, freq="D")
    t3 = time.perf_counter()
    s.reset_index().to_parquet(out, index=False)
    print(f"summary {t1 - t0:.2f} s, fits {t2 - t1:.2f} s, predictions {t3 - t2:.2f} s; "
          f"r, alpha, a, b = {list(bgf.params_)}; p, q, v = {list(ggf.params_)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
