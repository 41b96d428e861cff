"""Customer lifetime value: BG/NBD for purchases, Gamma-Gamma for spend.

The BTYD summary
----------------
The plugin adds the buy-till-you-die summary of lifetimes' ``summary_data_from_transaction_data``
and pymc-marketing's ``rfm_summary`` to the customer table, computed in the single pass over the
transactions (a query per customer and day, then per customer, from the same scan; see
:class:`engine.Feature` ``table``). The period is the day; everything is in days:

===================  ============================================================================
btyd_frequency       repeat purchase days: days with a purchase, minus 1 (the first)
btyd_recency         days from the first purchase day to the last
btyd_T               days from the first purchase day to the last observed day, ``as_of`` - 1
                     (lifetimes' ``observation_period_end``, which is inclusive; tierbook's
                     ``as_of`` is exclusive)
btyd_monetary_value  mean value of the repeat purchase days (the first day left out), 0 when
                     btyd_frequency is 0
btyd_first_purchase  the first purchase day
===================  ============================================================================

A *purchase day* is a day with at least one line of zero or positive amount, and its value is the sum
of those lines. A line of zero amount (a free item, a promotion) is a purchase of value 0, as in
lifetimes, pymc-marketing and the published CDNOW analyses (8 of the 2,357 CDNOW customers' first
purchases are of value 0). Returns (negative lines) are not purchases: a day with only returns is not a
purchase day, and returns do not lower a day's value (they stay in tierbook's ``monetary`` and
``returned_value``); lifetimes would count a return-only row as a purchase period, with a negative
value that the Gamma-Gamma model cannot take. A customer with no purchase day (a prospect, or one with
returns only) has no summary (null) and no CLV. Repeat buyers whose repeat days are all of value 0
(``btyd_monetary_value`` 0) are left out of the Gamma-Gamma fit (it needs positive spend) and counted
in the fit's report; their expected spend is the model's, from their frequency and a mean of 0. The classifier
converts days to weeks (``time_unit=weeks``: days / 7, lifetimes' ``freq="D", freq_multiplier=7``)
before it fits.

The classifier
--------------
``clv`` fits BG/NBD (r, alpha, a, b) on every customer with a purchase and Gamma-Gamma (p, q, v) on
those with a repeat purchase, by maximum likelihood (:mod:`plugins.clv.models`), and writes:

=======================  =========================================================================
clv_p_alive              probability that the customer is still active (1 with one purchase day)
clv_expected_purchases   expected purchases (purchase days) in the next ``horizon_months`` months
clv_expected_value       expected mean value of a future purchase (Gamma-Gamma)
clv                      CLV over ``horizon_months``, discounted at ``discount_rate`` a month
clv_tier                 high (top ``high_share`` of the customers by CLV), medium (up to
                         ``medium_share``), low; none for customers without a purchase
=======================  =========================================================================

CLV follows lifetimes' ``customer_lifetime_value`` (discounted cash flow, month by month)::

    clv = sum over m = 1..H of  E[M] * (E[Y(m f)] - E[Y((m - 1) f)]) / (1 + d)^m

with ``E[Y(t)]`` the BG/NBD expected purchases in the next t periods, ``E[M]`` the Gamma-Gamma
expected spend, ``f`` 30 periods a month in days or 4.345 in weeks (lifetimes' factors), H the horizon
in months and d the monthly discount rate. ``clv_expected_purchases`` is ``E[Y(H f)]``.

The fitted parameters, their standard errors (from the Hessian), the log-likelihoods and how many
customers each fit used are returned by the fit and reported in a playbook run's ``summary.json``
under ``fits.clv``. The classifier runs only when named (``--classifier clv``, or ``clv:`` in a
playbook): it fits a model, which takes a moment and needs repeat buyers.

Examples
--------
>>> from plugins.clv import models
>>> round(models.MONTH["weeks"] * 7, 3)
30.415
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from engine import Classifier, Context, Feature, Output, ParamSpec, hookimpl
from engine.errors import DataError
from engine.features import to_amount

from . import models

__all__ = ["CLV", "SUMMARY_COLUMNS", "btyd_summary", "register_classifiers", "register_features"]

TIERS = ("high", "medium", "low")
SUMMARY_COLUMNS = ("btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value")
_UNIT_DAYS = {"days": 1.0, "weeks": 7.0}
_AS_OF = (pl.col("first_order") + pl.duration(days=pl.col("tenure_days"))).max()


def _per_day_then_customer(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Purchase days per customer: positive lines summed per customer and day, then per customer.

    Values are summed in exact integer units (``amount_units``), so the result does not depend on the
    order the lines arrive in (a float sum does: the streaming engine's order varies from run to run, and
    the Spark engine's differs again), then turned into amounts once.
    """
    day, value = pl.col("order_date"), pl.col("_day_units")
    days = rows.filter(pl.col("amount_units") >= 0).group_by("customer_id", "order_date").agg(
        pl.col("amount_units").cast(pl.Int128).sum().alias("_day_units"))
    return days.group_by("customer_id").agg(
        pl.len().cast(pl.Int64).alias("btyd_purchase_days"),
        day.min().alias("btyd_first_purchase"),
        day.max().alias("btyd_last_purchase"),
        to_amount(value.sum() - value.get(day.arg_min())).alias("btyd_repeat_value"),
    )


