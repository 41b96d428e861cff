"""Baseline: pymc-marketing's BTYD summary, BG/NBD and Gamma-Gamma MAP fits and CLV for every customer.

    python bench/baseline_pymc_clv.py DATA.parquet OUT.parquet

``rfm_summary`` (days, monetary value), ``BetaGeoModel(data).fit(method="map")``,
``GammaGammaModel(repeat buyers).fit(method="map")`` with their default priors, then
``expected_probability_alive``, ``expected_purchases(future_t=360)`` and
``expected_customer_lifetime_value(future_t=12, discount_rate=0.01)`` for every customer, as its
documentation shows. Only rows with a zero or positive amount are passed (as for lifetimes). Writes one row
per customer.
"""

import sys
import time
import warnings

import pandas as pd
from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
from pymc_marketing.clv.utils import rfm_summary


def main(data: str, out: str) -> None:
    t0 = time.perf_counter()
    tx = pd.read_parquet(data, columns=["customer_id", "order_date", "amount"])
    tx = tx[tx["amount"] >= 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = rfm_summary(tx, "customer_id", "order_date", monetary_value_col="amount")
        t1 = time.perf_counter()
        bg = BetaGeoModel(data=s[["customer_id", "frequency", "recency", "T"]])
        bg.fit(method="map", progressbar=False)
        repeat = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
        gg = GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]])
        gg.fit(method="map", progressbar=False)
        t2 = time.perf_counter()
        s["p_alive"] = bg.expected_probability_alive(data=s).mean(("chain", "draw")).values
        s["expected_purchases"] = bg.expected_purchases(data=s, future_t=360).mean(("chain", "draw")).values
        s["expected_value"] = gg.expected_customer_spend(data=s).mean(("chain", "draw")).values
        s["clv"] = gg.expected_customer_lifetime_value(transaction_model=bg, data=s, future_t=12,
                                                       discount_rate=0.01, time_unit="D").mean(
            ("chain", "draw")).values
    t3 = time.perf_counter()
    s.to_parquet(out, index=False)
    post = {k: float(m.idata.posterior[k].mean()) for m, names in ((bg, ("r", "alpha", "a", "b")), (gg, ("p", "q", "v")))
            for k in names}
    print(f"summary {t1 - t0:.2f} s, fits {t2 - t1:.2f} s, predictions {t3 - t2:.2f} s; MAP {post}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
