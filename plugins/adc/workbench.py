"""The lifecycle classifier's workbench fast path: a cumulative table over (recency, tenure).

Built once per customer table: customers and revenue with recency <= r and
tenure <= t for every distinct r and t (at most :attr:`AdcFastPath.MAX_CELLS`
cells), so a threshold move is three binary searches and a few reads. Above
that many cells the classes are counted customer by customer on two 32-bit day
arrays (vectorised).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from engine.fastpath import FastPath, enum_series

from . import LABELS

#: The parameters this fast path implements; any other parameter set takes the generic path.
KNOWN = frozenset({"active_days", "churn_days", "new_days"})


class AdcFastPath(FastPath):
    """Lifecycle stages (see the plugin's rules): vectorised comparisons on cached arrays."""

    #: Above this many (recency, tenure) cells the counts are taken customer by customer.
    MAX_CELLS = 4_000_000

    def __init__(self, *args: Any):
        super().__init__(*args)
        customers = self.table.customers
        rec = customers["recency_days"]
        ten = customers["tenure_days"]
        seen = customers["last_activity"].is_not_null()
        self.prospects = np.flatnonzero((~seen).to_numpy())                     # no transaction at all
        self.no_purchase = np.flatnonzero((rec.is_null() & seen).to_numpy())    # transactions, no purchase
        big = np.iinfo(np.int32).max  # days fit in 32 bits; half the memory traffic of 64
        self.rec = rec.fill_null(big).clip(None, big).cast(pl.Int32).to_numpy()
        self.ten = ten.fill_null(big).clip(None, big).cast(pl.Int32).to_numpy()  # a null tenure is never "new"
        self.table_ = None
        self._built = False

    def supports(self, params: Mapping[str, Any]) -> bool:
        return set(params) == KNOWN

    def codes(self, p: Mapping[str, Any]) -> np.ndarray:
        # active 0, new 1, dormant 2, churned 3, no-purchase 4, prospect 5; active_days < churn_days (checked)
        codes = (self.rec > p["active_days"]).astype(np.uint8) * 2 + (self.rec > p["churn_days"])
        codes[self.ten <= p["new_days"]] = 1
        codes[self.no_purchase] = 4
        codes[self.prospects] = 5
        return codes

    def _build(self) -> None:
        """Customers and revenue with recency <= r and tenure <= t, for every distinct r and t."""
        self._built = True
        weights = self.table.weights
        has = np.ones(self.table.n, dtype=bool)
        has[self.prospects] = False
        has[self.no_purchase] = False
        rec, ten = self.rec[has], self.ten[has]
        self.ur = np.unique(rec)
        self.ut = np.unique(ten)  # a null tenure is the largest value: never "new"
        shape = (len(self.ur), len(self.ut))
        if shape[0] * shape[1] > self.MAX_CELLS:
            return
        flat = np.searchsorted(self.ur, rec).astype(np.int64) * shape[1] + np.searchsorted(self.ut, ten)
        cells = shape[0] * shape[1]
        counts = np.bincount(flat, minlength=cells).reshape(shape)
        revenue = np.bincount(flat, weights=weights[has], minlength=cells).reshape(shape)
        self.table_ = (counts.cumsum(0).cumsum(1), revenue.cumsum(0).cumsum(1))

    def _at_most(self, rec: float, ten: float) -> tuple[int, float]:
        """Customers (and their revenue) with orders, recency <= rec and tenure <= ten."""
        i = int(np.searchsorted(self.ur, rec, side="right")) - 1
        j = int(np.searchsorted(self.ut, ten, side="right")) - 1
        if i < 0 or j < 0:
            return 0, 0.0
        return int(self.table_[0][i, j]), float(self.table_[1][i, j])

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not self._built:
            self._build()
        if self.table_ is None:
            return {"adc": self.tally(self.codes(params), len(LABELS))}
        inf = np.inf
        everyone = self._at_most(inf, inf)
        new = self._at_most(inf, params["new_days"])
        by_rec = {}
        for key in ("active_days", "churn_days"):
            all_, young = self._at_most(params[key], inf), self._at_most(params[key], params["new_days"])
            by_rec[key] = (all_[0] - young[0], all_[1] - young[1])   # not new, recency <= threshold
        active = by_rec["active_days"]
        dormant = (by_rec["churn_days"][0] - active[0], by_rec["churn_days"][1] - active[1])
        churned = (everyone[0] - new[0] - by_rec["churn_days"][0], everyone[1] - new[1] - by_rec["churn_days"][1])
        no_purchase = (len(self.no_purchase), float(self.table.weights[self.no_purchase].sum()))
        prospects = (len(self.prospects), float(self.table.weights[self.prospects].sum()))
        rows = (active, new, dormant, churned, no_purchase, prospects, (0, 0.0))
        return {"adc": (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))}

    def label_codes(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {"adc": self.codes(params)}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        return {"adc": enum_series(LABELS, self.codes(params), "adc")}
