"""KPIs per period between snapshots, the cohort table, and historical value per customer by class.

A *period* is the time between two consecutive snapshots: period ``i`` is
``[as_of[i-1], as_of[i])`` (each ``as_of`` exclusive, as in a run), and the
period before the first snapshot has the same length. A customer is *active* in
a period when they have at least one purchase line (amount > 0) in it: a
customer with only returns (or zero amounts) in a period is not a buyer of that
period. Every definition is in :data:`KPI_DEFINITIONS`, written next to each
figure in ``kpis.csv`` and ``summary.json`` (and in docs/time.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from .classifier import Output
from .features import NET_REVENUE, to_amount, to_units

__all__ = ["KPI_DEFINITIONS", "COHORT_DEFINITIONS", "VALUE_DEFINITIONS", "kpi_table", "kpi_long", "cohort_table",
           "value_by_class", "values_of", "values_from_combos", "period_stats", "KPI_SCHEMA", "COHORT_SCHEMA",
           "VALUE_SCHEMA"]

#: Each KPI's definition, as written next to it. P is the period, P-1 the period before it.
KPI_DEFINITIONS: dict[str, str] = {
    "customers": "customers in the snapshot at the end of P (every customer with a usable transaction before its "
                 "as_of, and prospects)",
    "active": "customers with at least one purchase (a line with amount > 0) in P; returns alone do not count",
    "new": "active customers whose first purchase ever is in P",
    "reactivated": "active customers whose first purchase is before P and who made no purchase in P-1",
    "retained": "customers active in both P-1 and P",
    "churned": "customers active in P-1 and not in P",
    "active_previous": "customers active in P-1",
    "retention_rate": "retained / active_previous (active in both P-1 and P over active in P-1)",
    "churn_rate": "churned / active_previous (1 - retention_rate)",
    "revenue": "net revenue of P: every line's amount in P, returns included",
    "revenue_retention": "net revenue in P of the customers active in P-1, over their net revenue in P-1",
}
COHORT_DEFINITIONS: dict[str, str] = {
    "cohort": "the month (or quarter) of the customer's first purchase, as its first day",
    "cohort_size": "customers whose first purchase falls in the cohort (as of the last snapshot)",
    "active": "customers of the cohort with a purchase in the period",
    "active_share": "active / cohort_size",
    "revenue": "net revenue of the cohort's customers in the period",
}
VALUE_DEFINITIONS: dict[str, str] = {
    "customers": "customers with the label in the snapshot",
    "revenue": "their net revenue (monetary: all history up to the snapshot's as_of)",
    "value_per_customer": "revenue / customers: historical value per customer of the class",
}

KPI_SCHEMA = {"period": pl.Int32, "period_start": pl.Date, "as_of": pl.Date, "customers": pl.Int64,
              "active": pl.Int64, "new": pl.Int64, "reactivated": pl.Int64, "retained": pl.Int64,
              "churned": pl.Int64, "active_previous": pl.Int64, "retention_rate": pl.Float64,
              "churn_rate": pl.Float64, "revenue": pl.Float64, "revenue_retention": pl.Float64}


def _starts(dates: Sequence[dt.date], previous: dt.date | None) -> list[dt.date | None]:
    """The start of each snapshot's period: the previous snapshot, and ``previous`` for the first."""
    return [previous, *dates[:-1]]