def _features() -> list[Feature]:
    table = _per_day_then_customer
    frequency = pl.col("btyd_purchase_days") - 1
    first = pl.col("btyd_first_purchase")
    return [
        Feature("btyd_purchase_days", "days with a purchase (a line of amount >= 0)", table=table, on_demand=True),
        Feature("btyd_first_purchase", "the first purchase day", table=table, on_demand=True),
        Feature("btyd_last_purchase", "the last purchase day", table=table, on_demand=True),
        Feature("btyd_repeat_value", "value of the purchase days after the first", table=table, on_demand=True),
        Feature("btyd_frequency", "repeat purchase days (lifetimes' frequency)", derive=frequency, on_demand=True),
        Feature("btyd_recency", "days from the first purchase day to the last (lifetimes' recency)",
                derive=(pl.col("btyd_last_purchase") - first).dt.total_days(), on_demand=True),
        # T ends on the last observed day, as_of - 1. as_of is first_order + tenure_days of any customer with
        # a purchase line (amount > 0); a BTYD purchase day may be a zero amount only, whose customer has no
        # first_order, so as_of is taken over the whole table rather than from the customer's own row.
        Feature("btyd_T", "days from the first purchase day to as_of - 1 (lifetimes' T)",
                derive=(_AS_OF - first).dt.total_days() - 1, on_demand=True),
        Feature("btyd_monetary_value", "mean value of the repeat purchase days (lifetimes' monetary_value)",
                derive=pl.when(frequency > 0).then(pl.col("btyd_repeat_value") / frequency)
                .otherwise(pl.when(frequency == 0).then(0.0)), on_demand=True),
    ]


@hookimpl
def register_features(register) -> None:
    for feature in _features():
        register(feature)


def btyd_summary(customers: pl.DataFrame, time_unit: str = "days") -> pl.DataFrame:
    """The BTYD summary in lifetimes' column names, one row per customer with a purchase.

    ``customers`` is a customer table computed with this plugin's features (e.g.
    ``engine.prepare(..., needs=SUMMARY_COLUMNS).customers``); ``time_unit`` is ``days`` or
    ``weeks`` (days / 7).
    """
    scale = _UNIT_DAYS[time_unit]
    return customers.filter(pl.col("btyd_frequency").is_not_null()).select(
        "customer_id",
        pl.col("btyd_frequency").alias("frequency"),
        (pl.col("btyd_recency") / scale).alias("recency"),
        (pl.col("btyd_T") / scale).alias("T"),
        pl.col("btyd_monetary_value").alias("monetary_value"),
    )


def _check(p: Mapping[str, Any]) -> None:
    if p["medium_share"] < p["high_share"]:
        raise ValueError(f"medium_share ({p['medium_share']}) is below high_share ({p['high_share']}); "
                         f"it is the cumulative share of high and medium customers")


