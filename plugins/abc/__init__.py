"""ABC classification by contribution.

Customers are ranked by a metric (``monetary`` by default; ``frequency`` or any
numeric column of the customer table). Two modes:

``share`` (default)
    A customer's *cumulative share* is the metric summed over every customer
    whose value is **greater than or equal to** theirs, divided by the metric's
    total over all customers. A: cumulative share <= ``a`` (0.80); B: <= ``b``
    (0.95); C: the rest. The A class therefore holds at most ``a`` of the total.
``rank``
    A customer's *rank share* is the number of customers whose value is greater
    than or equal to theirs, divided by the number of customers. A: rank share
    <= ``a_rank`` (0.20); B: <= ``b_rank`` (0.50, i.e. the next 30%); C: the rest.

Ties: equal values always get the same class, because both measures count the
whole tie group. A tie group that straddles a cut-off goes to the **lower**
class, so a class never exceeds its cut-off. Customers whose metric is zero,
negative or missing are always C. When the total is not positive, everyone is C.

Degenerate inputs follow from the same rules. A single customer, or customers
whose values are all equal, form one tie group holding the whole total (share
and rank share 1.0): above ``b`` / ``b_rank``, so they are C (B when that
cut-off is 1.0). The total is *net* (returns lower it), so when one customer
alone brings more than ``a`` of the net total, no customer is A.

Examples
--------
>>> import polars as pl
>>> from engine import classify_frame
>>> df = pl.DataFrame({"customer_id": [1, 2, 3, 4], "monetary": [70.0, 20.0, 10.0, -5.0]})
>>> classify_frame(df, "abc")["abc"].to_list()
['A', 'B', 'C', 'C']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine import Classifier, Context, Output, ParamSpec, hookimpl

LABELS = ("A", "B", "C")


def _check(p: Mapping[str, Any]) -> None:
    if p["a"] >= p["b"]:
        raise ValueError(f"a ({p['a']}) must be below b ({p['b']})")
    if p["a_rank"] >= p["b_rank"]:
        raise ValueError(f"a_rank ({p['a_rank']}) must be below b_rank ({p['b_rank']})")


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    m = pl.col(p["metric"]).cast(pl.Float64)
    positive = m.fill_null(0.0) > 0
    # Enum literals: the column is built as the Enum the engine stores, without 1M strings in between.
    a, b, c = (pl.lit(x, pl.Enum(LABELS)) for x in LABELS)
    if p["mode"] == "share":
        # A customer's cumulative share is the sum of every value >= theirs over the total: on the positive
        # values sorted descending, the cumulated share at the last position of their tie group. That share
        # only grows along the sorted values, so each class is "value above a cut value": the value at the
        # first position whose share exceeds the cut-off. Every customer above it (their tie group ends
        # before it) is within the cut-off; it and every customer below it (their group ends at or after
        # it) are not. One sort, one cumulative sum and a binary search per cut-off, no rank.
        pos_values = m.fill_null(0.0).clip(lower_bound=0.0)
        ordered = pos_values.sort(descending=True, nulls_last=True)
        total = m.fill_null(0.0).sum()
        shares = ordered.cum_sum() / total
        # A null after the last value: when no share exceeds the cut-off, every positive value is in.
        padded = ordered.extend_constant(None, 1)

        def within(cut: float) -> pl.Expr:
            above = padded.gather(shares.search_sorted(cut + 1e-12, side="right"))
            return (m > above).fill_null(True)

        valid = (positive & (total > 0)).cast(pl.UInt32)
        # 0 (A), 1 (B) or 2 (C), by arithmetic: a when/then would sort once per branch (the optimiser does
        # not share a subexpression between its branches). A is within b as well (a < b).
        in_a, in_b = within(p["a"]).cast(pl.UInt32), within(p["b"]).cast(pl.UInt32)
        label = pl.lit(pl.Series(LABELS, dtype=pl.Enum(LABELS))).gather(2 - valid * (in_a + in_b))
    else:
        measure = m.rank("max", descending=True) / pl.len()
        label = (
            pl.when(positive & (measure <= p["a_rank"] + 1e-12))
            .then(a)
            .when(positive & (measure <= p["b_rank"] + 1e-12))
            .then(b)
            .otherwise(c)
        )
    return {"abc": label}



def _workbench(classifier: Classifier, table: Any) -> Any:
    """The workbench fast path (plugins/abc/workbench.py), imported only when a workbench opens."""
    from .workbench import AbcFastPath

    return AbcFastPath(classifier, table)


ABC = Classifier(
    name="abc",
    description="ABC tiers by contribution: A brings most of the revenue, B the next, C the rest",
    outputs=(Output("abc", "A, B or C by cumulative contribution", labels=LABELS),),
    params=(
        ParamSpec("metric", "str", "monetary", "Numeric customer column to rank by.", feature=True),
        ParamSpec("mode", "str", "share", "share: cut by cumulative metric share; rank: by share of customers.",
                  choices=("share", "rank")),
        ParamSpec("a", "float", 0.80, "share mode: A holds at most this cumulative share of the metric.",
                  min=0.01, max=0.99, step=0.01),
        ParamSpec("b", "float", 0.95, "share mode: A and B together hold at most this cumulative share.",
                  min=0.02, max=1.0, step=0.01),
        ParamSpec("a_rank", "float", 0.20, "rank mode: this share of customers (the top) is A.",
                  min=0.01, max=0.99, step=0.01),
        ParamSpec("b_rank", "float", 0.50, "rank mode: this share of customers (A included) is A or B.",
                  min=0.02, max=1.0, step=0.01),
    ),
    requires=(),
    expressions=_expressions,
    check=_check,
    workbench=_workbench,
)


@hookimpl
def register_classifiers(register) -> None:
    register(ABC)