def period_stats(activity: pl.DataFrame) -> dict[int, dict[str, Any]]:
    """Per period of ``activity`` (see :func:`kpi_table`): buyers, new, retained, churned the period after,
    and revenue units, as :func:`kpi_table` reads them."""
    # One row per customer and period they have a line in, sorted: whether they bought in the period before
    # and after is the neighbouring row's business (period -1 holds every line before period 0).
    rows_ = activity if _in_order(activity) else activity.sort("customer_id", "period")
    same_prev = (pl.col("customer_id") == pl.col("customer_id").shift(1)).fill_null(False)
    same_next = (pl.col("customer_id") == pl.col("customer_id").shift(-1)).fill_null(False)
    buys = pl.col("purchases") > 0
    bought_before = same_prev & (pl.col("period").shift(1) == pl.col("period") - 1) & (pl.col("purchases").shift(1) > 0)
    bought_after = same_next & (pl.col("period").shift(-1) == pl.col("period") + 1) & (pl.col("purchases").shift(-1) > 0)
    earlier_buys = buys.cast(pl.Int64).cum_sum() - buys.cast(pl.Int64)
    base = pl.when(~same_prev).then(earlier_buys).forward_fill()
    first_buy = buys & (earlier_buys == base)  # no purchase in an earlier row of the customer: first ever
    # lazily, in memory: the flags share their shifts (an eager select computes each again)
    flagged = rows_.lazy().select("period", "revenue_units", buys.alias("buys"),
                                  bought_before.fill_null(False).alias("before"),
                                  bought_after.fill_null(False).alias("after"), first_buy.alias("first"))
    by_period = flagged.group_by("period").agg(
        pl.col("buys").sum().alias("active"),
        (pl.col("buys") & pl.col("first")).sum().alias("new"),
        (pl.col("buys") & pl.col("before")).sum().alias("retained"),
        (pl.col("buys") & ~pl.col("after")).sum().alias("churned_next"),
        pl.col("revenue_units").sum().alias("units"),
        pl.col("revenue_units").filter(pl.col("before")).sum().alias("kept_now"),
        pl.col("revenue_units").filter(pl.col("buys")).sum().alias("buyers_units"),
    ).collect(engine="in-memory")
    return {r["period"]: r for r in by_period.iter_rows(named=True)}


def _in_order(activity: pl.DataFrame) -> bool:
    """Whether ``activity``'s rows are sorted by customer, then period, one row each (as the snapshot scan gives
    them): checked row by row, a tenth of a sort's cost."""
    cid, period = pl.col("customer_id"), pl.col("period")
    after = (cid > cid.shift(1)) | ((cid == cid.shift(1)) & (period > period.shift(1)))
    if activity["customer_id"].null_count() or activity["period"].null_count():
        return False
    return bool(activity.select(after.slice(1).all()).item())


def kpi_table(activity: pl.DataFrame | None, tables: Sequence[pl.DataFrame], dates: Sequence[dt.date],
              previous: dt.date | None, *, stats: Mapping[int, Mapping[str, Any]] | None = None) -> pl.DataFrame:
    """One row per period between two snapshots (period ``i`` ends at ``dates[i]``, ``i >= 1``).

    ``activity`` has one row per customer and period with a line in it
    (``customer_id``, ``period``, ``purchases``, ``revenue_units``; period -1
    holds every line before period 0), as :class:`engine.snapshots.SnapshotFeatures`
    gives it; ``tables`` the snapshots' customer tables (their sizes).
    Columns and meanings: :data:`KPI_DEFINITIONS`. ``stats``: :func:`period_stats` of ``activity``, when
    counted already (``activity`` is then not read, and may be None).
    """
    if stats is None and activity is None:
        raise ValueError("kpi_table: give the activity, or its period_stats")
    starts = _starts(dates, previous)
    stats = period_stats(activity) if stats is None else stats
    rows = []
    for i in range(1, len(dates)):
        c, p = stats.get(i, {}), stats.get(i - 1, {})
        active, new, retained = int(c.get("active") or 0), int(c.get("new") or 0), int(c.get("retained") or 0)
        before = int(p.get("active") or 0)
        churned = int(p.get("churned_next") or 0)
        prev_units, now_units = int(p.get("buyers_units") or 0), int(c.get("kept_now") or 0)
        rows.append({
            "period": i, "period_start": starts[i], "as_of": dates[i], "customers": tables[i].height,
            "active": active, "new": new, "reactivated": active - new - retained, "retained": retained,
            "churned": churned, "active_previous": before,
            "retention_rate": retained / before if before else None,
            "churn_rate": churned / before if before else None,
            "_revenue": int(c.get("units") or 0),
            "revenue_retention": now_units / prev_units if prev_units > 0 else None,
        })
    if not rows:
        return pl.DataFrame(schema=KPI_SCHEMA)
    frame = pl.DataFrame(rows, schema_overrides={"_revenue": pl.Int128, "period_start": pl.Date})
    return frame.with_columns(to_amount(pl.col("_revenue")).alias("revenue")).select(list(KPI_SCHEMA)).cast(KPI_SCHEMA)


