"""Calibration and holdout: fit before a date, compare predicted and actual repeat purchases after it.

As lifetimes' ``calibration_and_holdout_data`` with ``plot_calibration_purchases_vs_holdout_purchases``
(and pymc-marketing's ``rfm_train_test_split``): the model is fitted on the purchases before
``calibration_end`` (tierbook's exclusive as_of: the calibration period ends the day before), then
each calibration customer's purchase days in ``[calibration_end, holdout_end)`` are counted and set
against the model's expected purchases over that many days (in the fit's unit). Customers whose first
purchase is in the holdout period are not in the comparison (they were not there to predict).

The data is read twice (once to each date): this is an analysis to run now and then, not part of a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl

import engine
from engine.data import as_date
from engine.errors import DataError

from . import SUMMARY_COLUMNS, _UNIT_DAYS, models

__all__ = ["holdout", "holdout_chart", "Holdout"]


class Holdout:
    """The comparison: ``table`` (by calibration frequency), ``customers`` (one row each), ``fit``."""

    def __init__(self, table: pl.DataFrame, customers: pl.DataFrame, fit: Mapping[str, Any],
                 calibration_end: dt.date, holdout_end: dt.date):
        self.table, self.customers, self.fit = table, customers, dict(fit)
        self.calibration_end, self.holdout_end = calibration_end, holdout_end

    def __repr__(self) -> str:
        return (f"Holdout(calibration before {self.calibration_end}, holdout to {self.holdout_end}, "
                f"{self.customers.height:,} customers)\n{self.table}")


def holdout(data: Any, calibration_end: str | dt.date, holdout_end: str | dt.date | None = None, *,
            params: Mapping[str, Any] | None = None, max_frequency: int = 7, registry: Any = None,
            **prepare_kwargs: Any) -> Holdout:
    """Fit ``clv`` on the purchases before ``calibration_end``; compare with the purchases after it.

    ``holdout_end`` (exclusive) defaults to the day after the last transaction; ``params`` are the
    clv classifier's (``{"time_unit": "weeks"}``); other keywords go to :func:`engine.prepare`
    (``mapping``, ``date_format`` ...). ``table`` has one row per calibration frequency 0 ..
    ``max_frequency`` (the last also holds the higher ones): customers, mean actual and mean predicted
    repeat purchases in the holdout period, and a total row.
    """
    if dict(params or {}).get("period", "day") != "day":
        raise DataError(f"holdout: compares purchase days; clv.period {params['period']!r} is not supported here "
                        f"(use period day, with time_unit days or weeks)")
    cal_end = as_date(calibration_end)
    prep_cal = engine.prepare(data, as_of=cal_end, registry=registry, needs=SUMMARY_COLUMNS, **prepare_kwargs)
    prep_all = engine.prepare(data, as_of=holdout_end, registry=registry or prep_cal.registry,
                              needs=SUMMARY_COLUMNS, **prepare_kwargs)
    end = prep_all.as_of
    if end <= cal_end:
        raise DataError(f"holdout: the holdout period is empty: it ends on {end} (exclusive), not after the "
                        f"calibration end {cal_end}")
    classified = prep_cal.classify(["clv"], {"clv": dict(params or {})})
    fit = prep_cal.fits["clv"]
    unit = fit["time_unit"]
    days = (end - cal_end).days
    cal = classified.filter(pl.col("btyd_frequency").is_not_null()).select(
        "customer_id", "btyd_frequency", "btyd_recency", "btyd_T", pl.col("btyd_purchase_days").alias("_cal_days"))
    after = prep_all.customers.select("customer_id", pl.col("btyd_purchase_days").alias("_all_days"))
    both = cal.join(after, on="customer_id", how="left")
    scale = _UNIT_DAYS[unit]
    h = models.Histories(both["btyd_frequency"].to_numpy(), both["btyd_recency"].to_numpy() / scale,
                         both["btyd_T"].to_numpy() / scale)
    predicted = models.expected_purchases(fit["bgnbd"]["params"], days / scale, h)
    customers = both.select(
        "customer_id", pl.col("btyd_frequency").alias("frequency_cal"),
        (pl.col("_all_days") - pl.col("_cal_days")).alias("actual_holdout"),
    ).with_columns(pl.Series("predicted_holdout", predicted))
    bucket = pl.col("frequency_cal").clip(upper_bound=max_frequency)
    table = (customers.group_by(bucket.alias("frequency_cal"))
             .agg(pl.len().alias("customers"), pl.col("actual_holdout").mean().alias("actual"),
                  pl.col("predicted_holdout").mean().alias("predicted"))
             .sort("frequency_cal")
             .with_columns(pl.col("frequency_cal").cast(pl.String)
                           .replace({str(max_frequency): f"{max_frequency}+"})))
    total = customers.select(pl.lit("all").alias("frequency_cal"), pl.len().alias("customers"),
                             pl.col("actual_holdout").mean().alias("actual"),
                             pl.col("predicted_holdout").mean().alias("predicted"))
    table = pl.concat([table, total])
    return Holdout(table, customers, fit, cal_end, end)


def holdout_chart(result: Holdout):
    """A matplotlib figure: mean actual and predicted holdout purchases by calibration frequency."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = result.table.filter(pl.col("frequency_cal") != "all")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    x = list(range(rows.height))
    ax.plot(x, rows["actual"].to_list(), marker="o", label="actual")
    ax.plot(x, rows["predicted"].to_list(), marker="s", linestyle="--", label="predicted (BG/NBD)")
    ax.set_xticks(x, rows["frequency_cal"].to_list())
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean purchases in the holdout")
    ax.set_title(f"holdout {result.calibration_end} .. {result.holdout_end - dt.timedelta(days=1)}")
    ax.legend()
    fig.tight_layout()
    return fig
