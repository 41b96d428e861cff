"""RFM's chart in ``tierbook report``: the R x F grid, customers and revenue per (recency, frequency) score.

Drawn from the classified customer table's ``rfm_r`` and ``rfm_f`` (customers without orders have
no scores and are not in the grid; the caption counts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.report import SEQUENTIAL, Figure


def grid_figure(table: Any, params: Mapping[str, Any]) -> Figure:
    customers: pl.DataFrame = table.customers
    bins = int(params["bins"])
    revenue = pl.col("monetary").fill_null(0.0) if "monetary" in customers.columns else pl.lit(0.0)
    cells = (customers.select(pl.col("rfm_r").cast(pl.Int64).alias("r"), pl.col("rfm_f").cast(pl.Int64).alias("f"),
                              revenue.alias("revenue"))
             .filter(pl.col("r").is_not_null() & pl.col("f").is_not_null())
             .group_by("r", "f").agg(pl.len().alias("n"), pl.col("revenue").sum()))
    n = [[0] * bins for _ in range(bins)]
    rev = [[0.0] * bins for _ in range(bins)]
    for r, f, count, money in cells.iter_rows():
        n[bins - r][f - 1] = int(count)          # rows R = bins .. 1 (best on top), columns F = 1 .. bins
        rev[bins - r][f - 1] = round(float(money), 2)
    unscored = customers.height - sum(map(sum, n))
    ticks_r = [str(r) for r in range(bins, 0, -1)]
    ticks_f = [str(f) for f in range(1, bins + 1)]
    data = [{"type": "heatmap", "z": n, "x": ticks_f, "y": ticks_r, "customdata": rev, "colorscale": SEQUENTIAL,
             "colorbar": {"title": {"text": "customers"}}, "texttemplate": "%{z:,}" if bins <= 10 else "",
             "hovertemplate": "R %{y}, F %{x}: %{z:,} customers, revenue %{customdata:,.2f}<extra></extra>"}]
    layout = {"height": 420, "xaxis": {"title": {"text": "F score (frequency, 1 = fewest orders)"}, "type": "category"},
              "yaxis": {"title": {"text": "R score (recency, 5 = most recent)" if bins == 5 else "R score"},
                        "type": "category"}}
    return Figure("rf-grid", "RFM grid: customers per R x F score", data, layout,
                  caption=f"Customers per recency and frequency score ({bins} bins each); hover for the cell's "
                          f"revenue. Top right: recent and frequent buyers. {unscored:,} customers without an order "
                          "have no scores and are not in the grid.")


def figures(classifier: Any, table: Any, params: Mapping[str, Any]) -> list[Figure]:
    return [grid_figure(table, params)]
