"""Lifecycle stages: active, new, dormant, churned, prospect.

Rules, checked in this order (the first that holds wins):

=========  ================================================================
prospect   no usable transaction (a customer-table row without orders)
new        first transaction at most ``new_days`` (30) days before as_of
active     recency_days <= ``active_days`` (90)
dormant    recency_days <= ``churn_days`` (365)
churned    recency_days > ``churn_days``
=========  ================================================================

Boundaries are inclusive: a customer whose last transaction was exactly 90 days
before as_of is active, exactly 365 days dormant. ``active_days`` must be below
``churn_days``; ``new_days`` may be 0 to switch the *new* stage off.

Examples
--------
>>> import datetime as dt, polars as pl
>>> from engine import classify_frame
>>> df = pl.DataFrame({"customer_id": [1, 2, 3, 4], "recency_days": [90, 91, 366, 5],
...                    "tenure_days": [400, 400, 500, 10]})
>>> classify_frame(df, "adc")["adc"].to_list()
['active', 'dormant', 'churned', 'new']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine import Classifier, Context, Output, ParamSpec, hookimpl

LABELS = ("active", "new", "dormant", "churned", "prospect")


def _check(p: Mapping[str, Any]) -> None:
    if p["active_days"] >= p["churn_days"]:
        raise ValueError(f"active_days ({p['active_days']}) must be below churn_days ({p['churn_days']})")


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    recency, tenure = pl.col("recency_days"), pl.col("tenure_days")

    def lit(label: str) -> pl.Expr:  # the Enum the engine stores, without 1M strings in between
        return pl.lit(label, pl.Enum(LABELS))

    label = (
        pl.when(recency.is_null())
        .then(lit("prospect"))
        .when(tenure <= p["new_days"])
        .then(lit("new"))
        .when(recency <= p["active_days"])
        .then(lit("active"))
        .when(recency <= p["churn_days"])
        .then(lit("dormant"))
        .otherwise(lit("churned"))
    )
    return {"adc": label}



def _workbench(classifier: Classifier, table: Any) -> Any:
    """The workbench fast path (plugins/adc/workbench.py), imported only when a workbench opens."""
    from .workbench import AdcFastPath

    return AdcFastPath(classifier, table)


ADC = Classifier(
    name="adc",
    description="Lifecycle: active, new, dormant, churned, and prospects without orders",
    outputs=(Output("adc", "lifecycle stage", labels=LABELS),),
    params=(
        ParamSpec("active_days", "int", 90, "A customer whose last order is at most this many days old is active.",
                  min=1, max=3650, step=1),
        ParamSpec("churn_days", "int", 365, "Beyond this many days since the last order a customer has churned.",
                  min=2, max=7300, step=1),
        ParamSpec("new_days", "int", 30, "A first order at most this many days old makes a new customer (0: off).",
                  min=0, max=3650, step=1),
    ),
    requires=("recency_days", "tenure_days"),
    expressions=_expressions,
    check=_check,
    workbench=_workbench,
)


@hookimpl
def register_classifiers(register) -> None:
    register(ADC)
