"""The report's charts: :class:`Figure` (the contract a classifier's report charts fulfil) and the
charts the core draws for any classifier and playbook (class sizes and revenue shares, rule hits).

A figure is a plotly.js figure given as plain JSON values, ``data`` (the traces) and ``layout``, as
the plotly.js reference describes them (https://plotly.com/javascript/reference/). The report
renders it with the plotly.js bundled into the file; no Python charting library is involved, so a
plugin that brings its own report charts needs no import beyond :class:`Figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "class_size_figure", "rules_figure", "PALETTE", "LEGEND_ON_TOP", "SEQUENTIAL"]

#: A horizontal legend above the plot (below it, it would cover the x axis' title).
LEGEND_ON_TOP = {"legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"}, "margin": {"t": 36}}

#: Colours of the report (colour-blind safe, Okabe-Ito), in the order traces use them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: Colour scale of heat maps: white (none) to dark blue (most).
SEQUENTIAL = [[0.0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1.0, "#08306b"]]


@dataclass(frozen=True)
class Figure:
    """One chart of the report.

    ``name`` identifies the chart in the page (``data-chart``; unique within a
    report section), ``title`` is shown above it, ``data`` and ``layout`` are a
    plotly.js figure as JSON values (lists, dicts, str, int, float, bool,
    None; NumPy arrays must be turned into lists), ``caption`` says in a
    sentence or two how to read it.

    Examples
    --------
    >>> f = Figure("sizes", "Customers per size", [{"type": "bar", "x": ["big", "small"], "y": [3, 9]}],
    ...            {"yaxis": {"title": {"text": "customers"}}}, caption="One bar per class.")
    >>> f.name, len(f.data)
    ('sizes', 1)
    """

    name: str
    title: str
    data: Sequence[Mapping[str, Any]]
    layout: Mapping[str, Any] = field(default_factory=dict)
    caption: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a report figure needs a name, got {self.name!r}")
        if not isinstance(self.data, (list, tuple)) or not all(isinstance(t, Mapping) for t in self.data):
            raise ValueError(f"report figure {self.name!r}: data must be a list of plotly.js traces (dicts)")
        if not isinstance(self.layout, Mapping):
            raise ValueError(f"report figure {self.name!r}: layout must be a dict")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def class_size_figure(classifier: str, column: str, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Share of customers and share of revenue per label of one class column (rows of ``summary["classes"]``).

    Labels run top to bottom in the classifier's order (best first), ``(none)`` last.
    """
    labels = [str(r["label"]) for r in rows]
    customers = [_finite(r["customer_share"]) for r in rows]
    revenue = [_finite(r["revenue_share"]) for r in rows]
    counts = [f"{r['customers']:,} customers" for r in rows]
    money = [f"revenue {r['revenue']:,.2f}" for r in rows]
    data = [
        {"type": "bar", "orientation": "h", "name": "share of customers", "y": labels, "x": customers,
         "marker": {"color": PALETTE[0]}, "customdata": counts,
         "hovertemplate": "%{y}: %{x:.1%} of customers (%{customdata})<extra></extra>",
         "texttemplate": "%{x:.1%}", "textposition": "auto"},
        {"type": "bar", "orientation": "h", "name": "share of revenue", "y": labels, "x": revenue,
         "marker": {"color": PALETTE[1]}, "customdata": money,
         "hovertemplate": "%{y}: %{x:.1%} of revenue (%{customdata})<extra></extra>",
         "texttemplate": "%{x:.1%}", "textposition": "auto"},
    ]
    layout = {"barmode": "group", "height": max(220, 60 + 44 * len(labels)),
              "xaxis": {"tickformat": ".0%", "title": {"text": "share of all customers / of net revenue"}},
              "yaxis": {"autorange": "reversed", "automargin": True}, **LEGEND_ON_TOP}
    return Figure(f"classes-{column}", f"{classifier}: {column}", data, layout,
                  caption="Each class's share of the customers beside its share of the net revenue (returns "
                          "subtracted). A class whose revenue bar is longer than its customer bar is worth more "
                          "than its size.")


def rules_figure(rules: Sequence[Mapping[str, Any]], fallback: str | None) -> Figure:
    """Per rule (in playbook order, the fallback last): the actions it gave and the customers capacity cut."""
    names = [f"{r['rule']} (fallback)" if fallback is not None and i == len(rules) - 1 and r["rule"] == fallback
             else str(r["rule"]) for i, r in enumerate(rules)]
    data = [
        {"type": "bar", "orientation": "h", "name": "actions", "y": names, "x": [r["actions"] for r in rules],
         "marker": {"color": PALETTE[2]}, "hovertemplate": "%{y}: %{x:,} actions<extra></extra>"},
        {"type": "bar", "orientation": "h", "name": "cut by capacity", "y": names,
         "x": [r["cut_by_capacity"] for r in rules], "marker": {"color": PALETTE[5]},
         "hovertemplate": "%{y}: %{x:,} cut by capacity<extra></extra>"},
    ]
    layout = {"barmode": "stack", "height": max(220, 70 + 36 * len(names)),
              "xaxis": {"title": {"text": "customers"}, "separatethousands": True},
              "yaxis": {"autorange": "reversed", "automargin": True}, **LEGEND_ON_TOP}
    return Figure("rules", "Rule hits and capacity cuts", data, layout,
                  caption="Customers each rule took under the hit policy: those who got its action and those its "
                          "capacity left out (they are in cut.csv). The fallback takes the customers no rule matched.")
