"""ABC's chart in ``tierbook report``: the Pareto curve with the A and B customers marked.

Drawn from the classified customer table: the metric's positive values sorted best first, their
cumulative share of the metric's net total, and the class bounds counted from the ``abc`` column
itself (so the shading is exactly the classes the run gave).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from engine.report import PALETTE, Figure

#: Points of the drawn curve (enough for a smooth curve at any number of customers).
CURVE_POINTS = 2000


def pareto_figure(table: Any, params: Mapping[str, Any]) -> Figure:
    customers: pl.DataFrame = table.customers
    metric = params["metric"]
    n = max(customers.height, 1)
    values = customers[metric].cast(pl.Float64).fill_null(0.0)
    total = float(values.sum())
    ordered = values.filter(values > 0).sort(descending=True)
    cum = ordered.cum_sum().to_numpy()
    share = cum / total if total > 0 else np.zeros(len(cum))
    x = np.arange(1, len(cum) + 1) / n
    if len(cum) > CURVE_POINTS:
        idx = np.unique(np.linspace(0, len(cum) - 1, CURVE_POINTS).astype(np.int64))
        x, share = x[idx], share[idx]
    over = bool(len(share) and share[-1] > 1.0 + 1e-12)  # returns: the positives pass the net total
    x = np.concatenate([[0.0], x]).round(6).tolist()
    y = np.clip(np.concatenate([[0.0], share]), 0.0, 1.0).round(6).tolist()
    counts = customers["abc"].value_counts()
    by_label = {str(k): int(v) for k, v in counts.iter_rows()}
    xa = by_label.get("A", 0) / n
    xb = xa + by_label.get("B", 0) / n
    shapes = [
        {"type": "rect", "xref": "x", "yref": "paper", "x0": 0, "x1": xa, "y0": 0, "y1": 1,
         "fillcolor": PALETTE[2], "opacity": 0.15, "line": {"width": 0}, "layer": "below"},
        {"type": "rect", "xref": "x", "yref": "paper", "x0": xa, "x1": xb, "y0": 0, "y1": 1,
         "fillcolor": PALETTE[1], "opacity": 0.15, "line": {"width": 0}, "layer": "below"},
    ]
    annotations = [
        {"x": xa / 2, "y": 0.06, "xref": "x", "yref": "paper", "showarrow": False,
         "text": f"A: {100 * xa:.1f}% of customers"},
        {"x": (xa + xb) / 2, "y": 0.16, "xref": "x", "yref": "paper", "showarrow": False,
         "text": f"B: {100 * (xb - xa):.1f}%"},
    ]
    if params["mode"] == "share":
        for cut, name in ((params["a"], "a"), (params["b"], "b")):
            shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": cut, "y1": cut,
                           "line": {"color": "grey", "dash": "dash", "width": 1}})
            annotations.append({"x": 1, "y": cut, "xref": "paper", "yref": "y", "xanchor": "right",
                                "yanchor": "bottom", "showarrow": False, "text": f"{name} = {cut:g}"})
    data = [{"type": "scatter", "mode": "lines", "x": x, "y": y, "name": "cumulative share",
             "line": {"color": "#1f4e79", "width": 2},
             "hovertemplate": "the best %{x:.1%} of customers bring %{y:.1%} of " + metric + "<extra></extra>"}]
    layout = {"height": 380, "showlegend": False, "shapes": shapes, "annotations": annotations,
              "xaxis": {"range": [0, 1], "tickformat": ".0%", "title": {"text": "share of customers (best first)"}},
              "yaxis": {"range": [0, 1.02], "tickformat": ".0%", "title": {"text": f"cumulative share of {metric}"}}}
    caption = (f"Customers sorted by {metric}, best first; the curve is the share of the total {metric} the best "
               "ones bring. Green: the A customers, amber: B, the rest C"
               + (f" ({params['mode']} mode: cut-offs a = {params['a']:g}, b = {params['b']:g})."
                  if params["mode"] == "share" else
                  f" (rank mode: a_rank = {params['a_rank']:g}, b_rank = {params['b_rank']:g})."))
    if over:
        caption += " Returns make the net total smaller than the positive values' sum: the curve is capped at 100%."
    return Figure("pareto", "ABC Pareto curve", data, layout, caption=caption)


def figures(classifier: Any, table: Any, params: Mapping[str, Any]) -> list[Figure]:
    return [pareto_figure(table, params)]
