"""Reference output: lifetimes' BTYD summary of the CDNOW calibration period in calendar weeks, its fits
and predictions.

    bench/.venv-baselines/bin/python bench/lifetimes_weekly_summary.py

Reads tests/plugins/clv/data/CDNOW_sample.txt, keeps the purchases before 1997-10-01 and writes
lifetimes 0.11.3's ``summary_data_from_transaction_data(..., observation_period_end="1997-09-30",
freq="W", monetary_value_col="amount")`` to tests/plugins/clv/data/lifetimes_cdnow_summary_weekly.csv,
which tests/plugins/clv/test_clv.py compares tierbook's weekly summary (``btyd_summary(..., "W")``) with.

On that weekly summary it then fits ``BetaGeoFitter`` (every customer) and ``GammaGammaFitter`` (the repeat
buyers), as bench/baseline_lifetimes.py does on days, and writes their parameters
(lifetimes_cdnow_params_weekly.json) and every customer's ``conditional_probability_alive``,
``conditional_expected_number_of_purchases_up_to_time(12 * 4.345)`` (12 months of weeks, lifetimes' factor),
``conditional_expected_average_profit`` and ``customer_lifetime_value(time=12, discount_rate=0.01, freq="W")``
(lifetimes_cdnow_predictions_weekly.csv), which the test of ``clv.period=week`` compares tierbook's with.
"""

import json
import warnings
from pathlib import Path

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgf = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
        repeat = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
        ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
        out = pd.DataFrame(index=s.index)
        out["p_alive"] = bgf.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
        out["expected_purchases"] = bgf.conditional_expected_number_of_purchases_up_to_time(
            12 * 4.345, s["frequency"], s["recency"], s["T"])
        out["expected_value"] = ggf.conditional_expected_average_profit(s["frequency"], s["monetary_value"])
        out["clv"] = ggf.customer_lifetime_value(bgf, s["frequency"], s["recency"], s["T"], s["monetary_value"],
                                                 time=12, discount_rate=0.01, freq="W")
    out.reset_index().to_csv(DATA / "lifetimes_cdnow_predictions_weekly.csv", index=False, float_format="%.10f")
    params = {"bgnbd": {k: float(v) for k, v in bgf.params_.items()},
              "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()}}
    (DATA / "lifetimes_cdnow_params_weekly.json").write_text(json.dumps(params, indent=1) + "\n")


if __name__ == "__main__":
    main()