def fit(customers: pl.DataFrame, p: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Fit BG/NBD and Gamma-Gamma on the customer table; raise DataError when the data cannot be fitted."""
    s = btyd_summary(customers, p["time_unit"])
    buyers = s.height
    if buyers == 0:
        raise DataError("clv: no customer has a purchase (a line with an amount >= 0) before as_of; "
                        "there is nothing to fit")
    repeat = s.filter(pl.col("frequency") > 0)
    if repeat.height == 0:
        raise DataError(f"clv: all {buyers:,} customers with a purchase bought on one day only; BG/NBD and "
                        f"Gamma-Gamma need repeat purchases (a longer period of data, or an earlier as_of for a "
                        f"holdout, may help)")
    if repeat.height < p["min_repeat_customers"]:
        raise DataError(f"clv: only {repeat.height:,} of {buyers:,} customers bought on more than one day, fewer "
                        f"than min_repeat_customers ({p['min_repeat_customers']}); too few repeat buyers to fit "
                        f"BG/NBD and Gamma-Gamma")
    # In the customer table's order (maintain_order), so that the sums of the likelihood, and so the fit,
    # are the same on every run.
    tuples = s.group_by("frequency", "recency", "T", maintain_order=True).len()
    paying = repeat.filter(pl.col("monetary_value") > 0)
    if paying.height < 2:
        raise DataError(f"clv: only {paying.height} repeat buyer(s) with a positive repeat spend; the Gamma-Gamma "
                        f"model of spend cannot be fitted")
    spend = paying.group_by("frequency", "monetary_value", maintain_order=True).len()
    try:
        bg = models.fit_bgnbd(tuples["frequency"].to_numpy(), tuples["recency"].to_numpy(), tuples["T"].to_numpy(),
                              tuples["len"].to_numpy(), penalizer=p["penalizer"])
        gg = models.fit_gamma_gamma(spend["frequency"].to_numpy(), spend["monetary_value"].to_numpy(),
                                    spend["len"].to_numpy(), penalizer=p["penalizer"])
    except models.FitError as exc:
        raise DataError(f"clv: {exc}") from None
    if gg.params["q"] <= 1:
        raise DataError(f"clv: the Gamma-Gamma fit gives q = {gg.params['q']:.4g} <= 1, so the expected spend "
                        f"(p v / (q - 1)) is not finite; a penalizer (e.g. clv.penalizer=0.001) may help")
    # The predictions on the distinct histories: non-finite values stop the run here, never reach a column.
    # E[Y(t)] grows with t, so finite at the horizon means finite at every month before it.
    h = models.Histories(tuples["frequency"].to_numpy(), tuples["recency"].to_numpy(), tuples["T"].to_numpy())
    check = models.expected_purchases(bg.params, p["horizon_months"] * models.MONTH[p["time_unit"]], h)
    alive = models.p_alive(bg.params, h.x, h.tx, h.T)
    if not (np.all(np.isfinite(check)) and np.all(np.isfinite(alive))):
        raise DataError(f"clv: the fitted BG/NBD ({_fmt(bg.params)}) gives non-finite predictions for some "
                        f"customers; a penalizer (e.g. clv.penalizer=0.001) may help")
    corr = repeat.select(pl.corr("frequency", "monetary_value")).item()
    return {
        "time_unit": p["time_unit"],
        "observation_end": str(ctx.as_of - dt.timedelta(days=1)),
        "customers_fitted": buyers,
        "repeat_customers": repeat.height,
        "repeat_customers_without_spend": repeat.height - paying.height,
        "customers_without_purchase": customers.height - buyers,
        "bgnbd": bg.to_dict(),
        "gamma_gamma": gg.to_dict(),
        # Gamma-Gamma assumes spend independent of frequency: a correlation far from 0 says it does not hold.
        "frequency_monetary_correlation": None if corr is None or not np.isfinite(corr) else float(corr),
    }


def _fmt(params: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in params.items())


def _outputs(p: Mapping[str, Any]) -> tuple[Output, ...]:
    return (
        Output("clv_p_alive", "probability the customer is still active (BG/NBD)", dtype=pl.Float64),
        Output("clv_expected_purchases", "expected purchase days over the horizon (BG/NBD)", dtype=pl.Float64),
        Output("clv_expected_value", "expected mean value of a future purchase (Gamma-Gamma)", dtype=pl.Float64),
        Output("clv", "customer lifetime value over the horizon, discounted", dtype=pl.Float64),
        Output("clv_tier", "value tier by CLV: high, medium, low", labels=TIERS),
    )


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    fitted = ctx.fit or {}
    bg, gg = fitted["bgnbd"]["params"], fitted["gamma_gamma"]["params"]
    scale = _UNIT_DAYS[p["time_unit"]]
    unit, months, rate = p["time_unit"], p["horizon_months"], p["discount_rate"]
    x, tx, T, m = (pl.col(c) for c in SUMMARY_COLUMNS)
    tx, T = tx / scale, T / scale
    has = x.is_not_null()

    # P(alive) and E[M] in closed form, as Polars expressions.
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    log_div = (r + x) * ((alpha + T) / (alpha + tx)).log() + (a / (b + x.clip(lower_bound=1) - 1)).log()
    alive = pl.when(x == 0).then(1.0).when(has).then(1 / (1 + log_div.exp()))
    pp, q, v = gg["p"], gg["q"], gg["v"]
    weight = pp * x / (pp * x + q - 1)
    value = (1 - weight) * (v * pp / (q - 1)) + weight * m

    # The purchases need the hypergeometric function: computed in NumPy/SciPy over the distinct (x, T).
    def predictions(which: str):
        def run(batch: pl.Series) -> pl.Series:
            frame = batch.struct.unnest()
            keep = frame["x"].is_not_null().to_numpy()
            out = np.full(frame.height, np.nan)
            h = models.Histories(frame["x"].to_numpy()[keep], frame["tx"].to_numpy()[keep],
                                 frame["T"].to_numpy()[keep])
            if which == "purchases":
                out[keep] = models.expected_purchases(bg, months * models.MONTH[unit], h)
            else:
                out[keep] = models.discounted_value(bg, months, rate, unit, h, frame["value"].to_numpy()[keep])
            return pl.Series(out).fill_nan(None)
        return run

    history = [x.alias("x"), tx.alias("tx"), T.alias("T")]
    inputs = pl.struct(*history, pl.col("clv_expected_value").alias("value"))
    clv = pl.col("clv")
    rank = clv.rank("min", descending=True)
    n = clv.count()
    labels = pl.Enum(list(TIERS))
    tier = (pl.when(clv.is_null()).then(pl.lit(None, labels))
            .when(rank <= (n * p["high_share"]).ceil()).then(pl.lit("high", labels))
            .when(rank <= (n * p["medium_share"]).ceil()).then(pl.lit("medium", labels))
            .otherwise(pl.lit("low", labels)))
    return {
        "clv_p_alive": alive,
        "clv_expected_purchases": pl.struct(*history).map_batches(predictions("purchases"), return_dtype=pl.Float64),
        "clv_expected_value": pl.when(has).then(value),
        "clv": inputs.map_batches(predictions("clv"), return_dtype=pl.Float64),
        "clv_tier": tier,
    }


CLV = Classifier(
    name="clv",
    description="Customer lifetime value: BG/NBD purchases, Gamma-Gamma spend, CLV and tiers by CLV",
    outputs=_outputs,
    params=(
        ParamSpec("horizon_months", "int", 12, "CLV and expected purchases over this many months.",
                  min=1, max=600, step=1),
        ParamSpec("discount_rate", "float", 0.01, "Monthly discount rate of the CLV's cash flows.",
                  min=0, max=1, step=0.001),
        ParamSpec("time_unit", "str", "days", "Time unit of the fit: days, or weeks (days / 7).",
                  choices=("days", "weeks")),
        ParamSpec("penalizer", "float", 0.0, "L2 penalty on the parameters (lifetimes' penalizer_coef).",
                  min=0, max=100, step=0.001),
        ParamSpec("min_repeat_customers", "int", 10, "Fewer customers with a repeat purchase than this: no fit.",
                  min=2, max=1_000_000, step=1),
        ParamSpec("high_share", "float", 0.2, "Share of customers (by CLV, highest first) in the high tier.",
                  min=0, max=1, step=0.01),
        ParamSpec("medium_share", "float", 0.5, "Cumulative share of customers in the high and medium tiers.",
                  min=0, max=1, step=0.01),
    ),
    requires=SUMMARY_COLUMNS,
    expressions=_expressions,
    check=_check,
    fit=fit,
    by_default=False,
)


@hookimpl
def register_classifiers(register) -> None:
    register(CLV)
