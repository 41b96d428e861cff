"""plugins/adc/workbench.py: the fast path equals the classifier, with its table and without."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from engine.fastpath import check_fast_path
from plugins.adc import ADC
from plugins.adc.workbench import AdcFastPath

AS_OF = dt.date(2024, 1, 1)


@pytest.mark.parametrize("max_cells", [None, 10])
def test_the_fast_path_equals_the_expressions(max_cells, monkeypatch):
    if max_cells is not None:  # customer by customer, above the cumulative table's size
        monkeypatch.setattr(AdcFastPath, "MAX_CELLS", max_cells)
    rng = np.random.default_rng(5)
    rec = rng.integers(0, 900, 700)
    df = pl.DataFrame({"customer_id": range(700), "recency_days": rec, "tenure_days": rec + rng.integers(0, 300, 700),
                       "monetary": rng.normal(50, 40, 700).round(2)})
    no_purchase = pl.Series(rng.random(700) < 0.05)        # no recency nor tenure
    never_seen = no_purchase & pl.Series(rng.random(700) < 0.5)   # nor a last activity: a prospect
    df = df.with_columns(pl.when(no_purchase).then(None).otherwise(pl.col(c)).alias(c)
                         for c in ("recency_days", "tenure_days"))
    df = df.with_columns(pl.when(never_seen).then(None).otherwise(pl.lit(AS_OF - dt.timedelta(days=3)))
                         .alias("last_activity"))
    assert df["last_activity"].null_count() and (df["recency_days"].is_null() & df["last_activity"].is_not_null()).any()
    moves = [{}, {"active_days": 1, "churn_days": 2}, {"new_days": 0}, {"new_days": 3650, "churn_days": 7300},
             {"active_days": 90, "churn_days": 91, "new_days": 89}]
    check_fast_path(ADC, df, moves, as_of=AS_OF)
