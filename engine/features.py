"""Per-customer features in one pass over the transactions.

Everything tierbook knows about a customer comes from a single lazy
``group_by("customer_id")`` over the transactions, collected once (with the
streaming engine). Nothing downstream reads the transactions again.

Built-in features
-----------------
=================  ============================================================
recency_days       days from the last transaction to ``as_of`` (1 = the day before)
frequency          distinct orders containing at least one line with a positive
                   amount (a cancellation-only invoice is not an order)
monetary           net revenue: the sum of all amounts, returns included
first_order        day of the customer's first transaction (any line)
last_order         day of the customer's last transaction (any line)
tenure_days        days from the first transaction to ``as_of``
avg_order_value    monetary / frequency (null when frequency is 0)
returns            number of lines with a negative amount (returned or cancelled lines)
returned_value     sum of the negative amounts, as a positive number
=================  ============================================================

``as_of`` is exclusive: transactions dated on or after it are not used (they
are counted as unusable rows). It defaults to the day after the last
transaction, so the same file always gives the same result.

Customers from a customer table who have no usable transaction are kept, with
``frequency`` 0, ``monetary`` 0 and null dates: they are *prospects*.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from .classifier import Feature
from .data import AMOUNT_SCALE, Transactions
from .errors import DataError

__all__ = ["BUILTIN_FEATURES", "FeatureResult", "LoadReport", "compute_features", "REJECT_REASONS"]

BUILTIN_FEATURES: dict[str, str] = {
    "recency_days": "days from the last transaction to as_of",
    "frequency": "distinct orders with at least one positive line",
    "monetary": "net revenue, returns included",
    "first_order": "day of the first transaction",
    "last_order": "day of the last transaction",
    "tenure_days": "days from the first transaction to as_of",
    "avg_order_value": "monetary / frequency",
    "returns": "lines with a negative amount",
    "returned_value": "sum of negative amounts, as a positive number",
}

REJECT_REASONS = {
    "null_customer": "customer_id is empty",
    "null_date": "order_date is empty",
    "null_amount": "amount is empty",
    "after_as_of": "order_date is on or after as_of",
}


@dataclass
class LoadReport:
    """What happened to every input row and customer."""

    source: str
    rows: int = 0
    rows_used: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    customers_with_transactions: int = 0
    customers_without_usable_rows: int = 0
    #: of those, customers of the customer table: they are kept, as prospects
    unusable_in_table: int = 0
    customers_from_table: int = 0
    prospects: int = 0
    customers: int = 0
    net_revenue: float = 0.0

    def lines(self) -> list[str]:
        """Human-readable lines for the terminal."""
        out = [f"{self.source}: {self.rows:,} rows, {self.rows_used:,} used"]
        for key, count in self.rejected.items():
            if count:
                out.append(f"  not used: {count:,} rows where {REJECT_REASONS[key]}")
        dropped = self.customers_without_usable_rows - self.unusable_in_table
        if dropped:
            out.append(f"  {dropped:,} customers have no usable row and are not classified")
        if self.unusable_in_table:
            out.append(f"  {self.unusable_in_table:,} customers have no usable row and are prospects "
                       f"(they are in the customer table)")
        out.append(
            f"customers: {self.customers:,} ({self.customers_with_transactions:,} with transactions"
            + (f", {self.prospects:,} prospects from the customer table" if self.customers_from_table else "")
            + f"); net revenue {self.net_revenue:,.2f}"
        )
        return out

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FeatureResult:
    customers: pl.DataFrame
    as_of: dt.date
    report: LoadReport


_SCALE_DIGITS = len(str(AMOUNT_SCALE)) - 1


def to_amount(units: pl.Expr) -> pl.Expr:
    """Integer units of 1/AMOUNT_SCALE to amounts, each the float nearest its exact decimal value.

    A plain division by the constant is not enough: Polars multiplies by the
    reciprocal, one unit in the last place off (77700 / 10000 gives 7.7700000000000005).

    >>> pl.select(to_amount(pl.Series([77700, -1, 0]))).to_series().to_list()
    [7.77, -0.0001, 0.0]
    """
    return (units.cast(pl.Decimal(38, _SCALE_DIGITS)) / AMOUNT_SCALE).cast(pl.Float64)


def _aggregations(tx: Transactions, as_of: dt.date | None, plugin_features: Mapping[str, Feature]):
    """Row-level preparation and the aggregation list for the single group_by."""
    date, units = pl.col("order_date"), pl.col("amount_units")
    usable = date.is_not_null() & units.is_not_null()
    if as_of is not None:
        usable = usable & (date < pl.lit(as_of))
    prepared = tx.frame.with_columns(
        pl.when(usable).then(date).alias("order_date"),
        pl.when(usable).then(units).alias("amount_units"),
        date.is_null().alias("_null_date"),
        (date.is_not_null() & units.is_null()).alias("_null_amount"),
        *([(date >= pl.lit(as_of)).fill_null(False).alias("_after_as_of")] if as_of is not None else []),
    )
    # Plugins aggregate over the canonical names, usable rows only.
    prepared = prepared.with_columns(to_amount(pl.col("amount_units")).alias("amount"))
    if tx.has_order_id:
        prepared = prepared.with_columns(pl.col("order_key").alias("order_id"))

    u, key = pl.col("amount_units"), pl.col("order_key")
    # frequency = distinct order keys over the positive lines. Written as
    # ``when(u > 0).then(key).n_unique()`` (every other line becomes null), which
    # the streaming group_by keeps as a per-group distinct count; a ``filter``
    # inside the aggregation gathers every group's values instead (~1.6x the
    # memory, slower). n_unique counts null as a value: _freq_nulls and
    # _freq_null_keys correct for it in compute_features (see _frequency).
    positive_key = pl.when(u > 0).then(key)
    aggs = [
        pl.len().alias("_rows"),
        pl.col("_null_date").sum().alias("_null_date"),
        pl.col("_null_amount").sum().alias("_null_amount"),
        positive_key.n_unique().alias("_freq_distinct"),
        positive_key.null_count().alias("_freq_nulls"),
        ((u > 0) & key.is_null()).sum().alias("_freq_null_keys"),
        u.sum().alias("_units"),
        pl.when(u < 0).then(u).sum().alias("_returned_units"),
        (u < 0).sum().alias("returns"),
        date.min().alias("first_order"),
        date.max().alias("last_order"),
        u.count().alias("_used"),
    ]
    if as_of is not None:
        aggs.append(pl.col("_after_as_of").sum().alias("_after_as_of"))
    for flag in [*tx.checks, *tx.tallies]:
        aggs.append(pl.col(flag).sum().alias(flag))
    for name, feat in plugin_features.items():
        if feat.agg is not None:
            aggs.append(feat.agg.alias(name))
    return prepared, aggs


def _frequency() -> pl.Expr:
    """Distinct order keys of the positive lines, from the three aggregates of :func:`_aggregations`.

    ``_freq_distinct`` counts null as one value, whether it came from a
    non-positive line (masked) or from a positive line without an order key;
    only the latter is an order.
    """
    masked_null = (pl.col("_freq_nulls") > 0) & (pl.col("_freq_null_keys") == 0)
    return pl.col("_freq_distinct") - masked_null.cast(pl.UInt32)


def compute_features(
    tx: Transactions,
    *,
    as_of: dt.date | None = None,
    customers: pl.DataFrame | None = None,
    plugin_features: Mapping[str, Feature] | None = None,
    streaming: bool = True,
    feature_owners: Mapping[str, str] | None = None,
) -> FeatureResult:
    """Run the single pass and return one row per customer with every feature.

    Raises :class:`~engine.errors.DataError` for an empty input, an
    unparseable value (naming its row), or a plugin feature that fails.
    """
    plugin_features = dict(plugin_features or {})
    prepared, aggs = _aggregations(tx, as_of, plugin_features)
    # The features are computed and sorted by customer inside the streaming query: its workers reuse the
    # group_by's memory, where each step on the collected table would add its columns on top of it
    # (bench/PROFILE.md). The sort at the end then finds the table sorted (nulls first, like
    # DataFrame.sort). as_of defaults to the day after the last dated row, customer id or not.
    day_after = pl.lit(as_of) if as_of is not None else pl.col("last_order").max() + pl.duration(days=1)
    query = (
        prepared.group_by("customer_id").agg(aggs).sort("customer_id")
        .with_columns(
            _frequency().cast(pl.Int64).alias("frequency"),
            to_amount(pl.col("_units")).alias("monetary"),
            pl.col("returns").cast(pl.Int64),
            to_amount(-pl.col("_returned_units").fill_null(0)).alias("returned_value"),
            (day_after - pl.col("last_order")).dt.total_days().alias("recency_days"),
            (day_after - pl.col("first_order")).dt.total_days().alias("tenure_days"),
        )
        .with_columns(
            pl.when(pl.col("frequency") > 0).then(pl.col("monetary") / pl.col("frequency")).alias("avg_order_value")
        )
    )
    try:
        grouped = query.collect(engine="streaming" if streaming else "auto")
    except pl.exceptions.ColumnNotFoundError as exc:
        raise _feature_error(plugin_features, feature_owners or {}, exc) from None
    except pl.exceptions.PolarsError as exc:
        from .data import explain_read_error

        raise DataError(f"{tx.describe()}: {explain_read_error(tx.path, tx.fmt, exc)}") from None

    for flag in tx.checks:
        if grouped[flag].sum():
            raise tx.locate(flag)
    tally_error = tx.tally_error({flag: int(grouped[flag].sum()) for flag in tx.tallies})
    if tally_error is not None:
        raise tally_error

    report = LoadReport(source=tx.describe())
    report.rows = int(grouped["_rows"].sum())
    if report.rows == 0:
        raise DataError(f"{tx.describe()}: no transactions (the file has a header but no rows)")
    # The day after the last dated row of the file, customer id or not.
    last_day = grouped["last_order"].max()
    # Each filter copies every column of the (one row per customer) table: only when something goes.
    null_group = grouped.filter(pl.col("customer_id").is_null())
    if null_group.height:
        grouped = grouped.filter(pl.col("customer_id").is_not_null())
    report.rejected["null_customer"] = int(null_group["_rows"].sum())
    report.rejected["null_date"] = int(grouped["_null_date"].sum())
    report.rejected["null_amount"] = int(grouped["_null_amount"].sum())
    if as_of is not None:
        report.rejected["after_as_of"] = int(grouped["_after_as_of"].sum())
    report.rows_used = int(grouped["_used"].sum())
    unusable = grouped.filter(pl.col("_used") == 0)
    report.customers_without_usable_rows = unusable.height
    if unusable.height:
        grouped = grouped.filter(pl.col("_used") > 0)
    report.customers_with_transactions = grouped.height
    if grouped.height == 0:
        why = "; ".join(line.strip() for line in report.lines()[1:-1])
        raise DataError(f"{tx.describe()}: no usable transactions ({why})")

    if as_of is None:
        if last_day >= dt.date.max:
            raise DataError(f"{tx.describe()}: the last date is {last_day}, the largest date there is, so the "
                            f"default as_of (the day after) does not exist; give --as-of")
        as_of = last_day + dt.timedelta(days=1)

    feats = grouped.select(
        "customer_id", "frequency", "monetary", "first_order", "last_order", "returns", "returned_value",
        "recency_days", "tenure_days", "avg_order_value",
        *[pl.col(n) for n, f in plugin_features.items() if f.agg is not None],
    )
    report.net_revenue = float(grouped["_units"].sum()) / AMOUNT_SCALE
    del grouped  # its other columns are not needed any more

    if customers is not None:
        feats = _join_customers(feats, customers, report)
        if unusable.height:
            ids, table_ids = _align_ids(unusable.select("customer_id"), customers.select("customer_id"))
            report.unusable_in_table = int(ids["customer_id"].is_in(table_ids["customer_id"].implode()).sum())
    report.customers = feats.height

    # Prospects from the customer table have no dates and no orders: their recency, tenure and average
    # order value are null, as computed above.
    order = ["customer_id", *BUILTIN_FEATURES]
    feats = feats.select(*order, pl.exclude(order))
    derived = {n: f for n, f in plugin_features.items() if f.derive is not None}
    if derived:
        try:
            feats = feats.with_columns([f.derive.alias(n) for n, f in derived.items()])
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"a plugin's derived feature failed: {str(exc).strip().splitlines()[0]}") from None
    feats = feats.sort("customer_id")
    return FeatureResult(customers=feats, as_of=as_of, report=report)


def _feature_error(features: Mapping[str, Feature], owners: Mapping[str, str], exc: Exception) -> DataError:
    """Name the plugin feature that uses a column the transactions do not have."""
    canonical = {"customer_id": pl.String, "order_id": pl.String, "order_date": pl.Date, "amount": pl.Float64}
    empty = pl.LazyFrame(schema=canonical)
    for name, feat in features.items():
        if feat.agg is None:
            continue
        try:
            empty.group_by("customer_id").agg(feat.agg.alias(name)).collect_schema()
        except pl.exceptions.ColumnNotFoundError as err:
            missing = str(err).strip().splitlines()[0]
            return DataError(f"feature {name!r} of plugin {owners.get(name, '(unknown)')} uses a column the "
                             f"transactions do not have ({missing}); it may use {', '.join(canonical)}")
        except pl.exceptions.PolarsError:
            continue
    return DataError(f"a plugin feature uses a column that does not exist: {str(exc).splitlines()[0]}")


def _join_customers(feats: pl.DataFrame, table: pl.DataFrame, report: LoadReport) -> pl.DataFrame:
    report.customers_from_table = table.height
    feats, table = _align_ids(feats, table)
    joined = feats.join(table, on="customer_id", how="full", coalesce=True)
    prospects = joined["frequency"].is_null() & joined["first_order"].is_null()
    report.prospects = int(prospects.sum())
    return joined.with_columns(
        pl.col("frequency").fill_null(0),
        pl.col("monetary").fill_null(0.0),
        pl.col("returns").fill_null(0),
        pl.col("returned_value").fill_null(0.0),
    )


def _align_ids(feats: pl.DataFrame, table: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give both tables' ``customer_id`` one type so that the same customer matches.

    The table's ids take the transactions' type when every one converts to it and
    back unchanged (text ``"12346"`` or float ``12346.0`` to integer ``12346``);
    otherwise (``"007"`` is not the number 7) both are compared as text.
    """
    left, right = feats["customer_id"], table["customer_id"]
    if left.dtype == right.dtype:
        return feats, table
    try:
        converted = right.cast(left.dtype, strict=True)
        if converted.null_count() == 0 and converted.cast(right.dtype).equals(right):
            return feats, table.with_columns(converted)
    except pl.exceptions.PolarsError:
        pass
    return (feats.with_columns(pl.col("customer_id").cast(pl.String)),
            table.with_columns(pl.col("customer_id").cast(pl.String)))


