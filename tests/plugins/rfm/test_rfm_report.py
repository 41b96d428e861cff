"""RFM's report chart: the R x F grid holds every scored customer in its cell."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from engine.fastpath import Table
from engine.run import Selection, apply_classifiers
from plugins.rfm import RFM


@pytest.mark.parametrize("bins", [5, 3])
def test_grid_cells_are_the_customers_scores(bins):
    rng = np.random.default_rng(11)
    n = 400
    recency = rng.integers(1, 400, n).astype(float)
    recency[:15] = np.nan  # prospects: no scores
    customers = pl.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],
        "recency_days": recency, "frequency": rng.integers(1, 30, n),
        "monetary": np.round(rng.gamma(2, 150, n), 2), "last_activity": [dt.date(2023, 6, 1)] * n,
    }).with_columns(pl.col("recency_days").fill_nan(None).cast(pl.Int64),
                    pl.when(pl.col("recency_days").is_null()).then(0).otherwise(pl.col("frequency"))
                    .alias("frequency"))
    p = RFM.resolve({"bins": bins, **({"hv_min_r": 2, "hv_min_f": 2, "hv_min_m": 2, "potential_min_total": 5}
                                       if bins == 3 else {})})
    classified = apply_classifiers(customers, [Selection(RFM, p)], as_of=dt.date(2024, 1, 1))
    [fig] = RFM.report(RFM, Table.of(classified, dt.date(2024, 1, 1)), p)
    z = fig.data[0]["z"]
    assert len(z) == bins and all(len(row) == bins for row in z)
    pdf = classified.select("rfm_r", "rfm_f", "monetary").to_pandas().dropna()
    for (r, f), group in pdf.groupby(["rfm_r", "rfm_f"]):
        assert z[bins - int(r)][int(f) - 1] == len(group)
        assert fig.data[0]["customdata"][bins - int(r)][int(f) - 1] == pytest.approx(group["monetary"].sum(),
                                                                                      abs=0.01)
    assert sum(map(sum, z)) == len(pdf) == n - 15
    assert f"{15:,} customers without an order" in fig.caption
    assert fig.data[0]["y"][0] == str(bins)  # best recency on top
