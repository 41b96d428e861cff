"""Every installed classifier's workbench fast path gives its expressions' answer, on random parameter moves.

Parameter sets are drawn from each classifier's own ParamSpecs (bounds, steps, choices, booleans, numeric
feature columns), so a classifier added later is covered without a line here; sets its check refuses are
skipped, sets its fast path declines go to the generic path and are counted, so a fast path that declined
everything would fail.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ParamError
from engine.fastpath import FastPath, Table, check_fast_path
from engine.registry import get_registry

AS_OF = dt.date(2024, 1, 1)


def customers(n: int, seed: int) -> pl.DataFrame:
    """Every built-in feature, with ties, returns, zero amounts and prospects."""
    rng = np.random.default_rng(seed)
    freq = rng.geometric(0.45, n)
    rec = rng.integers(0, 900, n)
    monetary = np.round(rng.choice([5.0, 10.0, 25.0, 80.0], n) * freq - rng.integers(0, 3, n) * 5.0, 2)
    df = pl.DataFrame({
        "customer_id": np.arange(n), "recency_days": rec, "frequency": freq, "monetary": monetary,
        "tenure_days": rec + rng.integers(0, 400, n), "avg_order_value": np.round(monetary / freq, 2),
        "returns": rng.integers(0, 3, n), "returned_value": -rng.integers(0, 3, n) * 5.0,
        "first_order": [AS_OF - dt.timedelta(days=int(d) + 10) for d in rec],
        "last_order": [AS_OF - dt.timedelta(days=int(d)) for d in rec],
        "last_activity": [AS_OF - dt.timedelta(days=max(int(d) - 3, 0)) for d in rec],
    })
    no_purchase = pl.Series(rng.random(n) < 0.05)              # only returns: no purchase dates
    prospect = no_purchase & pl.Series(rng.random(n) < 0.5)    # no transaction at all
    df = df.with_columns(pl.when(no_purchase).then(None).otherwise(pl.col(c)).alias(c)
                         for c in ("recency_days", "tenure_days", "first_order", "last_order"))
    return df.with_columns(pl.when(prospect).then(None).otherwise(pl.col("last_activity")).alias("last_activity"))


REGISTRY = get_registry(strict=False)
WITH_FAST_PATH = sorted(name for name, c in REGISTRY.classifiers.items() if c.workbench is not None)
TABLE = customers(600, 3)


def value(spec, draw):
    if spec.type == "bool":
        return draw(st.booleans())
    if spec.type == "str" and spec.choices:
        return draw(st.sampled_from(spec.choices))
    if spec.type == "str" and spec.feature:
        return draw(st.sampled_from([c for c, t in TABLE.schema.items() if t.is_numeric() and c != "customer_id"]))
    if spec.type in ("int", "float") and spec.min is not None and spec.max is not None:
        if spec.type == "int":
            return draw(st.integers(int(spec.min), int(spec.max)))
        step = spec.step or (spec.max - spec.min) / 100
        k = draw(st.integers(0, int(round((spec.max - spec.min) / step))))
        return round(min(spec.min + k * step, spec.max), 10)
    return spec.default  # unbounded numbers, text, mappings: the default


def test_the_built_in_classifiers_bring_fast_paths():
    assert {"abc", "adc", "rfm"} <= set(WITH_FAST_PATH)


@pytest.mark.parametrize("name", WITH_FAST_PATH)
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_fast_path_agrees_with_the_expressions_on_random_moves(name, data):
    clf = REGISTRY.classifiers[name]
    moves = []
    for _ in range(4):  # a few moves of one or more parameters from the last valid set
        names = data.draw(st.lists(st.sampled_from([p.name for p in clf.params]), min_size=1, unique=True))
        move = {**(moves[-1] if moves else {}), **{n: value(clf.param(n), data.draw) for n in names}}
        try:
            clf.resolve(move)
        except ParamError:
            continue
        moves.append(move)
    check_fast_path(clf, TABLE, moves, as_of=AS_OF, registry=REGISTRY)


@pytest.mark.parametrize("name", WITH_FAST_PATH)
def test_a_fast_path_supports_its_defaults(name):
    clf = REGISTRY.classifiers[name]
    fast = clf.workbench(clf, Table.of(TABLE, AS_OF, REGISTRY))
    assert isinstance(fast, FastPath)
    assert fast.supports(clf.resolve()), f"{name}'s fast path declines its own defaults"


def test_check_fast_path_catches_a_wrong_fast_path():
    clf = REGISTRY.classifiers["adc"]

    class OffByOne(type(clf.workbench(clf, Table.of(TABLE, AS_OF)))):
        def codes(self, p):
            return super().codes({**p, "active_days": p["active_days"] + 1})

        def counts(self, p):
            return {"adc": self.tally(self.codes(p), 5)}

    from dataclasses import replace

    wrong = replace(clf, workbench=OffByOne)
    with pytest.raises(AssertionError, match="adc"):
        check_fast_path(wrong, TABLE, [{}], as_of=AS_OF)