def rejected_rows(tx: Transactions, as_of: dt.date | None) -> pl.LazyFrame:
    """The rows not used, with their 1-based ``row`` number and ``reason`` (a second, opt-in read).

    Columns are the source's own, so the file can be fixed and fed back.
    """
    date, units = pl.col("order_date"), pl.col("amount_units")
    reason = (
        pl.when(pl.col("customer_id").is_null()).then(pl.lit(REJECT_REASONS["null_customer"]))
        .when(date.is_null()).then(pl.lit(REJECT_REASONS["null_date"]))
        .when(units.is_null()).then(pl.lit(REJECT_REASONS["null_amount"]))
    )
    if as_of is not None:
        reason = reason.when(date >= pl.lit(as_of)).then(pl.lit(REJECT_REASONS["after_as_of"]))
    from .data import read_transactions

    raw = tx.raw if tx.raw is not None else tx.frame
    # The row number is taken at the source and carried through the mapping with its row; the
    # reasons are joined back on it. Two scans set side by side do not line up: Polars can return a
    # Parquet scan's rows out of order when a select holds only computed columns, and rows with a
    # customer id were written as "customer_id is empty".
    numbered = raw.with_row_index("_tierbook_row", offset=1)
    again = read_transactions(numbered, tx.mapping, date_format=tx.date_format, keep=("_tierbook_row",))
    reasons = again.frame.select("_tierbook_row", reason.alias("reason")).filter(pl.col("reason").is_not_null())
    both = numbered.join(reasons, on="_tierbook_row", how="inner").sort("_tierbook_row")
    return both.select(pl.col("_tierbook_row").alias("row"), pl.exclude("_tierbook_row"))
