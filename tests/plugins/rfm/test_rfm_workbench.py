"""plugins/rfm/workbench.py: the fast path equals the classifier; the R x F grid counts the customers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from engine.fastpath import Table, check_fast_path
from plugins.rfm import RFM
from plugins.rfm.workbench import RfmFastPath, heatmap_png

AS_OF = dt.date(2024, 1, 1)


def table(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    freq = rng.geometric(0.5, n)
    df = pl.DataFrame({"customer_id": range(n), "recency_days": rng.integers(1, 500, n), "frequency": freq,
                       "monetary": np.round(rng.choice([5.0, 20.0], n) * freq, 0)})
    prospect = pl.Series(rng.random(n) < 0.1)
    return df.with_columns(pl.when(prospect).then(None).otherwise(pl.col(c)).alias(c)
                           for c in ("recency_days", "frequency", "monetary"))


def test_the_fast_path_equals_the_expressions():
    moves = [{}, {"bins": 3, "hv_min_r": 2, "hv_min_f": 2, "hv_min_m": 2, "potential_min_total": 4},
             {"bins": 10, "prospects_are_potential": False}, {"potential_min_total": 15}]
    check_fast_path(RFM, table(600, 1), moves, as_of=AS_OF)


def test_the_fast_path_tells_prospects_from_customers_who_only_returned():
    # with last_activity a customer without recency is a prospect only when never seen (issue 10)
    df = table(600, 2)
    rng = np.random.default_rng(3)
    seen = df["recency_days"].is_not_null() | pl.Series(rng.random(600) < 0.5)
    df = df.with_columns(pl.when(seen).then(pl.lit(dt.date(2023, 12, 1))).alias("last_activity"))
    assert (df["recency_days"].is_null() & df["last_activity"].is_not_null()).any()
    moves = [{}, {"prospects_are_potential": False}, {"bins": 4, "hv_min_r": 2, "hv_min_f": 2, "hv_min_m": 2,
                                                      "potential_min_total": 5}]
    check_fast_path(RFM, df, moves, as_of=AS_OF)


def test_a_parameter_it_does_not_know_is_declined():
    fast = RfmFastPath(RFM, Table.of(table(10, 2), AS_OF))
    assert fast.supports(RFM.resolve())
    assert not fast.supports({**RFM.resolve(), "m_measure": "mean"})


def test_the_rf_grid_counts_customers_per_r_and_f():
    customers = table(500, 3)
    fast = RfmFastPath(RFM, Table.of(customers, AS_OF))
    p = RFM.resolve()
    cols = fast.columns(p)
    grid = fast.rf_grid(5)
    assert grid.sum() == cols["rfm_r"].is_not_null().sum()
    both = pl.DataFrame({"r": cols["rfm_r"], "f": cols["rfm_f"]})
    assert grid[0, -1] == both.filter((pl.col("r") == 5) & (pl.col("f") == 5)).height  # top row is R = 5
    (chart,) = fast.charts(p)
    assert chart.name == "rf-grid" and heatmap_png(grid)[:4] == b"\x89PNG"
    assert fast.charts(RFM.resolve({"hv_min_r": 4}))[0].key == chart.key  # tiers moved, the grid did not
    assert fast.charts(RFM.resolve({"bins": 4, "hv_min_r": 2}))[0].key != chart.key


def test_the_kept_heat_map_figure_draws_what_a_new_one_draws():
    fast = RfmFastPath(RFM, Table.of(table(500, 4), AS_OF))
    grids = [fast.rf_grid(5), fast.rf_grid(5)[::-1].copy(), fast.rf_grid(5)]
    plot = fast.heatmap(5)
    pictures = [plot.draw(g) for g in grids]
    assert pictures == [heatmap_png(g) for g in grids]
    assert pictures[0] == pictures[2] != pictures[1]
