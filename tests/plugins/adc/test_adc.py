"""plugins.adc: each lifecycle rule and each boundary, on tiny frames and through the feature pass."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

import engine
from engine import ParamError, classify_frame


def adc(recency, tenure, registry, seen=None, **params):
    """``seen``: each customer's last_activity is set (default: when it has a recency, as the feature pass gives)."""
    seen = [r is not None for r in recency] if seen is None else seen
    df = pl.DataFrame({"customer_id": list(range(len(recency))), "recency_days": recency, "tenure_days": tenure,
                       "last_activity": [dt.date(2011, 1, 1) if s else None for s in seen]},
                      schema={"customer_id": pl.Int64, "recency_days": pl.Int64, "tenure_days": pl.Int64,
                              "last_activity": pl.Date})
    out = classify_frame(df, "adc", {"adc": params}, registry=registry)
    return out["adc"].cast(pl.String).to_list()


def test_active_boundary_is_inclusive(registry):
    assert adc([89, 90, 91], [400, 400, 400], registry) == ["active", "active", "dormant"]


def test_churn_boundary_is_inclusive(registry):
    assert adc([364, 365, 366, 2000], [900] * 4, registry) == ["dormant", "dormant", "churned", "churned"]


def test_new_boundary_is_inclusive(registry):
    # tenure 30 (first order 30 days ago) is new; 31 is not, so recency decides
    assert adc([1, 1, 31], [30, 31, 31], registry) == ["new", "active", "active"]


def test_new_wins_over_active(registry):
    assert adc([5], [5], registry) == ["new"]


def test_no_orders_is_prospect(registry):
    assert adc([None, 10], [None, 400], registry) == ["prospect", "active"]


def test_transactions_without_a_purchase_are_no_purchase_not_prospect(registry):
    # issue 10: a customer seen (last_activity) but without a purchase (no recency) only returned goods
    assert adc([None, None, 10], [None, None, 400], registry, seen=[True, False, True]) == [
        "no-purchase", "prospect", "active"]


def test_new_days_zero_switches_new_off(registry):
    assert adc([1, 1], [1, 30], registry, new_days=0) == ["active", "active"]


def test_other_thresholds(registry):
    got = adc([60, 61, 120, 121, 3], [500, 500, 500, 500, 7], registry, active_days=60, churn_days=120, new_days=7)
    assert got == ["active", "dormant", "dormant", "churned", "new"]


@pytest.mark.parametrize("active, churn", [(365, 365), (400, 365)])
def test_active_days_must_be_below_churn_days(registry, active, churn):
    with pytest.raises(ParamError, match=rf"active_days \({active}\) must be below churn_days \({churn}\)"):
        adc([1], [1], registry, active_days=active, churn_days=churn)


def test_bad_types_and_bounds(registry):
    with pytest.raises(ParamError, match="not a whole number"):
        adc([1], [1], registry, active_days=2.5)
    with pytest.raises(ParamError, match="below the minimum 0"):
        adc([1], [1], registry, new_days=-1)


def test_labels_are_an_enum_in_documented_order(registry):
    df = pl.DataFrame({"customer_id": [1], "recency_days": [1], "tenure_days": [100],
                       "last_activity": [dt.date(2011, 1, 1)]})
    out = classify_frame(df, "adc", registry=registry)
    assert out.schema["adc"] == pl.Enum(["active", "new", "dormant", "churned", "no-purchase", "prospect"])


def test_boundaries_through_the_feature_pass(registry):
    # as_of 2011-04-01: 2011-01-01 is exactly 90 days before, 2010-12-31 is 91;
    # 2010-04-01 is exactly 365 days before, 2010-03-31 is 366;
    # 2011-03-02 is exactly 30 days before (tenure 30: new), 2011-03-01 is 31.
    rows = [
        ("on90", "2010-06-01"), ("on90", "2011-01-01"),
        ("on91", "2010-06-01"), ("on91", "2010-12-31"),
        ("on365", "2010-04-01"),
        ("on366", "2010-03-31"),
        ("new30", "2011-03-02"),
        ("old31", "2011-03-01"),
    ]
    tx = pl.DataFrame({"customer_id": [r[0] for r in rows],
                       "order_date": [dt.date.fromisoformat(r[1]) for r in rows],
                       "amount": [10.0] * len(rows)})
    out = engine.classify(tx, classifiers=["adc"], as_of="2011-04-01", registry=registry,
                          customers=pl.DataFrame({"customer_id": ["nobody"]}))
    got = dict(zip(out["customer_id"].to_list(), out["adc"].cast(pl.String).to_list()))
    assert got == {"on90": "active", "on91": "dormant", "on365": "dormant", "on366": "churned",
                   "new30": "new", "old31": "active", "nobody": "prospect"}
    recency = dict(zip(out["customer_id"].to_list(), out["recency_days"].to_list()))
    assert (recency["on90"], recency["on91"], recency["on365"], recency["on366"]) == (90, 91, 365, 366)


def test_parameter_bounds_and_steps_as_listed(registry):
    """The bounds are enforced where `tierbook plugins` says they are; the workbench's sliders move in whole days."""
    from engine.registry import describe_registry

    adc = registry.classifier("adc")
    listed = {p["name"]: (p["min"], p["max"], p["step"]) for c in describe_registry(registry) if c["name"] == "adc"
              for p in c["params"]}
    assert listed == {"active_days": (1, 3650, 1), "churn_days": (2, 7300, 1), "new_days": (0, 3650, 1)}
    for name, (low, high, _) in listed.items():  # active_days stays below churn_days (check())
        adc.resolve({name: high, **({"churn_days": 7300} if name == "active_days" else {})})
        adc.resolve({name: low, **({"active_days": 1} if name == "churn_days" else {})})
        with pytest.raises(ParamError, match="maximum"):
            adc.resolve({name: high + 1, **({"churn_days": 7300} if name == "active_days" else {})})
        with pytest.raises(ParamError, match="minimum"):
            adc.resolve({name: low - 1})
