"""The report's sections over time: migration heat maps, a Sankey of flows between snapshots, KPI trends,
the cohort heat map. They draw the tables a snapshot run computes (:mod:`engine.snapshots`:
``migration``, ``flows``, ``kpis``, ``cohorts``), for any label column of any classifier: classes are in
the order the matrix gives them (the output's labels, best first), ``entered`` first and ``left`` last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from .figures import LEGEND_ON_TOP, PALETTE, SEQUENTIAL, Figure

__all__ = ["migration_figure", "sankey_figure", "kpi_count_figure", "kpi_rate_figure", "cohort_figure",
           "ordered_classes"]


def _date(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def ordered_classes(matrix: pl.DataFrame) -> tuple[list[str], list[str]]:
    """The rows (``entered`` and the labels, by rank) and columns (the labels, then ``left``) of one matrix."""
    rows = (matrix.select("from", "from_rank").unique().sort("from_rank", nulls_last=False)["from"].to_list())
    cols = (matrix.select("to", "to_rank").unique().sort("to_rank", nulls_last=True)["to"].to_list())
    return rows, cols


def migration_figure(migration: pl.DataFrame, classifier: str, column: str) -> Figure:
    """The transition matrix of one label column as a heat map, one slider step per pair of snapshots.

    Cells are customers (text: count and share of the row); hover adds the revenue of the cell's
    customers as of each snapshot. The last pair is shown first.
    """
    m = migration.filter(pl.col("column") == column).sort("from_as_of")
    pairs = m.select("from_as_of", "to_as_of").unique(maintain_order=True).rows()
    data, steps = [], []
    for k, (start, end) in enumerate(pairs):
        cells = m.filter((pl.col("from_as_of") == start) & (pl.col("to_as_of") == end))
        rows, cols = ordered_classes(cells)
        at = {(f, t): (n, s, rf, rt) for f, t, n, s, rf, rt in
              cells.select("from", "to", "customers", "row_share", "revenue_from", "revenue_to").iter_rows()}
        z = [[at.get((f, t), (0,))[0] for t in cols] for f in rows]
        text = [[f"{at[(f, t)][0]:,}<br>{100 * (at[(f, t)][1] or 0):.0f}%" if (f, t) in at and at[(f, t)][0] else ""
                 for t in cols] for f in rows]
        money = [[f"{(at.get((f, t), (0, 0, 0.0))[2] or 0):,.2f} -> {(at.get((f, t), (0, 0, 0.0, 0.0))[3] or 0):,.2f}"
                  for t in cols] for f in rows]
        data.append({"type": "heatmap", "z": z, "x": cols, "y": rows, "text": text, "texttemplate": "%{text}",
                     "customdata": money, "colorscale": SEQUENTIAL, "visible": k == len(pairs) - 1,
                     "colorbar": {"title": {"text": "customers"}}, "name": f"{_date(start)} -> {_date(end)}",
                     "hovertemplate": "from %{y} to %{x}: %{z:,} customers<br>revenue %{customdata}"
                                      "<extra></extra>"})
        steps.append({"label": f"{_date(start)} → {_date(end)}", "method": "restyle",
                      "args": [{"visible": [j == k for j in range(len(pairs))]}]})
    n_rows = len(ordered_classes(m.filter(pl.col("from_as_of") == pairs[-1][0]))[0]) if pairs else 1
    layout = {"height": max(360, 190 + 34 * n_rows), "margin": {"t": 96 if len(pairs) > 1 else 30, "b": 60},
              "xaxis": {"title": {"text": "class at the later snapshot"}, "type": "category", "automargin": True},
              "yaxis": {"title": {"text": "class at the earlier snapshot"}, "type": "category",
                        "autorange": "reversed", "automargin": True}}
    if len(pairs) > 1:
        # above the plot: below it the slider would cover the class names of the x axis
        layout["sliders"] = [{"active": len(pairs) - 1, "steps": steps, "y": 1.0, "yanchor": "bottom",
                              "pad": {"t": 0, "b": 10}, "currentvalue": {"prefix": "snapshots: "}}]
    elif pairs:
        layout["title"] = {"text": f"{_date(pairs[0][0])} → {_date(pairs[0][1])}", "x": 0.5, "font": {"size": 13}}
    return Figure(f"migration-{column}", f"{classifier}: {column}, migration between snapshots", data, layout,
                  caption="Rows: the class at the earlier snapshot (entered: not a customer then, or no class); "
                          "columns: the class at the later one (left: none now). A cell counts the customers who "
                          "moved so, with their share of the row; the diagonal stayed. Classes best first, so cells "
                          "right of the diagonal moved down. The slider picks the pair of snapshots.")


def sankey_figure(migration: pl.DataFrame, classifier: str, column: str) -> Figure:
    """The flows of one label column across every snapshot: a node per (snapshot, class), links of customers."""
    m = migration.filter((pl.col("column") == column) & (pl.col("customers") > 0)).sort("from_as_of")
    dates = sorted({*m["from_as_of"].to_list(), *m["to_as_of"].to_list()})
    labels_by_rank = (pl.concat([m.select(pl.col("from").alias("label"), pl.col("from_rank").alias("rank")),
                                 m.select(pl.col("to").alias("label"), pl.col("to_rank").alias("rank"))])
                      .drop_nulls("rank").unique().sort("rank"))
    classes = labels_by_rank["label"].to_list()
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    nodes: dict[tuple[str, str], int] = {}
    node_labels, node_colours, node_x = [], [], []

    def node(when: Any, label: str) -> int:
        key = (_date(when), label)
        if key not in nodes:
            nodes[key] = len(nodes)
            node_labels.append(f"{label} ({_date(when)})")
            node_colours.append(colour.get(label, "#9aa5ae"))
            node_x.append(dates.index(when) / max(len(dates) - 1, 1))
        return nodes[key]

    source, target, value, link_colours = [], [], [], []
    for start, end, f, t, n in m.select("from_as_of", "to_as_of", "from", "to", "customers").iter_rows():
        source.append(node(start, f))
        target.append(node(end, t))
        value.append(int(n))
        link_colours.append(_fade(colour.get(f, "#9aa5ae")))
    data = [{"type": "sankey", "arrangement": "snap", "valueformat": ",d", "valuesuffix": " customers",
             "node": {"label": node_labels, "color": node_colours, "pad": 12, "thickness": 14,
                      "x": [min(max(x, 0.001), 0.999) for x in node_x]},
             "link": {"source": source, "target": target, "value": value, "color": link_colours}}]
    layout = {"height": max(380, 36 * (len(classes) + 2)), "margin": {"t": 20, "l": 20, "r": 20, "b": 20}}
    return Figure(f"sankey-{column}", f"{classifier}: {column}, flows between snapshots", data, layout,
                  caption="Each column of boxes is a snapshot (oldest left), each box a class; a band carries the "
                          "customers who moved from one class to the next snapshot's (entered: new customers or "
                          "no class before; left: no class after). Hover for the numbers.")


def _fade(hex_colour: str, alpha: float = 0.35) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def kpi_count_figure(kpis: pl.DataFrame) -> Figure:
    """Active, new, reactivated, retained and churned customers per period (at its end date)."""
    x = [_date(d) for d in kpis["as_of"].to_list()]
    names = [k for k in ("active", "new", "reactivated", "retained", "churned") if k in kpis.columns]
    data = [{"type": "scatter", "mode": "lines+markers", "name": k, "x": x, "y": kpis[k].to_list(),
             "line": {"color": PALETTE[i]}, "hovertemplate": f"{k}: %{{y:,}} in the period to %{{x}}<extra></extra>"}
            for i, k in enumerate(names)]
    layout = {"height": 360, **LEGEND_ON_TOP, "xaxis": {"title": {"text": "period ending (as_of, exclusive)"}},
              "yaxis": {"title": {"text": "customers"}, "rangemode": "tozero", "separatethousands": True}}
    return Figure("kpi-customers", "Customers per period", data, layout,
                  caption="Per period between two snapshots, plotted at the period's end. The definitions are in the "
                          "table beside the charts.")


def kpi_rate_figure(kpis: pl.DataFrame) -> Figure:
    """Retention rate, churn rate and revenue retention per period."""
    x = [_date(d) for d in kpis["as_of"].to_list()]
    names = [k for k in ("retention_rate", "churn_rate", "revenue_retention") if k in kpis.columns]
    data = [{"type": "scatter", "mode": "lines+markers", "name": k.replace("_", " "), "x": x,
             "y": kpis[k].to_list(), "line": {"color": PALETTE[i + 2]},
             "hovertemplate": f"{k.replace('_', ' ')}: %{{y:.1%}} in the period to %{{x}}<extra></extra>"}
            for i, k in enumerate(names)]
    layout = {"height": 360, **LEGEND_ON_TOP, "xaxis": {"title": {"text": "period ending (as_of, exclusive)"}},
              "yaxis": {"title": {"text": "rate"}, "tickformat": ".0%", "rangemode": "tozero"}}
    return Figure("kpi-rates", "Retention, churn and revenue retention", data, layout,
                  caption="Retention: customers active in both the period and the one before, over those active in "
                          "the one before; churn: 1 - retention; revenue retention: what last period's buyers spent "
                          "this period over what they spent last period.")


def cohort_figure(cohorts: pl.DataFrame, *, value: str = "active_share") -> Figure:
    """Cohorts (month or quarter of first purchase) by period: the share of the cohort that bought, or revenue."""
    cohort_names = [_date(c) for c in cohorts.select("cohort").unique().sort("cohort")["cohort"].to_list()]
    periods = cohorts.select("as_of").unique().sort("as_of")["as_of"].to_list()
    at = {(_date(c), p): (v, n, a) for c, p, v, n, a in
          cohorts.select("cohort", "as_of", value, "cohort_size", "active").iter_rows()}
    z = [[at[(c, p)][0] if (c, p) in at else None for p in periods] for c in cohort_names]
    extra = [[f"{at[(c, p)][2]:,} of {at[(c, p)][1]:,}" if (c, p) in at else "" for p in periods]
             for c in cohort_names]
    share = value == "active_share"
    data = [{"type": "heatmap", "z": z, "x": [_date(p) for p in periods], "y": cohort_names, "customdata": extra,
             "colorscale": SEQUENTIAL, "xgap": 1, "ygap": 1, "hoverongaps": False,
             "colorbar": {"title": {"text": "share active" if share else "revenue"},
                          "tickformat": ".0%" if share else ",.0f"},
             "hovertemplate": ("cohort %{y}, period to %{x}: %{z:.1%} active (%{customdata})<extra></extra>"
                               if share else "cohort %{y}, period to %{x}: revenue %{z:,.2f}<extra></extra>")}]
    layout = {"height": max(320, 120 + 18 * len(cohort_names)),
              "xaxis": {"title": {"text": "period ending (as_of, exclusive)"}, "type": "category"},
              "yaxis": {"title": {"text": "cohort (first purchase)"}, "type": "category", "autorange": "reversed",
                        "automargin": True}}
    title = "Cohorts: share of each cohort that bought" if share else "Cohorts: net revenue per period"
    return Figure(f"cohorts-{value}", title, data, layout,
                  caption="Rows: customers by the month (or quarter) of their first purchase; columns: periods "
                          "between snapshots. " + ("A cell is the share of the cohort with a purchase in the period."
                                                   if share else "A cell is the cohort's net revenue in the period."))


def flows_rows(flows: pl.DataFrame, column: str) -> list[Mapping[str, Any]]:
    """The flows of one label column for its last pair of snapshots (the report's table)."""
    f = flows.filter(pl.col("column") == column)
    if not f.height:
        return []
    last = f["to_as_of"].max()
    return f.filter(pl.col("to_as_of") == last).sort("rank").to_dicts()


def kpi_rows(kpis: pl.DataFrame) -> Sequence[Mapping[str, Any]]:
    return kpis.sort("as_of").to_dicts()
