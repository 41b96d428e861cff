"""RFM's workbench fast path: scores and their (R, F, M) histogram per number of bins; the R x F chart.

Kept per number of bins: the three scores of every customer (from the ``min``
ranks, computed once) and the histogram of customers and revenue over the
(R, F, M) cells, so a value-tier or segment change re-tallies at most 1,331
cells, not the customers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from engine.fastpath import Chart, FastPath, enum_series, figure, png

from . import TIERS, _grid

#: The parameters this fast path implements; any other parameter set takes the generic path.
KNOWN = frozenset({"bins", "hv_min_r", "hv_min_f", "hv_min_m", "potential_min_total", "prospects_are_potential",
                   "segments"})
#: The conventions' switches, implemented here at these values only (min-rank scores, M from the total, the
#: grid); segment_codes and segment_other matter only with segments_by=code.
DEFAULT_CONVENTIONS = {"binning": "rank", "monetary": "total", "segments_by": "grid"}
CONVENTIONS = frozenset({*DEFAULT_CONVENTIONS, "segment_codes", "segment_other"})


@dataclass
class Scores:
    r: np.ndarray            # scores 1..bins, 0 for customers without orders
    f: np.ndarray
    m: np.ndarray
    cell: np.ndarray         # r * (bins+1)^2 + f * (bins+1) + m; 0 for customers without orders
    hist: np.ndarray         # customers per cell
    hist_revenue: np.ndarray


def _five(score: np.ndarray, bins: int) -> np.ndarray:
    return score if bins == 5 else (score * 5 + bins - 1) // bins


class RfmFastPath(FastPath):
    """RFM (see the plugin's rules): scores and their histogram cached per number of bins."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        customers = self.table.customers
        self.has = customers["recency_days"].is_not_null().to_numpy()
        self.n_has = int(self.has.sum())
        # Without a purchase: a prospect (cell 0), or a customer seen only through returns (cell 1, which no
        # scored customer has: their R is at least 1); see the plugin's value tiers
        seen = customers.get_column("last_activity", default=None)
        self.seen_only = (~self.has & seen.is_not_null().to_numpy()) if seen is not None else None
        # "min" ranks among customers with orders, as the classifier ranks them (R: most recent best)
        ranks = customers.filter(pl.Series(self.has)).select(
            (-pl.col("recency_days")).rank("min").alias("r"), pl.col("frequency").rank("min").alias("f"),
            pl.col("monetary").rank("min").alias("m"))
        self._ranks = {name: ranks[name].cast(pl.Int64).to_numpy() for name in ("r", "f", "m")}
        self._scores: dict[int, Scores] = {}
        self._series: dict[int, dict[str, pl.Series]] = {}
        self._plot: tuple[int, HeatmapPlot] | None = None  # the R x F chart's figure, per number of bins

    def supports(self, params: Mapping[str, Any]) -> bool:
        # The peers' conventions (qcut binning, M from the mean, segments by code) take the generic path.
        switches = {k: params.get(k, v) for k, v in DEFAULT_CONVENTIONS.items()}
        return KNOWN <= set(params) <= KNOWN | CONVENTIONS and switches == DEFAULT_CONVENTIONS

    def scores(self, bins: int) -> Scores:
        if bins not in self._scores:
            n = self.table.n
            out = {}
            for name, rank in self._ranks.items():
                s = np.zeros(n, dtype=np.int64)
                if self.n_has:
                    s[self.has] = (rank - 1) * bins // self.n_has + 1
                out[name] = s
            side = bins + 1
            cell = out["r"] * side * side + out["f"] * side + out["m"]
            if self.seen_only is not None:
                cell[self.seen_only] = 1
            hist = np.bincount(cell, minlength=side ** 3)
            hist_rev = np.bincount(cell, weights=self.table.weights, minlength=side ** 3)
            self._scores = {bins: Scores(out["r"], out["f"], out["m"], cell, hist, hist_rev)}
        return self._scores[bins]

    def _cell_luts(self, p: Mapping[str, Any]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """Segment and tier code of every (r, f, m) cell (cell 0: no orders)."""
        bins = p["bins"]
        side = bins + 1
        grid = _grid(p)
        segments = tuple(grid)
        lookup = {int(c): i for i, name in enumerate(segments) for c in grid[name]}
        r, f, m = np.meshgrid(np.arange(side), np.arange(side), np.arange(side), indexing="ij")
        r, f, m = r.ravel(), f.ravel(), m.ravel()
        fm = (_five(f, bins) + _five(m, bins) + 1) // 2
        cell = _five(r, bins) * 10 + fm
        seg = np.array([lookup.get(int(c), len(segments)) for c in cell], dtype=np.uint32)
        high = (r >= p["hv_min_r"]) & (f >= p["hv_min_f"]) & (m >= p["hv_min_m"])
        potential = (r + f + m) >= p["potential_min_total"]
        tier = np.where(high, 0, np.where(potential, 1, 2)).astype(np.uint32)
        seg[0] = seg[1] = len(segments)             # no purchase: no segment
        tier[0] = 1 if p["prospects_are_potential"] else 2   # prospects
        tier[1] = 2                                  # seen only through returns: ordinary
        return segments, seg, tier

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        sc = self.scores(params["bins"])
        segments, seg, tier = self._cell_luts(params)
        out = {}
        for column, lut, n in (("rfm_segment", seg, len(segments)), ("value_tier", tier, len(TIERS))):
            counts = np.bincount(lut, weights=sc.hist, minlength=n + 1).astype(np.int64)
            revenue = np.bincount(lut, weights=sc.hist_revenue, minlength=n + 1)
            out[column] = (counts, revenue)
        return out

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        bins = params["bins"]
        sc = self.scores(bins)
        if bins not in self._series:
            cols = {}
            for name in ("r", "f", "m"):
                values = getattr(sc, name)
                cols[f"rfm_{name}"] = pl.Series(f"rfm_{name}", values, dtype=pl.Int8).set(
                    pl.Series(~self.has), None)
            cols["rfm_code"] = pl.select(pl.concat_str([cols[c].cast(pl.String) for c in
                                                        ("rfm_r", "rfm_f", "rfm_m")]).alias("rfm_code")).to_series()
            self._series = {bins: cols}
        segments, seg, tier = self._cell_luts(params)
        out = dict(self._series[bins])
        out["rfm_segment"] = enum_series(segments, seg[sc.cell], "rfm_segment")
        out["value_tier"] = enum_series(TIERS, tier[sc.cell], "value_tier")
        return out

    def label_codes(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        sc = self.scores(params["bins"])
        _, seg, tier = self._cell_luts(params)
        return {"rfm_segment": seg[sc.cell], "value_tier": tier[sc.cell]}

    def rf_grid(self, bins: int) -> np.ndarray:
        """Customers per (R, F) cell: rows R = bins .. 1, columns F = 1 .. bins."""
        side = bins + 1
        h = self.scores(bins).hist.reshape(side, side, side).sum(axis=2)
        return h[1:, 1:][::-1]

    def charts(self, params: Mapping[str, Any]) -> Sequence[Chart]:
        grid = self.rf_grid(params["bins"])
        return (Chart("rf-grid", (params["bins"], grid.tobytes()), lambda: self.heatmap(grid.shape[0]).draw(grid)),)

    def heatmap(self, bins: int) -> HeatmapPlot:
        """The R x F chart's figure for this number of bins, kept across moves."""
        if self._plot is None or self._plot[0] != bins:
            self._plot = (bins, HeatmapPlot(bins))
        return self._plot[1]


class HeatmapPlot:
    """The R x F heat map as a figure kept across redraws: axes, colour bar and layout are made once
    (the same whatever the counts); :meth:`draw` sets the cells, the colour scale and the numbers in the
    cells, and draws the figure (the colour bar's scale moves with the counts)."""

    def __init__(self, bins: int):
        self.bins = bins
        self.fig = fig = figure(4.6, 3.6)
        self.ax = ax = fig.add_subplot()
        self.im = ax.imshow(np.zeros((bins, bins)), cmap="Blues")
        ax.set_xticks(range(bins), [str(f) for f in range(1, bins + 1)])
        ax.set_yticks(range(bins), [str(r) for r in range(bins, 0, -1)])
        ax.set_xlabel("F score")
        ax.set_ylabel("R score")
        ax.set_title("RFM grid: customers per R x F")
        self.texts = [[ax.text(j, i, "", ha="center", va="center", fontsize=7 if bins > 6 else 8)
                       for j in range(bins)] for i in range(bins)] if bins <= 10 else []
        fig.colorbar(self.im, ax=ax, shrink=0.8)
        self.im.set_clim(0, 9_000_000)  # laid out once, with room for the colour bar's widest numbers
        fig.tight_layout()

    def draw(self, grid: np.ndarray) -> bytes:
        """PNG bytes of the heat map of ``grid`` (rows R = bins .. 1, columns F = 1 .. bins)."""
        self.im.set_data(grid)
        top = grid.max() if grid.size else 0
        self.im.set_clim(grid.min() if grid.size else 0, top)
        for i, row in enumerate(self.texts):
            for j, text in enumerate(row):
                v = int(grid[i, j])
                text.set_text(f"{v:,}")
                text.set_color("white" if top and v > top * 0.6 else "black")
        return png(self.fig)


def heatmap_png(grid: np.ndarray) -> bytes:
    """R x F heat map: customers per (recency score, frequency score) cell."""
    return HeatmapPlot(grid.shape[0]).draw(grid)
