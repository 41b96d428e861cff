"""ABC's workbench fast path: one sort per metric, a cut-off move is a binary search; the Pareto chart.

Kept per metric: the customers with a positive metric sorted best first, the
cumulative share at the end of each one's tie group (non-decreasing), the rank
share likewise, the same two measures before each one's tie group starts,
and the prefix sums of their revenue. A cut-off ``a`` then takes the customers
whose group ends at or below ``a + 1e-12`` (``crossing=lower``) or starts below
``a - 1e-12`` (``upper``), and at least the top tie group: the same comparisons
as the classifier's expressions (the floats come from the same Polars ``sum``
and ``cum_sum``), so the classes are the classifier's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from engine.fastpath import Chart, FastPath, Overlay, enum_series, figure

from . import LABELS

#: The parameters this fast path implements; any other parameter set takes the generic path.
KNOWN = frozenset({"metric", "mode", "a", "b", "a_rank", "b_rank", "crossing"})
#: Points of the drawn Pareto curve (enough for a curve).
CURVE_POINTS = 2000


@dataclass
class Sorted:
    order: np.ndarray        # customers with a positive metric, best first
    share_end: np.ndarray    # cumulative share at the end of each one's tie group (non-decreasing)
    rank_end: np.ndarray     # rank share at the end of each one's tie group
    share_before: np.ndarray  # cumulative share before the start of each one's tie group (non-decreasing)
    rank_before: np.ndarray  # rank share before the start of each one's tie group
    top: int                 # size of the top tie group (always A)
    cum_share: np.ndarray    # cumulative share at each position (the Pareto curve)
    revenue_prefix: np.ndarray
    total: float


class AbcFastPath(FastPath):
    """ABC (see the plugin's rules): one sort per metric, binary searches per move."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._sorted: dict[str, Sorted] = {}
        self._total_rev = float(self.table.weights.sum())
        self._plots: dict[tuple[str, str], ParetoPlot] = {}  # the Pareto chart's figure, per metric and mode

    def supports(self, params: Mapping[str, Any]) -> bool:
        return set(params) == KNOWN

    def sorted(self, metric: str) -> Sorted:
        if metric not in self._sorted:
            # The same Polars operations as the classifier, so the floats are identical.
            m = self.table.customers[metric].cast(pl.Float64)
            total = float(m.fill_null(0.0).sum())
            values = m.fill_null(0.0).to_numpy()
            positive = np.flatnonzero(values > 0)
            order = positive[pl.Series(values[positive]).arg_sort(descending=True).to_numpy()]  # multi-threaded
            s = values[order]
            cum = pl.Series(s).cum_sum().to_numpy()
            # last index of each tie group
            last = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1)
            ends = np.repeat(last, np.diff(np.append(-1, last)))
            starts = np.repeat(np.append(0, last[:-1] + 1), np.diff(np.append(-1, last))) if len(s) else ends
            # the cumulative sum before each position, exactly the previous one (as the classifier's shift)
            prev = np.concatenate([[0.0], cum[:-1]])
            with np.errstate(divide="ignore", invalid="ignore"):
                share_end = cum[ends] / total if total > 0 else np.full(len(s), np.inf)
                share_before = prev[starts] / total if total > 0 else np.full(len(s), np.inf)
                cum_share = cum / total if total > 0 else np.zeros(len(s))
            rank_end = (ends + 1).astype(np.float64) / float(self.table.n)
            rank_before = starts.astype(np.float64) / float(self.table.n)
            top = int(last[0] + 1) if len(s) else 0
            self._sorted[metric] = Sorted(order, share_end, rank_end, share_before, rank_before, top, cum_share,
                                          np.cumsum(self.table.weights[order]), total)
        return self._sorted[metric]

    def bounds(self, p: Mapping[str, Any]) -> tuple[int, int]:
        """Number of A customers and of A or B customers."""
        c = self.sorted(p["metric"])
        upper = p.get("crossing", "lower") == "upper"
        if p["mode"] == "share":
            if not (c.total > 0 and np.isfinite(c.total)):
                return 0, 0
            cut_a, cut_b = p["a"], p["b"]
            measure = c.share_before if upper else c.share_end
        else:
            cut_a, cut_b = p["a_rank"], p["b_rank"]
            measure = c.rank_before if upper else c.rank_end
        if upper:  # tie groups whose measure before them is below the cut-off
            na = int(np.searchsorted(measure, cut_a - 1e-12, side="left"))
            nb = int(np.searchsorted(measure, cut_b - 1e-12, side="left"))
        else:  # tie groups whose measure at their end is within the cut-off
            na = int(np.searchsorted(measure, cut_a + 1e-12, side="right"))
            nb = int(np.searchsorted(measure, cut_b + 1e-12, side="right"))
        na = max(na, c.top)  # the top tie group is always A
        return na, max(na, nb)

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        c = self.sorted(params["metric"])
        na, nb = self.bounds(params)
        rev_a = float(c.revenue_prefix[na - 1]) if na else 0.0
        rev_ab = float(c.revenue_prefix[nb - 1]) if nb else 0.0
        counts = np.array([na, nb - na, self.table.n - nb, 0])
        revenue = np.array([rev_a, rev_ab - rev_a, self._total_rev - rev_ab, 0.0])
        return {"abc": (counts, revenue)}

    def label_codes(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        c = self.sorted(params["metric"])
        na, nb = self.bounds(params)
        codes = np.full(self.table.n, 2, dtype=np.uint32)
        codes[c.order[:na]] = 0
        codes[c.order[na:nb]] = 1
        return {"abc": codes}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        return {"abc": enum_series(LABELS, self.label_codes(params)["abc"], "abc")}

    def pareto_data(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """The Pareto curve (thinned to :data:`CURVE_POINTS`), the class bounds and the cut-offs.

        ``y`` is the cumulative share of the metric among the best customers,
        clipped to 0..1: when returns make the net total smaller than the sum of
        the positive values, the share passes 1 before the last customer, and the
        chart says so (``over``).
        """
        c = self.sorted(p["metric"])
        na, nb = self.bounds(p)
        n = max(self.table.n, 1)
        y = c.cum_share
        x = np.arange(1, len(y) + 1) / n
        if len(y) > CURVE_POINTS:
            idx = np.unique(np.linspace(0, len(y) - 1, CURVE_POINTS).astype(np.int64))
            x, y = x[idx], y[idx]
        over = bool(len(c.cum_share) and c.cum_share[-1] > 1.0 + 1e-12)
        return {"x": np.concatenate([[0.0], x]), "y": np.clip(np.concatenate([[0.0], y]), 0.0, 1.0),
                "over": over, "a_customers": na / n, "ab_customers": nb / n, "mode": p["mode"],
                "metric": p["metric"], "a": p["a"] if p["mode"] == "share" else p["a_rank"],
                "b": p["b"] if p["mode"] == "share" else p["b_rank"]}

    def charts(self, params: Mapping[str, Any]) -> Sequence[Chart]:
        na, nb = self.bounds(params)
        cut = (params["a"], params["b"]) if params["mode"] == "share" else (params["a_rank"], params["b_rank"])
        key = (params["metric"], params["mode"], cut, na, nb)
        return (Chart("pareto", key, lambda: self.pareto_plot(params).draw(self.pareto_data(params))),)

    def pareto_plot(self, params: Mapping[str, Any]) -> ParetoPlot:
        """The Pareto chart's figure for this metric and mode, kept across moves (only the cut-offs change)."""
        key = (params["metric"], params["mode"])
        if key not in self._plots:
            self._plots[key] = ParetoPlot(self.pareto_data(params))
        return self._plots[key]


class ParetoPlot:
    """The ABC Pareto chart as a figure kept across redraws.

    The axes, labels and title (what a metric and mode fix) are laid out and drawn once
    (:class:`~engine.fastpath.Overlay`); :meth:`draw` draws the class bands, the curve over them, the
    cut-off lines and the legend over that. The layout leaves room for the widest cut-off label, so the
    picture of a move is the same whichever moves came before.
    """

    def __init__(self, data: Mapping[str, Any]):
        self.fig = fig = figure(5.2, 3.6)
        self.ax = ax = fig.add_subplot()
        (self.curve,) = ax.plot(data["x"], data["y"], color="#1f4e79", lw=2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("share of customers (best first)")
        ax.set_ylabel(f"cumulative share of {data['metric']}")
        ax.set_title("ABC Pareto curve" + (" (returns: capped at 100% of the net total)" if data.get("over") else ""),
                     fontsize=10 if data.get("over") else None)
        if data["mode"] == "share":  # the cut-off labels stick out on the right: room for the widest one
            room = [ax.text(1.0, 0.5, f" {name} = 0.000000", va="center", ha="left", fontsize=8) for name in "ab"]
            fig.tight_layout()
            for text in room:
                text.remove()
        else:
            fig.tight_layout()
        self.moving: list[Any] = []
        self.overlay: Overlay | None = None

    def draw(self, data: Mapping[str, Any]) -> bytes:
        """PNG bytes of the chart with ``data``'s class bounds and cut-offs."""
        ax = self.ax
        for artist in self.moving:
            artist.remove()
        xa, xb = data["a_customers"], data["ab_customers"]
        bands = [ax.axvspan(0, xa, color="#2e7d32", alpha=0.15, label=f"A: {100 * xa:.1f}% of customers"),
                 ax.axvspan(xa, xb, color="#f9a825", alpha=0.15, label=f"B: {100 * (xb - xa):.1f}%")]
        lines = []
        if data["mode"] == "share":
            for cut, name in ((data["a"], "a"), (data["b"], "b")):
                lines.append(ax.axhline(cut, color="grey", ls="--", lw=1))
                lines.append(ax.text(1.0, cut, f" {name} = {cut:g}", va="center", ha="left", fontsize=8))
        for x in (xa, xb):
            lines.append(ax.axvline(x, color="grey", ls=":", lw=1))
        legend = ax.legend(handles=bands, loc="lower right", fontsize=8)
        self.moving = [*bands, *lines, legend]
        if self.overlay is None:
            self.overlay = Overlay(self.fig)
        return self.overlay.render([*bands, self.curve, *lines, legend])


def pareto_png(data: Mapping[str, Any]) -> bytes:
    """ABC Pareto chart: cumulative share of the metric against the share of customers, cut-offs drawn."""
    return ParetoPlot(data).draw(data)
