"""ABC classification by contribution.

Customers are ranked by a metric (``monetary`` by default; ``frequency`` or any
numeric column of the customer table). Two modes:

``share`` (default)
    A customer's *cumulative share* is the metric summed over every customer
    whose value is **greater than or equal to** theirs, divided by the metric's
    total over all customers. A: cumulative share <= ``a`` (0.80); B: <= ``b``
    (0.95); C: the rest.
``rank``
    A customer's *rank share* is the number of customers whose value is greater
    than or equal to theirs, divided by the number of customers. A: rank share
    <= ``a_rank`` (0.20); B: <= ``b_rank`` (0.50, i.e. the next 30%); C: the rest.

Ties: equal values always get the same class, because both measures count the
whole tie group. Customers whose metric is zero, negative or missing are always
C. In share mode, when the total is not positive, everyone is C.

The crossing tie group (``crossing``)
    The tie group whose measure passes a cut-off (its share before it is below
    ``a``, its share at its end above) is the *crossing* group.

    ``lower`` (default): it goes to the lower class, so A holds at most ``a``
    of the total and A and B at most ``b``, with one exception: the top tie
    group (the best customer, and whoever ties with them) is always A. Without
    it, one customer bringing more than ``a`` of the revenue left A empty and
    the best customer in B or C. ``upper``: it stays in the higher class, as
    in the "add customers until a reaches 80%" reading of ABC; A then holds at
    least ``a`` (when the total allows) and the top group is A by the same rule.
    B takes the group crossing ``b`` in the same way, unless A already passed
    ``b``, in which case B is empty: the customers that B would have held are
    in A.

    ``lower`` is the default because a cut-off then means what its help says
    ("A holds at most this share"), results before this option stay the same
    for every input where A was not empty, and SQL or pandas reports that cut
    at ``<= 0.8`` agree with it. B is not forced to be non-empty under
    ``lower``: the group after A that passes ``b`` is exactly the crossing
    group ``lower`` puts in C; ``upper`` is the setting that keeps it in B.

Degenerate inputs follow from the same rules: a single customer, or customers
whose values are all equal, form the top tie group, so they are A whatever
the cut-offs. The total is *net* (returns lower it), so shares can pass 1.

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
    upper = p["crossing"] == "upper"
    top = m == m.filter(positive).max()  # the top tie group: always A (see the module's docstring)
    if p["mode"] == "share":
        # A customer's cumulative share is the sum of every value >= theirs over the total: on the positive
        # values sorted descending, the cumulated share at the last position of their tie group. That share
        # only grows along the sorted values, so each class is "value above a cut value": the value at the
        # first position whose share exceeds the cut-off. Every customer above it (their tie group ends
        # before it) is within the cut-off; it and every customer below it (their group ends at or after
        # it) are not. One sort, one cumulative sum and a binary search per cut-off, no rank.
        pos_values = m.fill_null(0.0).clip(lower_bound=0.0)
        ordered = pos_values.sort(descending=True)  # no nulls: filled above
        total = m.fill_null(0.0).sum()
        cum = ordered.cum_sum()
        shares = cum / total
        # The share of everything before each position (exactly the previous cumulative sum).
        before = cum.shift(1, fill_value=0.0) / total

        def within(cut: float) -> pl.Expr:
            if upper:  # tie groups whose share *before* them is below the cut-off: the crossing group is in
                q = before.search_sorted(cut - 1e-12, side="left").cast(pl.Int64)
                # null past the last value: no share reaches the cut-off, every positive value is in
                w = ordered.gather(q, null_on_oob=True)
                # the group of the first position at or past the cut-off is in when it started before it (at
                # q = 0 that group is the top one, in anyway)
                started = ordered.gather((q - 1).clip(lower_bound=0), null_on_oob=True) == w
                return ((m > w) | ((m == w) & started)).fill_null(True)
            # null past the last value: no share exceeds the cut-off, every positive value is in
            above = ordered.gather(shares.search_sorted(cut + 1e-12, side="right"), null_on_oob=True)
            return (m > above).fill_null(True)

        valid = (positive & (total > 0) & total.is_finite()).cast(pl.UInt32)
    else:
        if upper:  # tie groups with fewer than a_rank of the customers before them
            before_rank = (m.rank("min", descending=True) - 1) / pl.len()

            def within(cut: float) -> pl.Expr:
                return before_rank < cut - 1e-12
        else:
            measure = m.rank("max", descending=True) / pl.len()

            def within(cut: float) -> pl.Expr:
                return measure <= cut + 1e-12

        valid = positive.cast(pl.UInt32)
    cut_a, cut_b = (p["a"], p["b"]) if p["mode"] == "share" else (p["a_rank"], p["b_rank"])
    # 0 (A), 1 (B) or 2 (C), by arithmetic: a when/then would sort once per branch (the optimiser does
    # not share a subexpression between its branches). A is within b as well (a < b), and the top group is A.
    in_a = (within(cut_a) | top).fill_null(False).cast(pl.UInt32)
    in_b = (within(cut_b) | top).fill_null(False).cast(pl.UInt32)
    # Enum literals: the column is built as the Enum the engine stores, without 1M strings in between.
    label = pl.lit(pl.Series(LABELS, dtype=pl.Enum(LABELS))).gather(2 - valid * (in_a + in_b))
    return {"abc": label}



def _workbench(classifier: Classifier, table: Any) -> Any:
    """The workbench fast path (plugins/abc/workbench.py), imported only when a workbench opens."""
    from .workbench import AbcFastPath

    return AbcFastPath(classifier, table)


def _report(classifier: Classifier, table: Any, params: Mapping[str, Any]) -> list:
    """The report's charts (plugins/abc/report.py), imported only when a report is written."""
    from .report import figures

    return figures(classifier, table, params)


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
        ParamSpec("crossing", "str", "lower",
                  "The tie group that passes a cut-off: lower puts it in the lower class (A holds at most a; the "
                  "top group is A all the same), upper keeps it in the higher one.", choices=("lower", "upper")),
    ),
    requires=(),
    expressions=_expressions,
    check=_check,
    workbench=_workbench,
    report=_report,
)


@hookimpl
def register_classifiers(register) -> None:
    register(ABC)
