"""Per-customer features in one pass over the transactions.

Everything tierbook knows about a customer comes from one scan of the
transactions, feeding a lazy ``group_by("customer_id")`` and two small queries
collected with it (the streaming engine; see :func:`_queries`). Nothing
downstream reads the transactions again.

Built-in features
-----------------
Each built-in feature is described once, in :data:`engine.feature_table.FEATURES`
(name, dtype, meaning, how it is computed); this module translates that table
into the Polars pass (:func:`_aggregations`, :class:`_PolarsOps`), and
``docs/features.md`` lists it. A return is not a purchase: a customer whose
last line is a cancellation keeps the recency of their last purchase, and a
customer with usable rows but no purchase (only returns or zero amounts) has
``frequency`` 0 and null ``first_order``, ``last_order``, ``recency_days`` and
``tenure_days``; only ``last_activity`` tells when they were last seen
(issue 10, item 6).

``as_of`` is exclusive: transactions dated on or after it are not used (they
are counted as unusable rows). It defaults to the day after the last
transaction, so the same file always gives the same result.

Customers from a customer table who have no usable transaction are kept, with
``frequency`` 0, ``monetary`` 0 and null dates: they are *prospects*.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from decimal import Decimal

import polars as pl

from .classifier import Feature
from .data import AMOUNT_SCALE, Transactions
from .errors import DataError, option
from .feature_table import FEATURES, Agg, Derived

__all__ = ["BUILTIN_FEATURES", "PLUGIN_ROW_COLUMNS", "FeatureResult", "LoadReport", "compute_features", "complete_features",
           "finish_aggregated", "REJECT_REASONS", "to_amount", "to_units"]

#: name -> description of every built-in feature, in the customer table's column order.
BUILTIN_FEATURES: dict[str, str] = {f.name: f.description for f in FEATURES}
#: The columns of the usable rows a plugin's ``agg`` or ``table`` feature reads, with their dtypes
#: (``customer_id`` takes the data's own type; ``order_id`` is there when the data has one).
#: ``amount_units`` is the amount in exact integer units of 1/``AMOUNT_SCALE``: a sum of units is the
#: same whatever the order of the lines, where a float sum of ``amount`` is not.
PLUGIN_ROW_COLUMNS: dict[str, pl.DataType] = {"customer_id": pl.String(), "order_id": pl.String(),
                                              "order_date": pl.Date(), "amount": pl.Float64(),
                                              "amount_units": pl.Int64()}
#: The feature whose total is the run's net revenue (reconciliation).
NET_REVENUE = "monetary"

REJECT_REASONS = {
    "null_customer": "customer_id is empty",
    "null_date": "order_date is empty",
    "null_amount": "amount is empty",
    "after_as_of": "order_date is on or after as_of",
}


#: How a feature pass counts a customer's orders (``LoadReport.orders_counted``, summary.json's
#: ``input.orders_counted``).
ORDER_PATHS = {
    "boundaries": "order boundaries",
    "positions": "order ids as array positions",
    "hashing": "hashing",
}


#: An explicit as_of more than this many days after the last usable transaction gets a warning.
IMPLAUSIBLE_GAP_DAYS = 365


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
    #: What the reader decided from the data, e.g. which order text dates like 01/02/2011 were read in.
    notes: list[str] = field(default_factory=list)
    #: What looks wrong but does not stop the run (an as_of long after the data).
    warnings: list[str] = field(default_factory=list)
    #: Counted apart from the customer table, for the reconciliation: the usable rows' amounts summed
    #: by the scan itself (exact units), and the customer table's ids that have no usable row.
    scanned_units: int = 0
    table_only: int = 0
    #: How the orders (``frequency``) were counted: ``"boundaries"`` (the input is written order by order, which
    #: the pass itself proved), ``"positions"`` (integer order ids as positions of an array holding each order's
    #: customer, see :func:`_dense_pass`) or ``"hashing"`` (distinct order ids per customer); see
    #: :data:`ORDER_PATHS`.
    orders_counted: str = "hashing"
    #: Why that path: what the pass found about the input's order (one line).
    orders_check: str = ""
    #: With ``"boundaries"``: the customers whose orders were counted again by hashing, because some of their
    #: lines are not written order by order (see :func:`_order_flags`).
    orders_recounted: int = 0

    def lines(self) -> list[str]:
        """Human-readable lines for the terminal."""
        out = [f"{self.source}: {self.rows:,} rows, {self.rows_used:,} used"]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  warning: {warning}" for warning in self.warnings]
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
        if self.orders_check:
            out.append(f"  orders counted by {ORDER_PATHS[self.orders_counted]}: {self.orders_check}")
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("scanned_units", "table_only")}


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


def to_units(amounts: pl.Expr) -> pl.Expr:
    """Amounts (floats) to exact Int128 units of 1/AMOUNT_SCALE, each rounded to the nearest unit.

    The inverse of :func:`to_amount`: a customer's ``monetary`` gives back the
    units it was computed from (while it holds them exactly, below about 4.5e11),
    and a sum of units is exact, whatever the order or the size.

    >>> pl.select(to_units(pl.Series([7.77, 0.1 + 0.2, -0.0001, 1e15]))).to_series().to_list()
    [77700, 3000, -1, 10000000000000000000]
    """
    return amounts.cast(pl.Decimal(38, _SCALE_DIGITS)).to_physical()


#: While the amounts' absolute values add up to less than this (in units), no sum of them can leave Int64
#: (9.2e18): the feature pass sums in Int64. The float total that checks it is off by far less than the margin.
_INT64_SAFE = 2.0**62


def _usable(as_of: dt.date | None) -> pl.Expr:
    """A usable row: a customer, a date, an amount, before ``as_of``."""
    date, units, customer = pl.col("order_date"), pl.col("amount_units"), pl.col("customer_id")
    priced = customer.is_not_null() & date.is_not_null() & units.is_not_null()
    return priced & (date < pl.lit(as_of)) if as_of is not None else priced


def _side_queries(tx: Transactions, as_of: dt.date | None) -> tuple[pl.Expr, list[pl.Expr], list[pl.Expr]]:
    """What the exceptions and totals queries compute (see :func:`_scan`): the condition that lets every
    exceptional row through, the exceptions' aggregations by customer, and the totals' expressions."""
    date, units, key = pl.col("order_date"), pl.col("amount_units"), pl.col("order_key")
    usable, u = _usable(as_of), units
    zero, null_key = usable & (u == 0), usable & (u > 0) & key.is_null()
    # The cheapest condition that lets every such row through (it lets some others through too: the
    # aggregations below say which is which).
    exceptional = ~usable | (u == 0) | key.is_null()
    aggs = [
        pl.len().alias("rows"),
        (~usable).sum().alias("unusable"),
        date.is_null().sum().alias("null_date"),
        (date.is_not_null() & units.is_null()).sum().alias("null_amount"),
        *([((date >= pl.lit(as_of)) & units.is_not_null()).fill_null(False).sum().alias("after_as_of")]
          if as_of is not None else []),
        zero.any().alias("zero"),
        null_key.any().alias("null_key"),
        # The default as_of is the day after the last dated row with an amount, customer id or not.
        date.filter(date.is_not_null() & units.is_not_null()).max().alias("last_day"),
    ]
    totals = [pl.len().alias("rows"), *[pl.col(f).any().alias(f) for f in [*tx.checks, *tx.tallies]],
              u.abs().cast(pl.Float64).sum().alias("_gross_units"),
              # the scan's own revenue, apart from the group_by: the reconciliation compares them
              units.filter(usable).cast(pl.Int128).sum().alias("usable_units")]
    return exceptional, aggs, totals


def _scan(tx: Transactions, as_of: dt.date | None) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """The one scan of the transactions, as what every query of a feature pass starts from.

    Returns ``rows`` (the usable rows: a customer, a date, an amount, before
    ``as_of``, with the canonical ``amount`` and ``order_id``), ``exceptional``
    and ``totals`` (see :func:`_queries`); all three read one cached frame, so
    collected together (``collect_all``) they scan the source once.
    :mod:`engine.snapshots` builds its per-snapshot aggregations on the same
    ``rows``.
    """
    frame = tx.frame.cache()  # one scan feeding every query
    rows = frame.filter(_usable(as_of))
    # Plugins aggregate over the canonical names.
    rows = rows.with_columns(to_amount(pl.col("amount_units")).alias("amount"))
    if tx.has_order_id:
        rows = rows.with_columns(pl.col("order_key").alias("order_id"))
    condition, aggs, totals = _side_queries(tx, as_of)
    exceptional = frame.filter(condition).group_by("customer_id").agg(aggs)
    return rows, exceptional, frame.select(totals)


#: How many rows of the input :func:`_looks_ordered` reads before the pass to choose the path to try.
PROBE_ROWS = 10_000
#: The share of the orders in those rows that may be in doubt (out of place) for the boundary pass to be tried.
PROBE_DOUBT = 0.01


def _comparable(col: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, object] | None:
    """``col`` as values ordered by ``<`` with equality meaning the same id, and a value no larger than any of
    them (for a missing one); None if its dtype has no order here.

    Categorical ids compare by their codes: one column has one mapping, so equal codes are equal ids and the
    codes' order is a total order (any total order will do, see :func:`_order_flags`). Float ids have no NaN
    and no -0.0 here (:func:`engine.data._float_id`). The low value only keeps a missing key from hiding the
    keys before it; were it larger than a key, that key's run would only be counted again, never wrongly.
    """
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return col.to_physical(), pl.lit(0, pl.UInt32)
    if dtype.is_integer():
        return col, pl.lit(_lowest_int(dtype), dtype)
    if dtype.is_float():
        return col, pl.lit(float("-inf"), dtype)
    if isinstance(dtype, pl.String):
        return col, pl.lit("", pl.String)
    if isinstance(dtype, pl.Boolean):
        return col, pl.lit(False)
    if isinstance(dtype, (pl.Date, pl.Datetime)):
        return col, pl.lit(dt.date.min).cast(dtype)
    return None


def _lowest_int(dtype: pl.DataType) -> int:
    """The smallest value of an integer dtype.

    >>> _lowest_int(pl.Int64()), _lowest_int(pl.UInt8()), _lowest_int(pl.Int8())
    (-9223372036854775808, 0, -128)
    >>> _lowest_int(pl.Int16()), _lowest_int(pl.Int32()), _lowest_int(pl.Int128()) == -2**127
    (-32768, -2147483648, True)
    """
    if dtype.is_unsigned_integer():
        return 0
    return -(2 ** (8 * {pl.Int8: 1, pl.Int16: 2, pl.Int32: 4, pl.Int64: 8}.get(type(dtype), 16) - 1))


#: A run start in doubt adds this to ``_run`` besides 1: per customer, ``_run`` sums to run starts + this x
#: starts in doubt (while a customer has fewer than 2**32 lines, which :func:`_compute` checks).
_DOUBT = 2**32


#: The helper columns of :func:`_order_flags` (dropped again): counted line, previous counted line's customer,
#: the largest key of the counted lines before, run start.
_FLAG_COLUMNS = ("_flag_counted", "_flag_prev_customer", "_flag_max_key", "_flag_start")


def _order_flags(rows: pl.LazyFrame, schema: Mapping[str, pl.DataType]) -> pl.LazyFrame | None:
    """``rows`` (usable rows, in the input's order) with ``_run``, or None if the ids have no order here.

    The *counted* lines are the purchase lines (amount > 0) with an order key, in the input's order. A counted
    line *continues a run* when its order key equals the largest order key of the counted lines before it and
    its customer is the previous counted line's (lines of other kinds in between are not looked at); every
    other counted line *starts a run*. A run start is *fresh* when its order key is larger than the order key
    of every counted line before it: no counted line before had that key, so this (key, customer) pair is new.
    Every other run start is *in doubt*. ``_run`` is 1 for a fresh run start, ``1 + _DOUBT`` for one in doubt,
    0 for every other line.

    So for a customer none of whose run starts is in doubt, the run starts are exactly the distinct order keys
    of their purchase lines, what ``frequency`` counts (a sale without an order key is added as one order
    afterwards, as in the hashing path):

    * a fresh run start is a pair never counted before;
    * a line *i* of customer A that continues a run has the pair of an earlier counted line: the previous
      counted line *j* is A's too, and has *i*'s key. Were *j*'s key another, it would be below the largest key
      before *i* (which is *i*'s key), and so below the largest key before *j* (the largest did not change at
      *j*): *j* would not continue a run (its key is not the largest), so it would start one in doubt, and A
      has none;
    * so the first counted line of each of A's pairs starts a run, and a later one that starts a run is in
      doubt (its key was counted before): each pair is counted once.

    The customers with a run start in doubt are counted again by hashing (:func:`_recount`). On input written
    order by order with order ids that grow (as shops number their invoices) no run start is in doubt; an order
    out of place puts only its own customer in doubt. The customers in doubt are the same as with the earlier
    rule "a run starts where (key, customer) differs from the previous counted line's", which needed the
    previous counted key as well (one forward fill more; docs/decisions/0017).
    """
    key_low = _comparable(pl.col("order_key"), schema["order_key"])
    cust_low = _comparable(pl.col("customer_id"), schema["customer_id"])
    if key_low is None or cust_low is None:
        return None
    (key, low), (cust, _) = key_low, cust_low
    # In steps, each helper column computed once: Polars does not share a subexpression with a when/then
    # between columns, so written as one expression the forward fill and the start ran twice each
    # (the start is read by the doubt as well), about 0.2-0.4 CPU-s at 10M rows (bench/RESULTS.md).
    c, pc, mk, s = (pl.col(n) for n in _FLAG_COLUMNS)
    counted = (pl.col("amount_units") > 0) & pl.col("order_key").is_not_null()
    rows = rows.with_columns(counted.alias(_FLAG_COLUMNS[0]))
    rows = rows.with_columns(pl.when(c).then(cust).forward_fill().shift(1).alias(_FLAG_COLUMNS[1]),
                             pl.when(c).then(key).otherwise(low).cum_max().shift(1).alias(_FLAG_COLUMNS[2]))
    # No counted line before: the previous customer is null, so the line starts a run (a fresh one: the largest
    # key before is null on the first line, ``low`` after others, and ``low`` is no larger than any key; a key
    # equal to ``low`` is only counted again).
    rows = rows.with_columns((c & ~((key == mk) & (cust == pc)).fill_null(False)).alias(_FLAG_COLUMNS[3]))
    doubt = (s & (key <= mk)).fill_null(False)
    return rows.with_columns((s.cast(pl.Int64) + doubt.cast(pl.Int64) * _DOUBT).alias("_run")).drop(_FLAG_COLUMNS)


def _ordered_path_possible(tx: Transactions) -> str | None:
    """Why the boundary count cannot be used on ``tx`` at all (None: it can be tried)."""
    n_unique = [f.compute for f in _AGGREGATED if f.compute.op == "n_unique"]
    if any((a.column, a.rows) != ("order_key", "purchases") for a in n_unique):
        return "a built-in feature counts distinct values other than the order keys of purchases"
    schema = tx.frame.collect_schema()
    if _comparable(pl.col("order_key"), schema["order_key"]) is None:
        return f"order ids of type {schema['order_key']} have no order to check"
    if _comparable(pl.col("customer_id"), schema["customer_id"]) is None:
        return f"customer ids of type {schema['customer_id']} have no order to check"
    return None


def _looks_ordered(tx: Transactions, as_of: dt.date | None, rows: int = PROBE_ROWS) -> bool:
    """Whether the first ``rows`` rows of the input look written order by order (at most :data:`PROBE_DOUBT`
    of their run starts in doubt, see :func:`_order_flags`).

    Only a choice of which pass to try: the boundary pass checks every line itself. A failed read here is
    left to the pass, which reports it properly.
    """
    date, units, customer = pl.col("order_date"), pl.col("amount_units"), pl.col("customer_id")
    usable = customer.is_not_null() & date.is_not_null() & units.is_not_null()
    if as_of is not None:
        usable = usable & (date < pl.lit(as_of))
    head = tx.frame.head(rows)
    flagged = _order_flags(head.filter(usable), head.collect_schema())
    if flagged is None:
        return False
    try:
        starts, doubtful = flagged.select((pl.col("_run") > 0).sum().alias("starts"),
                                          (pl.col("_run") > 1).sum().alias("doubtful")).collect(engine="streaming").row(0)
    except pl.exceptions.PolarsError:
        return False
    return doubtful <= PROBE_DOUBT * starts


def _recount(tx: Transactions, as_of: dt.date | None, ids: pl.Series, streaming: bool) -> pl.DataFrame:
    """``customer_id`` and the exact order count (``frequency``) of the customers ``ids``, by hashing their order
    keys: the distinct order keys of their purchase lines, a missing one counting as one order."""
    date, units, customer = pl.col("order_date"), pl.col("amount_units"), pl.col("customer_id")
    usable = customer.is_not_null() & date.is_not_null() & units.is_not_null() & (units > 0)
    if as_of is not None:
        usable = usable & (date < pl.lit(as_of))
    name = next(f.name for f in _AGGREGATED if f.compute.op == "n_unique")
    return (tx.frame.filter(usable & customer.is_in(ids.implode()))
            .group_by("customer_id").agg(pl.col("order_key").n_unique().cast(pl.Int64).alias(name))
            .collect(engine="streaming" if streaming else "auto"))


#: The integer dtypes of customer ids the dense pass takes (UInt64 ids may not fit the Int64 arithmetic).
_DENSE_ID_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)
#: Whether an ordered pass on integer ids may run as :func:`_dense_pass` (tests compare both ways).
DENSE_PASS = True
#: Rows per batch of the dense pass.
DENSE_BATCH_ROWS = 1 << 18
#: The dense pass holds 52 bytes per id between the smallest and the largest customer id (and some room around
#: them); it gives up (and the streaming pass runs) when that span passes half the input's rows (the rows read so
#: far where the source does not tell its rows without a read) plus this; the positions pass's order ids may span
#: the rows plus this (8 bytes each).
DENSE_SPAN_SLACK = 1 << 20
#: The built-in aggregations :func:`_dense_pass` computes, as the feature table has them (another table: the
#: streaming pass runs).
_DENSE_AGGREGATIONS = [("frequency", Agg("n_unique", "order_key", "purchases")), ("monetary", Agg("sum", "amount")),
                       ("first_order", Agg("min", "order_date", "purchases")),
                       ("last_order", Agg("max", "order_date", "purchases")),
                       ("last_activity", Agg("max", "order_date")), ("returns", Agg("count", "amount", "returns")),
                       ("returned_value", Agg("sum", "amount", "returns", negate=True))]
#: The mark of an order id without a counted line yet, in the positions pass's array of owners (customer ids).
_NO_OWNER = -(2**63)
#: The day arrays' marks for "no such line" (a date whose day number is one of them: the dense pass gives up).
_DAY_NONE_LOW, _DAY_NONE_HIGH = -(2**31), 2**31 - 1


def _dense_possible(tx: Transactions, plugin_features: Mapping[str, Feature], *, streaming: bool,
                    wide: bool) -> bool:
    """Whether :func:`_dense_pass` may compute this pass: integer customer ids, integer or date order keys,
    no plugin ``agg`` feature (an aggregation of the group_by; ``table`` features run on the usable rows the dense
    pass keeps, ``derive`` features after any pass), sums that fit Int64, the streaming engine."""
    if (not streaming or wide or any(f.agg is not None for f in plugin_features.values())
            or not tx.has_order_id):
        return False
    if [(f.name, f.compute) for f in _AGGREGATED] != _DENSE_AGGREGATIONS:  # what _dense_pass computes
        return False
    schema = tx.frame.collect_schema()
    key = schema["order_key"]
    return (isinstance(schema["customer_id"], _DENSE_ID_TYPES) and schema["order_date"] == pl.Date
            and ((key.is_integer() and not isinstance(key, pl.UInt64)) or key == pl.Date))


class _DenseState:
    """Per-customer accumulators, element ``id - lo`` for customer ``id`` (see :func:`_dense_pass`): the sum of
    all units, the return lines and their units, the run starts and whether one is in doubt, the first and last day of a
    purchase, the last day of another line (a return or a zero amount)."""

    FIELDS = {"monetary": "int64", "returns": "int64", "returned": "int64", "starts": "int64", "doubts": "bool",
              "first": "int32", "last": "int32", "other_day": "int32"}
    EMPTY = {"first": _DAY_NONE_HIGH, "last": _DAY_NONE_LOW, "other_day": _DAY_NONE_LOW}

    def __init__(self, np, fields: Mapping[str, str] | None = None, empty: Mapping[str, int] | None = None):
        self.np = np
        if fields is not None:
            self.FIELDS, self.EMPTY = dict(fields), dict(empty or {})
        self.lo, self.size = 0, 0  # the arrays hold ids lo .. lo + size - 1
        self.low, self.high = 0, 0  # the smallest and the largest id seen
        self.arrays = {name: np.zeros(0, dtype) for name, dtype in self.FIELDS.items()}

    def fits(self, low: int, high: int) -> bool:
        """Whether the arrays hold ids ``low`` .. ``high`` already."""
        return bool(self.size) and self.lo <= low and high < self.lo + self.size

    def cover(self, low: int, high: int, limit: int) -> bool:
        """Make room for ids ``low`` .. ``high``; False when the span from the smallest id seen to the largest would
        pass ``limit``. The arrays get a quarter more room than the ids need (around the first batch's ids, then on
        the side they grew towards), so a later batch rarely makes them grow again."""
        was = (self.low, self.high) if self.size else None
        if was:
            low, high = min(low, was[0]), max(high, was[1])
        span = high - low + 1
        if span > limit:
            return False
        self.low, self.high = low, high
        if self.fits(low, high):
            return True
        size = max(span, min(max(span + span // 4, self.size + self.size // 2), limit))
        if not was:  # the first batch: room on both sides (from 0 when that is near: ids need no shift then)
            lo = 0 if 0 <= low <= (size - span) // 2 else low - (size - span) // 2
        else:
            lo = high - size + 1 if low < was[0] else low
        for name, dtype in self.FIELDS.items():
            grown = self.np.full(size, self.EMPTY.get(name, 0), dtype)
            if was:  # the ids seen so far, where they were
                grown[was[0] - lo:was[1] - lo + 1] = self.arrays[name][was[0] - self.lo:was[1] - self.lo + 1]
            self.arrays[name] = grown
        self.lo, self.size = lo, size
        return True


def _dense_pass(tx: Transactions, as_of: dt.date | None, plugin_features: Mapping[str, Feature] | None = None, *,
                positions: bool, buckets: Any = None
                ) -> tuple[pl.DataFrame, pl.DataFrame, dict, list[pl.DataFrame]] | None:
    """The ordered pass's results (``grouped`` as the ``group_by`` gives it, before :func:`_finish`; the
    ``exceptions``; the totals' one row), computed without hashing: the rows come from the streaming engine in
    batches, in the input's order, and each customer's aggregates are kept in arrays indexed by the customer id.

    Same definitions as the ``group_by`` of :func:`_queries` with ``ordered``: the run starts and those in doubt
    of :func:`_order_flags` (the previous counted line's customer and the largest earlier key carried from one
    batch to the next), exact Int64 sums of units (the caller checks them against ``_INT64_SAFE`` as for the
    streaming pass), days. A batch with an unusable row (a null, a date from ``as_of`` on) gets the exceptions'
    and totals' Polars aggregations (:func:`_side_queries`) and only its usable rows go on; the others are counted
    directly (their rows, flags and units), and the exceptions add up. A zero amount needs no exception here:
    the streaming pass looks it up only to correct its distinct counts, and the arrays count no order from it
    (only lines with units above zero start runs or hold order ids), so its batch is counted directly too.

    With ``positions`` (input not written order by order), orders are counted without the run starts: an array
    indexed by the order id holds the customer of its first counted line; a counted line whose order holds
    another customer puts its own customer in doubt (one order id shared by two customers), to be counted again
    by hashing. A customer not in doubt owns every order id of their counted lines, and each order id has one
    owner, so their orders are the positions holding them (a bincount at the end). The order ids may span the
    rows read plus :data:`DENSE_SPAN_SLACK` (8 bytes each).

    The plugins' ``table`` features (:func:`plugin_table_queries`) run after the scan on the usable rows, kept from
    the batches (customer, order key, day, units: 28 bytes a row) with the canonical ``amount`` and ``order_id``
    added, as the streaming pass gives them its ``rows``; their tables come last in the result.

    With ``buckets`` (the snapshot scan's, :class:`engine.snapshots._DenseBuckets`), the arrays hold one bucket of
    dates at a time: ``buckets.split`` cuts each batch's usable rows by bucket (None when a bucket comes after a
    later one: the input is not in date order), and ``buckets.flush`` takes each bucket's rows out of the arrays
    (with ``positions``, the orders first held in it, ``orders``' ``born`` marks) and empties them before the next;
    the arrays also count the purchase lines and those without an order id (``purchases``, ``null_key``). The pass
    then returns only the exceptions and the totals (no table features).

    Returns None, having read part of the input, when the customer ids (or with ``positions`` the order ids) are
    too far apart for arrays (:data:`DENSE_SPAN_SLACK`), a date is one of the arrays' marks or a table query reads
    a column the kept rows do not have: the streaming pass then runs.
    """
    condition, exception_aggs, _ = _side_queries(tx, as_of)
    flags = [*tx.checks, *tx.tallies]
    columns = list(dict.fromkeys(["customer_id", "order_key", "order_date", "amount_units", *flags]))
    key_is_date = tx.frame.collect_schema()["order_key"] == pl.Date
    batches = tx.frame.select(columns).collect_batches(chunk_size=DENSE_BATCH_ROWS, engine="streaming")
    import numpy as np  # here, while the scan reads its first batches (no other command pays the import)

    state = _DenseState(np) if buckets is None else _DenseState(np, {**_DenseState.FIELDS, "purchases": "int64",
                                                                     "null_key": "int64"}, _DenseState.EMPTY)
    orders = (_DenseState(np, {"owner": "int64", **({"born": "int8"} if buckets is not None else {})},
                          {"owner": _NO_OWNER}) if positions else None)
    total = {"rows": 0, **dict.fromkeys(flags, False), "_gross_units": 0.0, "usable_units": 0}
    exceptions: list[pl.DataFrame] = []
    tables = {n: f for n, f in (plugin_features or {}).items() if f.table is not None}
    kept: list[pl.DataFrame] | None = [] if tables else None  # the usable rows, for the table features
    rows_read, rows = 0, None  # rows read so far; rows in all, once asked for
    rows_in_all = functools.partial(_rows_in_all, tx)
    intake = _BatchIntake(np, tx, as_of, total, exceptions)
    carry_customer, carry_key = None, None  # the previous counted line's customer, the largest counted key so far
    def usable_batches():
        """The usable rows of each batch with their units and days (and with ``buckets``, each bucket's part
        of them: ``(bucket, rows, units, days)``; None when the buckets are not in order)."""
        nonlocal rows_read
        for batch in batches:
            if batch.height == 0:
                continue
            rows_read += batch.height
            batch, units, days = intake(batch)
            if batch.height == 0:
                continue
            if buckets is None:
                yield None, batch, units, days
            else:
                yield from buckets.split(np, batch, units, days)

    current = None  # with buckets: the bucket being counted
    # The scatters into the arrays run on a thread of their own (NumPy lets go of the GIL in them), one batch
    # behind the main thread, which prepares the next batch meanwhile: its masks, the run starts, the totals. With
    # ``positions`` the orders' owners (their own array, and the doubts, which nothing else writes to there) are
    # taken on a second thread beside the customers' scatters: the random reads and writes of an array as large as
    # the orders are the longer half of a batch's work, and a batch's two halves touch no array in common.
    with ThreadPoolExecutor(1, thread_name_prefix="tierbook-dense") as scatter, \
            ThreadPoolExecutor(1, thread_name_prefix="tierbook-owners") as owning:
        pending: list = []  # the futures of the batch before: each waited for before the arrays change hands

        def settle() -> None:
            for done in pending:
                done.result()
            pending.clear()

        for bucket, batch, units, days in usable_batches():
            if batch is None:  # the buckets not in input order
                return None
            if bucket != current:  # the arrays hold the bucket before: its rows out, the arrays emptied
                settle()
                if current is not None:
                    buckets.flush(np, state, orders, current)
                current = bucket
            if kept is not None:
                kept.append(batch.select(_KEPT_COLUMNS))
            ids = batch.get_column("customer_id").to_numpy().astype(np.int64, copy=False)
            low, high = int(ids.min()), int(ids.max())
            if not state.fits(low, high):
                settle()  # the arrays grow: the scatters into the old ones first
            if not state.cover(low, high, rows_read // 2 + DENSE_SPAN_SLACK):
                rows = rows_in_all() if rows is None else rows
                if not state.cover(low, high, max(rows, rows_read) // 2 + DENSE_SPAN_SLACK):
                    return None
            if low == _NO_OWNER or days.min() == _DAY_NONE_LOW or days.max() == _DAY_NONE_HIGH:
                return None
            keys = batch.get_column("order_key")
            if key_is_date:
                keys = keys.to_physical()
            with_key = None
            if keys.null_count():
                with_key = keys.is_not_null().to_numpy()
                keys = keys.fill_null(0)
            keys = keys.to_numpy()
            at = ids - state.lo if state.lo else ids
            bought = units > 0
            every = bool(bought.all())
            if with_key is None:
                who, key = (at, keys) if every else (at[bought], keys[bought])
            else:
                counted = bought & with_key
                who, key = at[counted], keys[counted]
            started = doubted = owned = None
            if positions and who.size:
                first, last = int(key.min()), int(key.max())
                if not orders.fits(first, last):
                    settle()
                if not orders.cover(first, last, rows_read + DENSE_SPAN_SLACK):
                    rows = rows_in_all() if rows is None else rows
                    if not orders.cover(first, last, max(rows, rows_read) + DENSE_SPAN_SLACK):
                        return None
                owned = (orders.arrays["owner"], key - orders.lo if orders.lo else key, who, state.lo)
            elif who.size:
                started, doubted, carry_key, carry_customer = _run_starts(np, who, key, state.lo, carry_key,
                                                                          carry_customer)
            counts = None
            if buckets is not None:  # the purchase lines, and those without an order id
                counts = [("purchases", at if every else at[bought])]
                if with_key is not None:
                    counts.append(("null_key", at[bought & ~with_key]))
            settle()
            pending.append(scatter.submit(_dense_scatter, np, state.arrays, at, units, days, None if every else bought,
                                          who if with_key is None else None, started, doubted, counts))
            if owned is not None:
                pending.append(owning.submit(_dense_owners, np, state.arrays, *owned))
        settle()
    if buckets is not None:
        if current is not None:
            buckets.flush(np, state, orders, current)
        return (*_merged_exceptions(tx, exceptions, condition, exception_aggs), total)
    if positions:  # each order id counts for the customer holding it
        owner = orders.arrays["owner"]
        state.arrays["starts"] = np.bincount(owner[owner != _NO_OWNER] - state.lo, minlength=state.size)
    table_results = [] if kept is None else _dense_tables(tx, kept, tables)
    if table_results is None:
        return None
    return (*_dense_result(tx, state, total, exceptions, condition, exception_aggs), table_results)


def _rows_in_all(tx: Transactions) -> int:
    """The input's rows, where the source tells them without a read (Parquet's metadata, a frame), else 0: ids
    that span more than the rows read so far allow may still fit the input's rows."""
    if tx.fmt not in ("parquet", "frame") or tx.raw is None:
        return 0
    try:
        return int(tx.raw.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError:
        return 0


class _BatchIntake:
    """A dense pass's batch in (see :func:`_dense_pass`): its rows, flags and units added to ``total``, and its
    usable rows with their units and day numbers out. A batch without a null or a date from ``as_of`` on is
    counted directly (a zero amount too: see :func:`_dense_pass`); one with such a row gets the exceptions' and
    totals' Polars aggregations (:func:`_side_queries`, the exceptions appended to ``exceptions``) and only its
    usable rows go on."""

    def __init__(self, np, tx: Transactions, as_of: dt.date | None, total: dict, exceptions: list[pl.DataFrame]):
        self.np, self.total, self.exceptions = np, total, exceptions
        self.condition, self.exception_aggs, self.total_exprs = _side_queries(tx, as_of)
        self.usable = _usable(as_of)
        self.flags = [*tx.checks, *tx.tallies]
        self.as_of_day = (as_of - dt.date(1970, 1, 1)).days if as_of is not None else None

    def __call__(self, batch: pl.DataFrame):
        np, total, flags, as_of_day = self.np, self.total, self.flags, self.as_of_day
        clean = not any(batch.get_column(c).null_count() for c in ("customer_id", "order_key", "order_date",
                                                                    "amount_units"))
        if clean:
            units = batch.get_column("amount_units").to_numpy()
            days = batch.get_column("order_date").to_physical().to_numpy()
            clean = as_of_day is None or days.max() < as_of_day
        if clean:
            total["rows"] += batch.height
            for flag in flags:
                total[flag] = total[flag] or bool(batch.get_column(flag).any())
            # The totals' _gross_units only tells whether an Int64 sum could wrap (_INT64_SAFE): the rows times
            # the largest absolute amount bounds it, and is exact enough while far below; else the sum itself.
            bound = batch.height * max(-int(units.min()), int(units.max()))
            total["_gross_units"] += bound if bound < 2**52 else float(np.abs(units).sum(dtype=np.float64))
            total["usable_units"] += int(units.sum())
            return batch, units, days
        part = batch.select(self.total_exprs).row(0, named=True)
        total["rows"] += part["rows"]
        for flag in flags:
            total[flag] = total[flag] or bool(part[flag])
        total["_gross_units"] += part["_gross_units"]
        total["usable_units"] += int(part["usable_units"])
        self.exceptions.append(batch.filter(self.condition).group_by("customer_id").agg(self.exception_aggs))
        batch = batch.filter(self.usable)
        if batch.height == 0:
            return batch, None, None
        return batch, batch.get_column("amount_units").to_numpy(), batch.get_column("order_date").to_physical().to_numpy()


def _run_starts(np, who, key, lo: int, carry_key, carry_customer):
    """The run starts and those in doubt of one batch's counted lines (``who``: their customers' elements, ``key``:
    their order keys), as in :func:`_order_flags`: a run starts where the line's key is not the largest key of the
    counted lines before it or its customer not the previous counted line's; in doubt where it is not larger.
    ``carry_key`` and ``carry_customer`` (an id: the element plus ``lo``) are the largest key and the last customer
    of the counted lines before the batch (None before the first). Returns the elements of the run starts and of
    those in doubt, and the carry for the next batch."""
    # Line i against the largest key before it (largest[i - 1], the carried one for the first line) and the
    # customer before it (who[i - 1]); compared on shifted views, without copies.
    largest = np.maximum.accumulate(key)
    if carry_key is not None:
        np.maximum(largest, carry_key, out=largest)
    start = np.empty(key.size, dtype=bool)
    doubt = np.empty(key.size, dtype=bool)
    np.not_equal(key[1:], largest[:-1], out=start[1:])
    start[1:] |= who[1:] != who[:-1]
    np.less_equal(key[1:], largest[:-1], out=doubt[1:])
    doubt[1:] &= start[1:]
    if carry_key is None:  # the first counted line: a fresh run start
        start[0], doubt[0] = True, False
    else:
        start[0] = key[0] != carry_key or who[0] != carry_customer - lo
        doubt[0] = start[0] and key[0] <= carry_key
    return who[start], who[doubt], largest[-1], int(who[-1]) + lo


#: The columns of the usable rows the dense pass keeps for the plugins' table features.
_KEPT_COLUMNS = ("customer_id", "order_key", "order_date", "amount_units")


def _dense_tables(tx: Transactions, kept: list[pl.DataFrame], tables: Mapping[str, Feature]) -> list[pl.DataFrame] | None:
    """The plugins' table queries (:func:`plugin_table_queries`) on the usable rows the dense pass kept, with the
    canonical ``amount`` and ``order_id`` as the streaming pass's ``rows`` have them; None when a query reads a
    column they do not have (the streaming pass then runs, and names it if the transactions lack it too). The sums
    may be Int64 (``int64_safe``): the dense pass's result is used only when no sum of units can leave Int64."""
    schema = tx.frame.collect_schema()
    rows = pl.concat(kept, rechunk=False) if kept else pl.DataFrame(schema={c: schema[c] for c in _KEPT_COLUMNS})
    rows = rows.lazy().with_columns(to_amount(pl.col("amount_units")).alias("amount"),
                                    pl.col("order_key").alias("order_id"))
    queries = plugin_table_queries(rows, tables, int64_safe=True)
    kept.clear()  # the concatenated rows hold the batches' data now
    try:
        return pl.collect_all([q for q, _ in queries])
    except pl.exceptions.ColumnNotFoundError:
        return None


def _dense_scatter(np, a, at, units, days, bought, buyers, started, doubted, counts=None) -> None:
    """One batch's lines into the arrays ``a`` (see :func:`_dense_pass`): ``at`` the customers' elements, ``bought``
    the purchase lines (None: every line), ``buyers`` their elements if already gathered, ``started`` and
    ``doubted`` the elements of the run starts and of those in doubt; ``counts`` (name, elements) pairs each add
    one at their elements (the bucket pass's purchase lines and lines without an order id). The positions pass's
    orders are :func:`_dense_owners`'."""
    for name, elements in counts or ():
        np.add.at(a[name], elements, 1)
    np.add.at(a["monetary"], at, units)
    if bought is None:
        buyers, bought_days = at, days
    else:
        other = ~bought
        np.maximum.at(a["other_day"], at[other], days[other])
        returned = units < 0
        if returned.any():
            back = at[returned]
            np.add.at(a["returns"], back, 1)
            np.add.at(a["returned"], back, units[returned])
        buyers, bought_days = (at[bought] if buyers is None else buyers), days[bought]
    if buyers.size:
        np.minimum.at(a["first"], buyers, bought_days)
        np.maximum.at(a["last"], buyers, bought_days)
    if started is not None:
        np.add.at(a["starts"], started, 1)
        if doubted.size:
            a["doubts"][doubted] = True


def _dense_owners(np, a, owner, orders, customers, lo) -> None:
    """One batch's counted lines into the positions pass's array of owners ``owner`` (customer ids, indexed by
    ``orders``, the lines' order elements): each order takes its line's customer (``customers``: their elements,
    ``lo`` the customers' ``lo``) if it has none, and a line whose order holds another customer puts its customer
    in doubt (``a["doubts"]``)."""
    ids = customers + lo if lo else customers
    held = owner[orders]
    free = held == _NO_OWNER
    if free.any():
        fresh = orders[free]
        owner[fresh] = ids[free]  # of lines of one new order, one customer takes it: read back below
        held[free] = owner[fresh]
    other = held != ids
    if other.any():
        a["doubts"][customers[other]] = True


def _dense_result(tx: Transactions, state: _DenseState, total: dict, exceptions: list[pl.DataFrame],
                  condition: pl.Expr, exception_aggs: list[pl.Expr]) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """:func:`_dense_pass`'s arrays and partial exceptions as the streaming pass's tables."""
    np, a = state.np, state.arrays
    purchased = a["last"] != _DAY_NONE_LOW
    at = np.flatnonzero(purchased | (a["other_day"] != _DAY_NONE_LOW))  # the customers with a usable row
    schema = tx.frame.collect_schema()
    bought = pl.Series(purchased[at])
    units, returned = a["monetary"][at], -a["returned"][at]
    grouped = pl.DataFrame([
        pl.Series("customer_id", at + state.lo).cast(schema["customer_id"]).set_sorted(),
        pl.Series("frequency", a["starts"][at]),
        pl.Series("_in_doubt", a["doubts"][at]),
        pl.Series("_monetary_units", units),
        pl.Series("first_order", a["first"][at]).cast(pl.Date),
        pl.Series("last_order", a["last"][at]).cast(pl.Date),
        pl.Series("last_activity", np.maximum(a["last"][at], a["other_day"][at])).cast(pl.Date),
        pl.Series("returns", a["returns"][at]),
        pl.Series("_returned_value_units", -returned),
    ]).with_columns(pl.when(bought).then(pl.col("first_order", "last_order")).name.keep())
    # The amounts, each the float nearest its units / AMOUNT_SCALE (as to_amount gives it): a float division of
    # two floats that hold them exactly is rounded once, to that float, while the units are at most 2**53 away
    # from 0 (tests/engine/test_features_dense.py checks the two against each other).
    if units.size and max(int(np.abs(units).max()), int(np.abs(returned).max())) > 2**53:
        grouped = grouped.with_columns(_amounts())
    else:
        grouped = grouped.with_columns(pl.Series("monetary", units / AMOUNT_SCALE),
                                       pl.Series("returned_value", returned / AMOUNT_SCALE))
    return grouped, *_merged_exceptions(tx, exceptions, condition, exception_aggs), total


def _merged_exceptions(tx: Transactions, exceptions: list[pl.DataFrame], condition: pl.Expr,
                       exception_aggs: list[pl.Expr]) -> tuple[pl.DataFrame]:
    """The dense pass's batches' exceptions as the streaming pass's exceptions table (one row per customer)."""
    schema = tx.frame.collect_schema()
    empty = pl.LazyFrame(schema=schema).filter(condition).group_by("customer_id").agg(exception_aggs)
    exceptions_schema = empty.collect_schema()
    if not exceptions:
        return (pl.DataFrame(schema=exceptions_schema),)
    counts = ("rows", "unusable", "null_date", "null_amount", "after_as_of")
    merged = pl.concat(exceptions).group_by("customer_id").agg(
        pl.col(name).sum() if name in counts else pl.col(name).max() if name == "last_day" else pl.col(name).any()
        for name in exceptions_schema.names() if name != "customer_id")
    return (merged.cast(exceptions_schema),)


def _queries(tx: Transactions, as_of: dt.date | None, plugin_features: Mapping[str, Feature], *, wide: bool = False,
             ordered: bool = False):
    """The three queries collected together over one scan of the transactions.

    * ``customers``: the usable rows (a customer, a date, an amount, before
      ``as_of``) grouped by customer, one aggregation per feature, sorted;
    * ``exceptions``: the rows that are not usable, and the usable ones that
      need a second look (a zero amount, a sale without an order id), grouped by
      customer: few rows, they account for every row not used and make the
      order count exact;
    * ``totals``: the row count and the checks and tallies that stop a run.

    With ``ordered``, ``customers`` counts orders from run starts instead of hashing order keys, and
    ``_in_doubt`` tells the customers with a run start in doubt (see :func:`_order_flags`).

    Polars runs them as one plan with one scan whose rows feed all three
    (``collect_all`` over a cached frame). Unusable rows are filtered out before
    the ``group_by`` rather than masked inside it, and its bookkeeping is left to
    the exceptions, because every aggregation of the ``group_by`` costs about as
    much as a feature, in time and memory (bench/PROFILE.md).
    """
    date, u, key = pl.col("order_date"), pl.col("amount_units"), pl.col("order_key")
    rows, exceptional, totals = _scan(tx, as_of)
    # A line holds at most 1e18 units (data._MAX_AMOUNT), so an Int64 sum can wrap after ten lines. The
    # totals query adds up the absolute amounts (as floats): below _INT64_SAFE no sum can wrap; above it
    # compute_features runs the pass again with ``wide`` (Int128) sums, exact for any input that fits in
    # memory. Int128 always would cost about 25% more peak memory on the 10M set (measured, commit message).
    aggs = _aggregations(u, date, key, wide=wide, ordered=ordered)
    for name, feat in plugin_features.items():
        if feat.agg is not None:
            aggs.append(feat.agg.alias(name))
    grouped_rows = rows
    if ordered:
        grouped_rows = _order_flags(rows, tx.frame.collect_schema())
        if grouped_rows is None:
            raise ValueError("the ordered path was asked for on ids without an order")
    customers = grouped_rows.group_by("customer_id").agg(aggs).sort("customer_id")
    # Plugin features given as a query over the same rows: one query per distinct table function.
    # A wide pass's table queries sum in Int128; the first pass's are used only if its totals show no Int64 sum
    # can leave Int64 (else _compute runs the pass again, wide): they may sum in Int64.
    table_queries = plugin_table_queries(rows, plugin_features, int64_safe=not wide)
    return customers, exceptional, totals, table_queries


def plugin_table_queries(rows: pl.LazyFrame, plugin_features: Mapping[str, Feature], *, int64_safe: bool = False):
    """``(query, names)`` for the plugin features given as a ``table`` over ``rows``: one per distinct function.

    A table function that takes an ``int64_safe`` keyword is told whether its query's result is used only when no
    sum of ``amount_units`` over any of the rows can leave an Int64 (so it may sum them in Int64, cheaper than
    Int128): only a pass that checks its totals and runs again otherwise says so (:func:`_queries`); every other
    caller (snapshots, Spark's partitions) gives the default False.
    """
    tables: dict[int, tuple[Callable, list[str]]] = {}
    for name, feat in plugin_features.items():
        if feat.table is not None:
            tables.setdefault(id(feat.table), (feat.table, []))[1].append(name)
    return [(_table_query(fn, rows, int64_safe).select("customer_id", *names), names) for fn, names in tables.values()]


def _table_query(fn: Callable, rows: pl.LazyFrame, int64_safe: bool) -> pl.LazyFrame:
    """``fn(rows)``, or ``fn(rows, int64_safe=...)`` for a table function that takes that keyword."""
    try:
        takes = "int64_safe" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature: the plain call
        takes = False
    return fn(rows, int64_safe=int64_safe) if takes else fn(rows)


_AGGREGATED = [f for f in FEATURES if isinstance(f.compute, Agg)]
_DERIVED = [f for f in FEATURES if isinstance(f.compute, Derived)]
_N_UNIQUE = [f for f in _AGGREGATED if f.compute.op == "n_unique"]
#: The count of return lines, which tells a distinct count of purchases that a non-purchase line was masked
#: (see :func:`_distinct`).
_RETURN_LINES = next(f.name for f in _AGGREGATED if f.compute.op == "count" and f.compute.rows == "returns")


def _aggregations(u: pl.Expr, date: pl.Expr, key: pl.Expr, *, wide: bool, ordered: bool) -> list[pl.Expr]:
    """The ``group_by`` aggregations of the table's :class:`Agg` features (hidden columns start with ``_``).

    A restriction to purchases or returns is written ``when(cond).then(col)`` (every other line becomes
    null), which the streaming group_by keeps as a per-group aggregate; a ``filter`` inside the
    aggregation gathers every group's values instead (~1.6x the memory, slower). Sums are in exact
    integer units, turned into amounts by :func:`_finish`. With ``ordered``, the distinct order keys of
    purchases are the customer's run starts (``_run``, see :func:`_order_flags`), summed, not hashed.
    """
    rows = {"all": None, "purchases": u > 0, "returns": u < 0}
    source = {"amount": u.cast(pl.Int128) if wide else u, "order_date": date, "order_key": key}
    out = []
    for f in _AGGREGATED:
        a: Agg = f.compute
        cond = rows[a.rows]
        if a.op == "count":
            out.append((pl.len() if cond is None else cond.sum()).cast(pl.Int64).alias(f.name))
            continue
        value = source[a.column] if cond is None else pl.when(cond).then(source[a.column])
        if a.op == "n_unique" and ordered:  # a sale without an order key is added afterwards
            out.append(pl.col("_run").sum().alias(f"_{f.name}_runs"))
        elif a.op == "n_unique":  # counts null as a value: corrected in _distinct
            out.append(value.n_unique().alias(f"_{f.name}_distinct"))
        elif a.op == "sum":
            out.append(value.sum().alias(f"_{f.name}_units"))
        else:
            out.append(getattr(value, a.op)().alias(f.name))
    return out


def _distinct(name: str, zero: pl.Expr | bool = False, null_key: pl.Expr | bool = False) -> pl.Expr:
    """Distinct order keys of the purchase lines, from ``_<name>_distinct``.

    ``_<name>_distinct`` counts null as one value, whether it came from a masked
    line (a return, or a zero amount: ``zero``) or from a sale without an order
    key (``null_key``); only the latter is an order.
    """
    masked_null = (pl.col(_RETURN_LINES) > 0) | zero
    if null_key is not False:
        masked_null = masked_null & ~null_key
    return (pl.col(f"_{name}_distinct") - masked_null.cast(pl.UInt32)).cast(pl.Int64).alias(name)


def _amounts() -> list[pl.Expr]:
    """The summed features, from exact units (``_<name>_units``) to amounts."""
    out = []
    for f in _AGGREGATED:
        if f.compute.op == "sum":
            units = pl.col(f"_{f.name}_units").fill_null(0)
            # negated in Int128: the negation of the smallest Int64 sum does not fit Int64
            out.append(to_amount(pl.lit(0, pl.Int128) - units if f.compute.negate else units).alias(f.name))
    return out


def _finish(zero: pl.Expr | bool = False, null_key: pl.Expr | bool = False, *, ordered: bool = False) -> list[pl.Expr]:
    """The aggregated features that need a last step: distinct counts corrected, units to amounts."""
    if ordered:  # the run starts and those in doubt, apart; no correction for masked lines
        runs = [pl.col(f"_{f.name}_runs") for f in _N_UNIQUE]
        return [*(r.mod(_DOUBT).alias(f.name) for f, r in zip(_N_UNIQUE, runs)),
                pl.any_horizontal([r >= _DOUBT for r in runs]).alias("_in_doubt"), *_amounts()]
    return [*(_distinct(f.name, zero, null_key) for f in _AGGREGATED if f.compute.op == "n_unique"), *_amounts()]


def _day_after(as_of: dt.date | None) -> pl.Expr:
    """``as_of`` as an expression; without one, the day after the last activity (corrected later if a row
    without a customer id is later still)."""
    return pl.lit(as_of) if as_of is not None else pl.col("last_activity").max() + pl.duration(days=1)


def finish_aggregated(grouped: pl.DataFrame, as_of: dt.date | None) -> pl.DataFrame:
    """Features from another engine's aggregates (sums in units, exact distinct counts): amounts, derived."""
    return grouped.with_columns(_amounts()).with_columns(_derived(_day_after(as_of)))


class _PolarsOps:
    """:class:`engine.feature_table.Ops` for Polars expressions."""

    def __init__(self, day_after: pl.Expr):
        self.day_after = day_after

    def col(self, name: str) -> pl.Expr:
        return pl.col(name)

    def days_to_as_of(self, date: pl.Expr) -> pl.Expr:
        return (self.day_after - date).dt.total_days()

    def where(self, condition: pl.Expr, value: pl.Expr) -> pl.Expr:
        return pl.when(condition).then(value)


def _derived(day_after: pl.Expr, uses: set[str] | None = None) -> list[pl.Expr]:
    """The table's :class:`Derived` features (only those reading ``uses``, when given)."""
    ops = _PolarsOps(day_after)
    return [f.compute.build(ops).alias(f.name) for f in _DERIVED
            if uses is None or uses & set(f.compute.uses)]


def read_report(tx: Transactions, exceptions: pl.DataFrame, total: Mapping, customer_ids: pl.DataFrame,
                as_of: dt.date | None) -> tuple[LoadReport, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The :class:`LoadReport` from the ``exceptions`` and ``totals`` queries (``total``: its one row).

    Returns it with the exceptions without a customer id (``no_id``), those with one (``known``), and the
    ids of customers none of whose rows is usable (``unusable``; ``customer_ids``: those with usable rows).
    """
    report = LoadReport(source=tx.describe(), notes=list(tx.notes))
    report.rows = int(total["rows"])
    report.scanned_units = int(total["usable_units"] or 0)
    if report.rows == 0:
        raise DataError(f"{tx.describe()}: no transactions (the file has a header but no rows)")
    no_id = exceptions.filter(pl.col("customer_id").is_null())
    known = exceptions.filter(pl.col("customer_id").is_not_null())
    report.rejected["null_customer"] = int(no_id["rows"].sum())
    for reason in ("null_date", "null_amount", *(["after_as_of"] if as_of is not None else [])):
        report.rejected[reason] = int(known[reason].sum())
    report.rows_used = report.rows - sum(report.rejected.values())
    # Customers with rows, none of them usable: not classified (or prospects, if in the customer table).
    unusable = known.filter(pl.col("unusable") == pl.col("rows")).select("customer_id")
    if unusable.height:
        unusable = unusable.join(customer_ids, on="customer_id", how="anti")
    return report, no_id, known, unusable


def compute_features(
    tx: Transactions,
    *,
    as_of: dt.date | None = None,
    customers: pl.DataFrame | None = None,
    plugin_features: Mapping[str, Feature] | None = None,
    streaming: bool = True,
    feature_owners: Mapping[str, str] | None = None,
    wide: bool = False,
    orders: str = "auto",
) -> FeatureResult:
    """Run the single pass and return one row per customer with every feature.

    ``orders`` says how a customer's orders are counted: ``"auto"`` tries the boundary count when the input's
    first rows are written order by order, ``"boundaries"`` tries it whatever they look like, ``"hashing"``
    counts distinct order keys. A boundary pass proves its own counts (:func:`_order_flags`); when it finds a
    line out of order the same run counts again by hashing, so no count is ever a guess. The report says
    which path gave the numbers and why (``orders_counted``, ``orders_check``).

    Raises :class:`~engine.errors.DataError` for an empty input, an
    unparseable value (naming its row), or a plugin feature that fails.
    """
    if orders not in ("auto", "boundaries", "hashing"):
        raise ValueError(f"orders must be auto, boundaries or hashing, not {orders!r}")
    why_not = None if orders == "boundaries" else "hashing asked for"
    if orders != "hashing":
        why_not = _ordered_path_possible(tx)
        if why_not is None and orders == "auto" and not _looks_ordered(tx, as_of):
            why_not = f"the first {PROBE_ROWS:,} rows are not written order by order"
    if why_not is None:
        return _compute(tx, as_of=as_of, customers=customers, plugin_features=plugin_features, streaming=streaming,
                        feature_owners=feature_owners, wide=wide, ordered=True)
    # Not written order by order, as far as the first rows tell: integer ids are counted as positions where the
    # dense pass can take them (asked for hashing: hashing).
    result = _compute(tx, as_of=as_of, customers=customers, plugin_features=plugin_features, streaming=streaming,
                      feature_owners=feature_owners, wide=wide, ordered=False, positions=orders == "auto")
    report = result.report
    report.orders_check = f"{why_not}; {report.orders_check}" if report.orders_counted == "positions" else why_not
    return result


def _collect_pass(tx: Transactions, as_of, plugin_features, *, streaming, wide, ordered) -> list[pl.DataFrame]:
    """The streaming pass: the customers, exceptions and totals queries (and the plugins' table queries) collected
    together over one scan."""
    by_customer, exceptions_q, totals_q, table_queries = _queries(tx, as_of, plugin_features, wide=wide,
                                                                  ordered=ordered)
    # The features are computed inside the streaming query: its workers reuse the group_by's memory,
    # where each step on the collected table would add its columns on top of it (bench/PROFILE.md).
    # What the exceptions change (a zero amount, a sale without an order id, a later row without a
    # customer id) is corrected afterwards, for the customers concerned.
    by_customer = by_customer.with_columns(_finish(ordered=ordered)).with_columns(_derived(_day_after(as_of)))
    queries = [by_customer, exceptions_q, totals_q, *[q for q, _ in table_queries]]
    return pl.collect_all(queries, engine="streaming" if streaming else "auto")


def _compute(tx: Transactions, *, as_of, customers, plugin_features, streaming, feature_owners, wide,
             ordered: bool, positions: bool = False) -> FeatureResult:
    """One pass (see :func:`compute_features`); with ``ordered``, orders counted from run starts, and the
    customers with a run start in doubt counted again by hashing (:func:`_recount`). Without ``ordered`` but with
    ``positions``, orders are counted as positions of an array where the dense pass can (:func:`_dense_pass`),
    the customers sharing an order id counted again by hashing; otherwise by hashing."""
    plugin_features = dict(plugin_features or {})
    dense, how = None, "boundaries" if ordered else "hashing"
    try:
        if (ordered or positions) and DENSE_PASS and _dense_possible(tx, plugin_features, streaming=streaming,
                                                                     wide=wide):
            dense = _dense_pass(tx, as_of, plugin_features, positions=not ordered)
        if dense is not None:  # its table has the finished columns (_finish's)
            how = "boundaries" if ordered else "positions"
            grouped, exceptions, total, tables = dense
            grouped = grouped.with_columns(_derived(_day_after(as_of)))
        else:
            grouped, exceptions, totals, *tables = _collect_pass(tx, as_of, plugin_features, streaming=streaming,
                                                                 wide=wide, ordered=ordered)
            total = totals.row(0, named=True)
    except pl.exceptions.ColumnNotFoundError as exc:
        raise _feature_error(plugin_features, feature_owners or {}, exc) from None
    except pl.exceptions.PolarsError as exc:
        from .data import explain_read_error

        raise DataError(f"{tx.describe()}: {explain_read_error(tx.path, tx.fmt, exc, tx.delimiter)}") from None

    for flag in tx.checks:
        if total[flag]:
            raise tx.locate(flag)
    runs = how != "hashing"  # the counts from runs or positions, with the customers in doubt counted again
    if ordered and total["rows"] >= _DOUBT:  # a customer's run starts could reach _DOUBT: count by hashing
        del grouped, exceptions
        return _compute(tx, as_of=as_of, customers=customers, plugin_features=plugin_features, streaming=streaming,
                        feature_owners=feature_owners, wide=wide, ordered=False)
    if not wide and (total["_gross_units"] or 0) >= _INT64_SAFE:  # an Int64 sum may have wrapped: sum again
        del grouped, exceptions
        return _compute(tx, as_of=as_of, customers=customers, plugin_features=plugin_features, streaming=streaming,
                        feature_owners=feature_owners, wide=True, ordered=ordered, positions=positions)
    tally_error = tx.tally_error({flag: int(bool(total[flag])) for flag in tx.tallies})
    if tally_error is not None:
        raise tally_error

    report, no_id, known, unusable = read_report(tx, exceptions, total, grouped.select("customer_id"), as_of)
    corrected = [f.name for f in _AGGREGATED if f.compute.op == "n_unique"]
    if runs:
        key_ids = known.filter(pl.col("null_key"))["customer_id"].implode()
        if key_ids.list.len().item():  # a sale without an order id is one more order of its customer
            grouped = grouped.with_columns(
                (pl.col(name) + pl.col("customer_id").is_in(key_ids).cast(pl.Int64)).alias(name) for name in corrected)
        doubtful = grouped.filter(pl.col("_in_doubt"))["customer_id"]
        if doubtful.len():  # customers whose lines are not all written order by order: count them exactly
            recount = _recount(tx, as_of, doubtful, streaming)
            grouped = grouped.update(recount, on="customer_id", how="left")
        if doubtful.len() or key_ids.list.len().item():  # what reads the order counts, again
            grouped = grouped.with_columns(_derived(_day_after(as_of), set(corrected)))
    else:
        odd = known.filter(pl.col("zero") | pl.col("null_key"))
        if odd.height:  # customers with a zero amount or a sale without an order id: count their orders again
            zero_ids = odd.filter(pl.col("zero"))["customer_id"].implode()
            key_ids = odd.filter(pl.col("null_key"))["customer_id"].implode()
            grouped = grouped.with_columns(
                _distinct(name, pl.col("customer_id").is_in(zero_ids), pl.col("customer_id").is_in(key_ids))
                for name in corrected
            ).with_columns(_derived(_day_after(as_of), set(corrected)))
    result = complete_features(grouped, no_id["last_day"].max(), unusable, as_of=as_of, customers=customers,
                               plugin_features=plugin_features, report=report, describe=tx.describe(),
                               tables=tables, feature_owners=feature_owners)
    if how == "boundaries":
        result.report.orders_counted = "boundaries"
        result.report.orders_recounted = doubtful.len()
        result.report.orders_check = (
            "input written order by order (checked on every purchase line)" if not doubtful.len()
            else f"{doubtful.len():,} customer(s) with orders out of place counted again by hashing")
    elif how == "positions":
        result.report.orders_counted = "positions"
        result.report.orders_recounted = doubtful.len()
        result.report.orders_check = (
            "each order id held one customer (checked on every purchase line)" if not doubtful.len()
            else f"{doubtful.len():,} customer(s) sharing an order id with another counted again by hashing")
    return result


def complete_features(
    grouped: pl.DataFrame,
    last_day_without_id: dt.date | None,
    unusable: pl.DataFrame,
    *,
    as_of: dt.date | None,
    customers: pl.DataFrame | None,
    plugin_features: Mapping[str, Feature],
    report: LoadReport,
    describe: str,
    tables: Sequence[pl.DataFrame] = (),
    feature_owners: Mapping[str, str] | None = None,
) -> FeatureResult:
    """The customer table from the aggregated features, whichever engine aggregated them.

    ``grouped`` has one row per customer with usable rows, every built-in
    feature and ``_<net revenue feature>_units``, derived features computed
    against the default ``as_of`` when none was given; ``last_day_without_id``
    is the last date of a row with an amount but no customer id (it can move
    the default ``as_of``); ``unusable`` the ids of customers none of whose rows
    is usable. Fills in the report, joins the customer table (prospects), adds
    plugins' derived features and sorts by customer.
    """
    report.customers_without_usable_rows = unusable.height
    report.customers_with_transactions = grouped.height
    if grouped.height == 0:
        why = "; ".join(line.strip() for line in report.lines()[1:-1])
        raise DataError(f"{describe}: no usable transactions ({why})")
    if as_of is None:
        last_day = max(d for d in (grouped["last_activity"].max(), last_day_without_id) if d is not None)
        if last_day >= dt.date.max:
            raise DataError(f"{describe}: the last date is {last_day}, the largest date there is, so the "
                            f"default as_of (the day after) does not exist; give {option('as_of')}")
        as_of = last_day + dt.timedelta(days=1)
        if last_day != grouped["last_activity"].max():  # a later row without a customer id
            grouped = grouped.with_columns(_derived(pl.lit(as_of)))
    else:
        last_used = grouped["last_order"].max()
        gap = (as_of - last_used).days if last_used is not None else 0
        if gap > IMPLAUSIBLE_GAP_DAYS:
            report.warnings.append(
                f"as_of {as_of} is {gap:,} days after the last usable transaction ({last_used}): every customer's "
                f"recency is at least {gap:,} days, so every customer looks lost; is as_of right?")

    feats = grouped.select("customer_id", *BUILTIN_FEATURES,
                           *[pl.col(n) for n, f in plugin_features.items() if f.agg is not None])
    for table in tables:
        feats = _join_table(feats, table, feature_owners)
    report.net_revenue = float(Decimal(int(grouped[f"_{NET_REVENUE}_units"].sum() or 0)) / AMOUNT_SCALE)
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


def _join_table(feats: pl.DataFrame, table: pl.DataFrame, owners: Mapping[str, str] | None) -> pl.DataFrame:
    """``feats`` with a plugin's table joined (left, on ``customer_id``); an error if the table has a customer twice.

    When both are sorted by customer (checked here, one comparison per row; the pass sorts ``feats``, a query may
    return its table sorted), a twin is next to its row, and Polars joins the two by merging them instead of
    hashing: about 0.02 CPU-s instead of 0.2 (check and join) for a table of 1M customers, measured under load.
    Otherwise the ids are hashed, as before. Both ways give the same table.
    """
    ids, own = feats["customer_id"], table["customer_id"]
    merge = ((own.dtype.is_integer() or own.dtype == pl.String) and ids.dtype == own.dtype
             and own.null_count() == 0 and ids.null_count() == 0 and own.is_sorted() and ids.is_sorted())
    if merge:
        twins = own.len() > 1 and bool((own.slice(1) == own.slice(0, own.len() - 1)).any())
    else:
        twins = bool(own.is_duplicated().any())
    if twins:
        names = [n for n in table.columns if n != "customer_id"]
        raise DataError(f"plugin feature(s) {', '.join(names)}: the query returned more than one row for a "
                        f"customer ({owners_of(names, owners)})")
    if merge:
        feats, table = (t.with_columns(pl.col("customer_id").set_sorted()) for t in (feats, table))
    return feats.join(table, on="customer_id", how="left")


def owners_of(names, owners: Mapping[str, str] | None) -> str:
    return ", ".join(sorted({(owners or {}).get(n, "(unknown plugin)") for n in names}))


def _feature_error(features: Mapping[str, Feature], owners: Mapping[str, str], exc: Exception) -> DataError:
    """Name the plugin feature that uses a column the transactions do not have."""
    canonical = PLUGIN_ROW_COLUMNS
    empty = pl.LazyFrame(schema=canonical)
    for name, feat in features.items():
        if feat.agg is None and feat.table is None:
            continue
        try:
            if feat.table is not None:
                feat.table(empty).select("customer_id", name).collect_schema()
            else:
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
    report.table_only = table.join(feats.select("customer_id"), on="customer_id", how="anti").height
    joined = feats.join(table, on="customer_id", how="full", coalesce=True)
    prospects = joined["frequency"].is_null() & joined["last_activity"].is_null()
    report.prospects = int(prospects.sum())
    return joined.with_columns(pl.col(f.name).fill_null(f.empty) for f in FEATURES if f.empty is not None)


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
        pass  # not every id converts: both compared as text
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
    again = read_transactions(numbered, tx.mapping, date_format=tx.date_format, keep=("_tierbook_row",),
                              date_order=(tx.date_order, tx.date_formats) if tx.date_order else None,
                              decimal_comma=tx.decimal_comma)
    reasons = again.frame.select("_tierbook_row", reason.alias("reason")).filter(pl.col("reason").is_not_null())
    both = numbered.join(reasons, on="_tierbook_row", how="inner").sort("_tierbook_row")
    return both.select(pl.col("_tierbook_row").alias("row"), pl.exclude("_tierbook_row"))
