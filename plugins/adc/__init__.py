"""Lifecycle stages: active, new, dormant, churned, no-purchase, prospect.

Rules, checked in this order (the first that holds wins):

===========  ==============================================================
prospect     no usable transaction (a customer-table row without orders):
             ``last_activity`` is null
no-purchase  usable transactions, none of them a purchase (only returns or
             zero amounts): ``recency_days`` is null, ``last_activity`` is not
new          first purchase at most ``new_days`` (30) days before as_of
active       recency_days <= ``active_days`` (90)
dormant      recency_days <= ``churn_days`` (365)
churned      recency_days > ``churn_days``
===========  ==============================================================

Recency and tenure count from purchases (lines with a positive amount), so a
return does not make a customer active, and a customer who only returned goods
is not a buyer. Nor are they a prospect, someone who has not dealt with the
business at all: they get their own stage, ``no-purchase``, so that a rule meant
for prospects (a trial offer) does not reach them and one for them (ask why they
returned) can.

Boundaries are inclusive: a customer whose last transaction was exactly 90 days
before as_of is active, exactly 365 days dormant. ``active_days`` must be below
``churn_days``; ``new_days`` may be 0 to switch the *new* stage off.

Examples
--------
>>> import datetime as dt, polars as pl
>>> from engine import classify_frame
>>> df = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5, 6], "recency_days": [90, 91, 366, 5, None, None],
...                    "tenure_days": [400, 400, 500, 10, None, None],
...                    "last_activity": [dt.date(2011, 1, 1)] * 5 + [None]})
>>> classify_frame(df, "adc")["adc"].to_list()
['active', 'dormant', 'churned', 'new', 'no-purchase', 'prospect']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine import Classifier, Context, Output, ParamSpec, hookimpl

LABELS = ("active", "new", "dormant", "churned", "no-purchase", "prospect")


def _check(p: Mapping[str, Any]) -> None:
    if p["active_days"] >= p["churn_days"]:
        raise ValueError(f"active_days ({p['active_days']}) must be below churn_days ({p['churn_days']})")


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    recency, tenure = pl.col("recency_days"), pl.col("tenure_days")

    def lit(label: str) -> pl.Expr:  # the Enum the engine stores, without 1M strings in between
        return pl.lit(label, pl.Enum(LABELS))

    label = (
        pl.when(pl.col("last_activity").is_null())
        .then(lit("prospect"))
        .when(recency.is_null())
        .then(lit("no-purchase"))
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
    description="Lifecycle: active, new, dormant, churned; no-purchase (only returns); prospects without orders",
    outputs=(Output("adc", "lifecycle stage", labels=LABELS),),
    params=(
        ParamSpec("active_days", "int", 90, "A customer whose last purchase is at most this many days old is active.",
                  min=1, max=3650, step=1),
        ParamSpec("churn_days", "int", 365, "Beyond this many days since the last purchase a customer has churned.",
                  min=2, max=7300, step=1),
        ParamSpec("new_days", "int", 30, "A first purchase at most this many days old makes a new customer (0: off).",
                  min=0, max=3650, step=1),
    ),
    requires=("recency_days", "tenure_days", "last_activity"),
    expressions=_expressions,
    check=_check,
    workbench=_workbench,
)


@hookimpl
def register_classifiers(register) -> None:
    register(ADC)