def kpi_long(kpis: pl.DataFrame) -> pl.DataFrame:
    """The KPI table long, one figure a row with its definition beside it (``kpis.csv``)."""
    names = [k for k in KPI_DEFINITIONS if k in kpis.columns]
    long = kpis.unpivot(index=["period", "period_start", "as_of"], on=names, variable_name="kpi",
                        value_name="value").with_columns(pl.col("value").cast(pl.Float64))
    defs = pl.DataFrame({"kpi": list(KPI_DEFINITIONS), "definition": list(KPI_DEFINITIONS.values())})
    order = pl.DataFrame({"kpi": names, "_k": list(range(len(names)))})
    return (long.join(defs, on="kpi", how="left").join(order, on="kpi").sort("period", "_k").drop("_k"))


COHORT_SCHEMA = {"cohort": pl.Date, "cohort_size": pl.Int64, "period": pl.Int32, "period_start": pl.Date,
                 "as_of": pl.Date, "active": pl.Int64, "active_share": pl.Float64, "revenue": pl.Float64}


def cohort_table(activity: pl.DataFrame, last: pl.DataFrame, dates: Sequence[dt.date], previous: dt.date | None,
                 grain: str = "month") -> pl.DataFrame:
    """Customers by month (``grain="quarter"``: quarter) of first purchase, per period: share active, revenue.

    One row per (cohort, period) from the period the cohort's first month or
    quarter began in or before: ``cohort_size`` customers first bought in the
    cohort, ``active`` of them bought in the period (``active_share`` of the
    cohort), ``revenue`` is their net revenue in it. Customers who never
    bought (returns only, prospects) belong to no cohort. See
    :data:`COHORT_DEFINITIONS`.
    """
    # each customer's cohort as a whole number (months or quarters since year 0), turned into its first day only
    # for the few cohorts there are: the customers are grouped by an integer (0.04 CPU-s at 1M customers, where
    # truncating every first purchase to its month's first day took 0.06 and grouping by the date more)
    first = pl.col("first_order")
    per_year, months = {"month": (12, 1), "quarter": (4, 3)}[grain]
    index = first.dt.year().cast(pl.Int64) * per_year + (first.dt.month().cast(pl.Int64) - 1) // months
    cohorts = last.select("customer_id", index.alias("_cohort")).filter(pl.col("_cohort").is_not_null())
    sizes = cohorts.group_by("_cohort").agg(pl.len().cast(pl.Int64).alias("cohort_size"))
    sizes = sizes.with_columns(pl.Series("cohort", [dt.date(i // per_year, i % per_year * months + 1, 1)
                                                    for i in sizes["_cohort"]], dtype=pl.Date))
    starts = _starts(dates, previous)
    periods = pl.DataFrame({"period": list(range(len(dates))), "period_start": starts, "as_of": list(dates)},
                           schema={"period": pl.Int32, "period_start": pl.Date, "as_of": pl.Date})
    # a left join and a filter: the rows of customers in a cohort, as an inner join keeps them, but merged (both
    # sides sorted by customer) where the inner join hashes, at half its cost; then grouped by one integer made
    # of the cohort and the period (every period from -1 is below the step)
    step = max(len(dates), 1) + 1
    per = (activity.lazy().join(cohorts.lazy(), on="customer_id", how="left").filter(pl.col("_cohort").is_not_null())
           .group_by((pl.col("_cohort") * step + (pl.col("period").cast(pl.Int64) + 1)).alias("_key"))
           .agg((pl.col("purchases") > 0).sum().cast(pl.Int64).alias("active"),
                pl.col("revenue_units").sum().alias("_units"))
           .select((pl.col("_key") // step).alias("_cohort"), (pl.col("_key") % step - 1).cast(pl.Int32).alias("period"),
                   "active", "_units")
           .collect(engine="in-memory"))
    grid = sizes.join(periods, how="cross").filter(pl.col("cohort") < pl.col("as_of"))
    out = (grid.join(per, on=["_cohort", "period"], how="left")
           .with_columns(pl.col("active").fill_null(0), pl.col("_units").fill_null(0))
           .with_columns((pl.col("active") / pl.col("cohort_size")).alias("active_share"),
                         to_amount(pl.col("_units")).alias("revenue")))
    return out.select(list(COHORT_SCHEMA)).cast(COHORT_SCHEMA).sort("cohort", "period")


VALUE_SCHEMA = {"as_of": pl.Date, "classifier": pl.String, "column": pl.String, "label": pl.String,
                "rank": pl.Int64, "customers": pl.Int64, "revenue": pl.Float64, "value_per_customer": pl.Float64}


def value_by_class(tables: Sequence[pl.DataFrame], dates: Sequence[dt.date],
                   outputs: Sequence[tuple[str, Output]]) -> pl.DataFrame:
    """Historical value per customer by class: per snapshot, label column and label (best first, then
    ``(none)`` for customers without a label): customers, revenue, revenue per customer."""
    frames = [frame for table, as_of in zip(tables, dates) for frame in values_of(table, as_of, outputs)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=VALUE_SCHEMA)


def values_of(table: pl.DataFrame, as_of: dt.date, outputs: Sequence[tuple[str, Output]]) -> list[pl.DataFrame]:
    """:func:`value_by_class`'s rows of one snapshot, one frame per label column."""
    # the revenue in units once per table, every label column's ranks beside it
    ranks = table.select(to_units(pl.col(NET_REVENUE)).cast(pl.Int128).alias("_u"),
                         *[pl.col(o.column).to_physical().cast(pl.Int64).alias(f"_rank_{k}")
                           for k, (_, o) in enumerate(outputs)])
    # one pass over the customers for every label column: customers and revenue per combination of
    # labels (at most the product of the label counts, a few hundred rows), then each column from that
    keys = [f"_rank_{k}" for k in range(len(outputs))]
    combos = (ranks.group_by(keys).agg(pl.len().cast(pl.Int64).alias("customers"), pl.col("_u").sum())
              if keys else None)
    return values_from_combos(combos, table.schema, as_of, outputs)


def values_from_combos(combos: pl.DataFrame | None, schema: Mapping[str, pl.DataType], as_of: dt.date,
                       outputs: Sequence[tuple[str, Output]]) -> list[pl.DataFrame]:
    """:func:`values_of` from a table's combinations of labels: ``_rank_<k>`` (output ``k``'s label code, null:
    none), ``customers`` and ``_u`` (their revenue units), one row per combination seen (``schema``: the
    table's, for the labels)."""
    frames = []
    for k, (name, output) in enumerate(outputs):
        dtype = schema[output.column]
        labels = dtype.categories.to_list() if isinstance(dtype, pl.Enum) else list(output.labels)
        stats = (combos.group_by(pl.col(f"_rank_{k}").alias("rank"))
                 .agg(pl.col("customers").sum(), pl.col("_u").sum()))
        grid = pl.DataFrame({"rank": list(range(len(labels))), "label": labels},
                            schema={"rank": pl.Int64, "label": pl.String})
        found = grid.join(stats, on="rank", how="left")
        none = stats.filter(pl.col("rank").is_null())
        if none.height:
            found = pl.concat([found, none.select(pl.col("rank"), pl.lit("(none)").alias("label"),
                                                  "customers", "_u")])
        frames.append(found.with_columns(
            pl.col("customers").fill_null(0), pl.col("_u").fill_null(0),
            pl.lit(as_of).alias("as_of"), pl.lit(name).alias("classifier"), pl.lit(output.column).alias("column"),
        ).with_columns(to_amount(pl.col("_u")).alias("revenue")).with_columns(
            (pl.col("revenue") / pl.col("customers")).fill_nan(None).alias("value_per_customer")
        ).select(list(VALUE_SCHEMA)).cast(VALUE_SCHEMA))
    return frames


def definitions() -> dict[str, Any]:
    """Every definition, for ``summary.json``."""
    return {"kpis": KPI_DEFINITIONS, "cohorts": COHORT_DEFINITIONS, "values": VALUE_DEFINITIONS}
