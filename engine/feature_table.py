"""The built-in features, each described once.

:data:`FEATURES` is the single source of truth for a built-in feature: its
name, its dtype, what it means and how it is computed. The feature pass
(:mod:`engine.features`), the playbook's predicted schema, ``tierbook plugins``
and ``docs/features.md`` (``python tools/features_table.py``) are all built from
it, and so is the Spark feature pass (:mod:`engine.spark`), so adding a feature
is one row here plus, for a new kind of aggregation, its translation in each pass.

A feature is either

* an :class:`Agg`: one aggregation over a customer's *usable* rows (a
  customer id, a date, an amount, before ``as_of``), optionally restricted to
  purchases (amount > 0) or returns (amount < 0), which each engine translates
  into its own aggregation; or
* a :class:`Derived`: an expression over the aggregated features and
  ``as_of``, written once against the small vocabulary of :class:`Ops`
  (:class:`engine.features._PolarsOps` builds Polars expressions from it).

Amounts are summed exactly as integer units of 1/``AMOUNT_SCALE`` and turned
into currency at the end (see :mod:`engine.data`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

__all__ = ["Agg", "Derived", "BuiltinFeature", "Ops", "FEATURES", "ROWS", "by_name", "markdown_table"]

#: Which of a customer's usable rows an aggregation reads.
ROWS = {
    "all": "every usable row",
    "purchases": "purchase lines (amount > 0)",
    "returns": "return lines (amount < 0)",
}
#: Aggregations an engine must translate, with the canonical columns each may read.
OPS = {
    "sum": ("amount",),
    "min": ("order_date",),
    "max": ("order_date",),
    "count": ("amount",),
    "n_unique": ("order_key",),
}


@dataclass(frozen=True)
class Agg:
    """An aggregation over a customer's usable rows.

    ``op`` is one of ``sum``, ``min``, ``max``, ``count`` (rows) and
    ``n_unique`` (distinct values; a missing order id on a purchase counts as
    one order); ``column`` a canonical column (``amount`` is summed exactly, in
    units); ``rows`` one of :data:`ROWS`; ``negate`` turns the sum's sign.
    """

    op: str
    column: str
    rows: str = "all"
    negate: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS or self.column not in OPS[self.op]:
            raise ValueError(f"unsupported aggregation {self.op}({self.column})")
        if self.rows not in ROWS:
            raise ValueError(f"unknown row selection {self.rows!r}; one of {', '.join(ROWS)}")

    def text(self) -> str:
        what = {"sum": f"sum of {self.column}", "min": f"earliest {self.column}", "max": f"latest {self.column}",
                "count": "count", "n_unique": f"distinct {self.column} values"}[self.op]
        sign = "minus the " if self.negate else ""
        return f"{sign}{what} of {ROWS[self.rows]}"


class Ops(Protocol):
    """What a :class:`Derived` expression may use; each engine implements it for its own expressions."""

    def col(self, name: str) -> Any: ...

    def days_to_as_of(self, date: Any) -> Any: ...

    def where(self, condition: Any, value: Any) -> Any: ...


@dataclass(frozen=True)
class Derived:
    """An expression over aggregated features and ``as_of``; ``uses`` names the features it reads."""

    build: Callable[[Ops], Any]
    uses: tuple[str, ...]
    formula: str


@dataclass(frozen=True)
class BuiltinFeature:
    """One built-in feature: its name, dtype, meaning and computation.

    ``empty`` is its value for a customer without any usable transaction (a
    prospect from the customer table): 0 for counts and sums, null otherwise.
    ``low`` is the smallest value the computation can give (None: no bound),
    which ``tierbook check`` uses to prove a condition can never be true
    (``recency_days < 1``); every built-in feature is finite (never NaN or
    infinite: amounts are summed as exact units).
    ``tests/engine/test_feature_table.py`` checks the bounds on generated data.
    """

    name: str
    dtype: pl.DataType
    description: str
    compute: Agg | Derived
    empty: int | float | None = None
    low: int | float | None = None

    @property
    def how(self) -> str:
        """How it is computed, in words (the docs' and ``tierbook plugins``' column)."""
        return self.compute.text() if isinstance(self.compute, Agg) else self.compute.formula


FEATURES: tuple[BuiltinFeature, ...] = (
    BuiltinFeature("recency_days", pl.Int64(), "days from the last purchase to as_of (1 = the day before); null "
                   "without a purchase",
                   Derived(lambda o: o.days_to_as_of(o.col("last_order")), ("last_order",),
                           "as_of - last_order, in days"), low=1),
    BuiltinFeature("frequency", pl.Int64(), "orders: distinct order ids with at least one purchase line (a "
                   "cancellation-only invoice is not an order; without order ids, one order per day)",
                   Agg("n_unique", "order_key", "purchases"), empty=0, low=0),
    BuiltinFeature("monetary", pl.Float64(), "net revenue: the sum of all amounts, returns included",
                   Agg("sum", "amount"), empty=0.0),
    BuiltinFeature("first_order", pl.Date(), "day of the first purchase", Agg("min", "order_date", "purchases")),
    BuiltinFeature("last_order", pl.Date(), "day of the last purchase", Agg("max", "order_date", "purchases")),
    BuiltinFeature("last_activity", pl.Date(), "day of the last transaction of any kind (a purchase, a return, "
                   "a zero amount)", Agg("max", "order_date")),
    BuiltinFeature("tenure_days", pl.Int64(), "days from the first purchase to as_of; null without a purchase",
                   Derived(lambda o: o.days_to_as_of(o.col("first_order")), ("first_order",),
                           "as_of - first_order, in days"), low=1),
    BuiltinFeature("avg_order_value", pl.Float64(), "average order value; null without an order",
                   Derived(lambda o: o.where(o.col("frequency") > 0, o.col("monetary") / o.col("frequency")),
                           ("frequency", "monetary"), "monetary / frequency when frequency > 0")),
    BuiltinFeature("returns", pl.Int64(), "returned or cancelled lines", Agg("count", "amount", "returns"),
                   empty=0, low=0),
    BuiltinFeature("returned_value", pl.Float64(), "value of the returned lines, as a positive number",
                   Agg("sum", "amount", "returns", negate=True), empty=0.0, low=0.0),
)


def by_name() -> dict[str, BuiltinFeature]:
    """The table keyed by feature name, in table order."""
    return {f.name: f for f in FEATURES}


def _check_table() -> None:
    names = [f.name for f in FEATURES]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate built-in feature names: {names}")
    for f in FEATURES:
        if isinstance(f.compute, Derived):
            unknown = [u for u in f.compute.uses if u not in names]
            if unknown:
                raise ValueError(f"feature {f.name!r} uses unknown features {unknown}")
            derived_before = [u for u in f.compute.uses if isinstance(by_name()[u].compute, Derived)]
            if derived_before:
                raise ValueError(f"feature {f.name!r}: a derived feature may use aggregated ones only")


_check_table()


def markdown_table() -> str:
    """The table as Markdown (docs/features.md, README)."""
    lines = ["| feature | dtype | meaning | computed as |", "| --- | --- | --- | --- |"]
    for f in FEATURES:
        lines.append(f"| `{f.name}` | {f.dtype} | {f.description} | {f.how} |")
    return "\n".join(lines)
