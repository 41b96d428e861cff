"""The Jupyter workbench: tune a playbook's thresholds with widgets, watch the classes move.

    import engine
    from engine.widgets import Workbench
    wb = Workbench(engine.load_playbook("playbooks/abc-resource-allocation.yaml"))
    wb            # shows the controls, class sizes, rule hits, charts and a Save button

Every control is generated from the classifiers' :class:`~engine.params.ParamSpec`
(a slider with the spec's bounds and step, a dropdown for choices or feature
columns, a checkbox for booleans, a date picker for ``as_of``), so a
third-party plugin's parameters get controls without any code here.

The work is split in two layers:

:class:`WorkbenchModel`
    No widgets. It holds the customer table (features computed once, by
    :meth:`Playbook.prepare`), and on a parameter change recomputes only what
    depends on that classifier: class sizes and revenue shares first (the
    *numbers*, the fast path), then, on demand, the label columns, the rules and
    the chart data. Each classifier is evaluated by an *evaluator* that caches
    what does not depend on its thresholds. The built-in ``abc``, ``adc`` and
    ``rfm`` have incremental evaluators (a sorted cumulative sum for ABC, so a
    cut-off change is a binary search; RFM scores and their R x F x M histogram
    per number of bins); every other classifier goes through the engine's own
    :func:`~engine.run.apply_classifiers`, cached per parameter set. The tests
    check that both give exactly the engine's labels.
:class:`Workbench`
    The ipywidgets front end: controls, an HTML summary whose numbers carry
    CSS classes and ``data-*`` attributes (``td.tierbook-count[data-column=abc][data-label=A]``),
    matplotlib charts rendered to PNG into ``Image`` widgets (redrawn after the
    numbers, timed separately), sample customers of a chosen class, and a Save
    button that writes the tuned parameters back with :meth:`Playbook.save`
    (comments kept) and shows the diff.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .classifier import Classifier, Output
from .errors import ParamError, TierbookError
from .params import ParamSpec
from .run import Prepared, Selection, apply_classifiers

__all__ = ["WorkbenchModel", "Workbench", "numbers_html", "rules_html", "pareto_png", "heatmap_png"]

NONE_LABEL = "(none)"
_NUMBERS_SCHEMA = {"classifier": pl.String, "column": pl.String, "label": pl.String, "customers": pl.Int64,
                   "customer_share": pl.Float64, "revenue": pl.Float64, "revenue_share": pl.Float64}


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in params.items()))


# ------------------------------------------------------------------ evaluators
class _Evaluator:
    """Evaluates one classifier on a fixed customer table, caching what it can."""

    def __init__(self, clf: Classifier, customers: pl.DataFrame, as_of: dt.date, registry: Any,
                 weights: np.ndarray):
        self.clf = clf
        self.customers = customers
        self.as_of = as_of
        self.registry = registry
        self.weights = weights  # monetary, nulls as 0, for revenue per class
        self.n = customers.height

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{column: (customers per label + (none), revenue per label + (none))}`` for class outputs."""
        raise NotImplementedError

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        """Every output column, as the engine would add it."""
        raise NotImplementedError

    def _tally(self, codes: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(codes, minlength=n_labels + 1)
        revenue = np.bincount(codes, weights=self.weights, minlength=n_labels + 1)
        return counts, revenue


class _EngineEvaluator(_Evaluator):
    """Any classifier: the engine's own expressions, cached per parameter set."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._cache: dict[str, dict[str, pl.Series]] = {}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        key = _key(params)
        if key not in self._cache:
            sel = Selection(self.clf, dict(params))
            out = apply_classifiers(self.customers, [sel], as_of=self.as_of, registry=self.registry)
            self._cache = {key: {o.column: out[o.column] for o in sel.outputs}}  # keep the latest only
        return self._cache[key]

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        cols = self.columns(params)
        out = {}
        for o in self.clf.output_specs(params):
            if o.labels is None:
                continue
            codes = cols[o.column].to_physical().fill_null(len(o.labels)).cast(pl.Int64).to_numpy()
            out[o.column] = self._tally(codes, len(o.labels))
        return out


def _enum(labels: Sequence[str], codes: np.ndarray, name: str) -> pl.Series:
    """Label column from codes (``len(labels)`` means null)."""
    values = pl.Series(name, [*labels, None], dtype=pl.Enum(list(labels)))
    return values.gather(pl.Series(codes.astype(np.uint32)))


@dataclass
class _AbcSorted:
    order: np.ndarray        # customers with a positive metric, best first
    share_end: np.ndarray    # cumulative share at the end of each one's tie group (non-decreasing)
    rank_end: np.ndarray     # rank share at the end of each one's tie group
    cum_share: np.ndarray    # cumulative share at each position (the Pareto curve)
    revenue_prefix: np.ndarray
    total: float


class _AbcEvaluator(_Evaluator):
    """ABC (plugins/abc): one sort per metric; a cut-off change is a binary search."""

    LABELS = ("A", "B", "C")

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._sorted: dict[str, _AbcSorted] = {}

    def sorted(self, metric: str) -> _AbcSorted:
        if metric not in self._sorted:
            # The same Polars operations as the classifier, so the floats are identical.
            m = self.customers[metric].cast(pl.Float64)
            total = float(m.fill_null(0.0).sum())
            values = m.fill_null(0.0).to_numpy()
            positive = np.flatnonzero(values > 0)
            order = positive[pl.Series(values[positive]).arg_sort(descending=True).to_numpy()]  # multi-threaded
            s = values[order]
            cum = pl.Series(s).cum_sum().to_numpy()
            # last index of each tie group
            last = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1)
            ends = np.repeat(last, np.diff(np.append(-1, last)))
            with np.errstate(divide="ignore", invalid="ignore"):
                share_end = cum[ends] / total if total > 0 else np.full(len(s), np.inf)
                cum_share = cum / total if total > 0 else np.zeros(len(s))
            rank_end = (ends + 1).astype(np.float64) / float(self.n)
            self._sorted[metric] = _AbcSorted(order, share_end, rank_end, cum_share,
                                              np.cumsum(self.weights[order]), total)
        return self._sorted[metric]

    def bounds(self, p: Mapping[str, Any]) -> tuple[int, int]:
        """Number of A customers and of A or B customers."""
        c = self.sorted(p["metric"])
        if p["mode"] == "share":
            if not c.total > 0:
                return 0, 0
            ends, cut_a, cut_b = c.share_end, p["a"], p["b"]
        else:
            ends, cut_a, cut_b = c.rank_end, p["a_rank"], p["b_rank"]
        na = int(np.searchsorted(ends, cut_a + 1e-12, side="right"))
        nb = int(np.searchsorted(ends, cut_b + 1e-12, side="right"))
        return na, max(na, nb)

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        c = self.sorted(params["metric"])
        na, nb = self.bounds(params)
        rev_a = float(c.revenue_prefix[na - 1]) if na else 0.0
        rev_ab = float(c.revenue_prefix[nb - 1]) if nb else 0.0
        if not hasattr(self, "_total_rev"):
            self._total_rev = float(self.weights.sum())
        total_rev = self._total_rev
        counts = np.array([na, nb - na, self.n - nb, 0])
        revenue = np.array([rev_a, rev_ab - rev_a, total_rev - rev_ab, 0.0])
        return {"abc": (counts, revenue)}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        c = self.sorted(params["metric"])
        na, nb = self.bounds(params)
        codes = np.full(self.n, 2, dtype=np.uint32)
        codes[c.order[:na]] = 0
        codes[c.order[na:nb]] = 1
        return {"abc": _enum(self.LABELS, codes, "abc")}


class _AdcEvaluator(_Evaluator):
    """Lifecycle (plugins/adc): vectorised comparisons on cached arrays."""

    LABELS = ("active", "new", "dormant", "churned", "prospect")

    def __init__(self, *args: Any):
        super().__init__(*args)
        rec = self.customers["recency_days"]
        ten = self.customers["tenure_days"]
        self.prospects = np.flatnonzero(rec.is_null().to_numpy())
        big = np.iinfo(np.int32).max  # days fit in 32 bits; half the memory traffic of 64
        self.rec = rec.fill_null(big).clip(None, big).cast(pl.Int32).to_numpy()
        self.ten = ten.fill_null(big).clip(None, big).cast(pl.Int32).to_numpy()  # a null tenure is never "new"

    def codes(self, p: Mapping[str, Any]) -> np.ndarray:
        # active 0, new 1, dormant 2, churned 3, prospect 4; active_days < churn_days (checked)
        codes = (self.rec > p["active_days"]).astype(np.uint8) * 2 + (self.rec > p["churn_days"])
        codes[self.ten <= p["new_days"]] = 1
        codes[self.prospects] = 4
        return codes

    #: Above this many (recency, tenure) cells the counts are taken customer by customer.
    MAX_CELLS = 4_000_000

    def _build_table(self) -> None:
        """Customers and revenue with recency <= r and tenure <= t, for every distinct r and t.

        Built once; a threshold change is then three binary searches and a few reads.
        """
        self.table = None
        has = np.ones(self.n, dtype=bool)
        has[self.prospects] = False
        rec, ten = self.rec[has], self.ten[has]
        self.ur = np.unique(rec)
        self.ut = np.unique(ten)  # a null tenure is the largest value: never "new"
        shape = (len(self.ur), len(self.ut))
        if shape[0] * shape[1] > self.MAX_CELLS:
            return
        flat = np.searchsorted(self.ur, rec).astype(np.int64) * shape[1] + np.searchsorted(self.ut, ten)
        cells = shape[0] * shape[1]
        counts = np.bincount(flat, minlength=cells).reshape(shape)
        revenue = np.bincount(flat, weights=self.weights[has], minlength=cells).reshape(shape)
        self.table = (counts.cumsum(0).cumsum(1), revenue.cumsum(0).cumsum(1))

    def _at_most(self, rec: float, ten: float) -> tuple[int, float]:
        """Customers (and their revenue) with orders, recency <= rec and tenure <= ten."""
        i = int(np.searchsorted(self.ur, rec, side="right")) - 1
        j = int(np.searchsorted(self.ut, ten, side="right")) - 1
        if i < 0 or j < 0:
            return 0, 0.0
        return int(self.table[0][i, j]), float(self.table[1][i, j])

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not hasattr(self, "table"):
            self._build_table()
        if self.table is None:
            return {"adc": self._tally(self.codes(params), len(self.LABELS))}
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
        prospects = (len(self.prospects), float(self.weights[self.prospects].sum()))
        rows = (active, new, dormant, churned, prospects, (0, 0.0))
        return {"adc": (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        return {"adc": _enum(self.LABELS, self.codes(params), "adc")}


@dataclass
class _RfmScores:
    r: np.ndarray            # scores 1..bins, 0 for customers without orders
    f: np.ndarray
    m: np.ndarray
    cell: np.ndarray         # r * (bins+1)^2 + f * (bins+1) + m; 0 for customers without orders
    hist: np.ndarray         # customers per cell
    hist_revenue: np.ndarray


class _RfmEvaluator(_Evaluator):
    """RFM (plugins/rfm): scores and their histogram cached per number of bins."""

    TIERS = ("high-value", "potential", "ordinary")

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.has = self.customers["recency_days"].is_not_null().to_numpy()
        self.n_has = int(self.has.sum())
        # "min" ranks among customers with orders, as the classifier ranks them (R: most recent best)
        ranks = self.customers.filter(pl.Series(self.has)).select(
            (-pl.col("recency_days")).rank("min").alias("r"), pl.col("frequency").rank("min").alias("f"),
            pl.col("monetary").rank("min").alias("m"))
        self._ranks = {name: ranks[name].cast(pl.Int64).to_numpy() for name in ("r", "f", "m")}
        self._scores: dict[int, _RfmScores] = {}
        self._series: dict[int, dict[str, pl.Series]] = {}

    def scores(self, bins: int) -> _RfmScores:
        if bins not in self._scores:
            out = {}
            for name, rank in self._ranks.items():
                s = np.zeros(self.n, dtype=np.int64)
                if self.n_has:
                    s[self.has] = (rank - 1) * bins // self.n_has + 1
                out[name] = s
            side = bins + 1
            cell = out["r"] * side * side + out["f"] * side + out["m"]
            hist = np.bincount(cell, minlength=side ** 3)
            hist_rev = np.bincount(cell, weights=self.weights, minlength=side ** 3)
            self._scores = {bins: _RfmScores(out["r"], out["f"], out["m"], cell, hist, hist_rev)}
        return self._scores[bins]

    @staticmethod
    def _five(score: np.ndarray, bins: int) -> np.ndarray:
        return score if bins == 5 else (score * 5 + bins - 1) // bins

    def _grid(self, p: Mapping[str, Any]) -> tuple[str, ...]:
        """The segment labels, best first, as the classifier declares them."""
        return [o for o in self.clf.output_specs(p) if o.column == "rfm_segment"][0].labels

    def _cell_luts(self, p: Mapping[str, Any]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """Segment and tier code of every (r, f, m) cell (cell 0: no orders)."""
        bins = p["bins"]
        side = bins + 1
        segments = self._grid(p)
        grid = dict(p["segments"]) if p.get("segments") else None
        if grid is None:
            # the plugin's default grid, read back from its labels and cells
            from importlib import import_module

            grid = import_module(self.clf.expressions.__module__).DEFAULT_GRID
        lookup = {int(c): i for i, name in enumerate(segments) for c in grid[name]}
        r, f, m = np.meshgrid(np.arange(side), np.arange(side), np.arange(side), indexing="ij")
        r, f, m = r.ravel(), f.ravel(), m.ravel()
        fm = (self._five(f, bins) + self._five(m, bins) + 1) // 2
        cell = self._five(r, bins) * 10 + fm
        seg = np.array([lookup.get(int(c), len(segments)) for c in cell], dtype=np.uint32)
        high = (r >= p["hv_min_r"]) & (f >= p["hv_min_f"]) & (m >= p["hv_min_m"])
        potential = (r + f + m) >= p["potential_min_total"]
        tier = np.where(high, 0, np.where(potential, 1, 2)).astype(np.uint32)
        seg[0] = len(segments)                       # no orders: no segment
        tier[0] = 1 if p["prospects_are_potential"] else 2
        return segments, seg, tier

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        sc = self.scores(params["bins"])
        segments, seg, tier = self._cell_luts(params)
        out = {}
        for column, lut, n in (("rfm_segment", seg, len(segments)), ("value_tier", tier, 3)):
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
        out["rfm_segment"] = _enum(segments, seg[sc.cell], "rfm_segment")
        out["value_tier"] = _enum(self.TIERS, tier[sc.cell], "value_tier")
        return out

    def rf_grid(self, bins: int) -> np.ndarray:
        """Customers per (R, F) cell: rows R = bins .. 1, columns F = 1 .. bins."""
        side = bins + 1
        h = self.scores(bins).hist.reshape(side, side, side).sum(axis=2)
        return h[1:, 1:][::-1]


# Incremental evaluators for the built-in classifiers, used only when the classifier
# is the built-in one (its module and parameters); anything else uses the engine.
_FAST = {
    "abc": ("plugins.abc", {"metric", "mode", "a", "b", "a_rank", "b_rank"}, _AbcEvaluator),
    "adc": ("plugins.adc", {"active_days", "churn_days", "new_days"}, _AdcEvaluator),
    "rfm": ("plugins.rfm", {"bins", "hv_min_r", "hv_min_f", "hv_min_m", "potential_min_total",
                            "prospects_are_potential", "segments"}, _RfmEvaluator),
}


def _evaluator_class(clf: Classifier, accelerate: bool) -> type[_Evaluator]:
    fast = _FAST.get(clf.name)
    if accelerate and fast and clf.expressions.__module__ == fast[0] and {p.name for p in clf.params} == fast[1]:
        return fast[2]
    return _EngineEvaluator


# ----------------------------------------------------------------------- model
class WorkbenchModel:
    """Classes, rules and chart data of a customer table under changing parameters (no widgets).

    Parameters
    ----------
    prepared
        The customer table with features, computed once (:func:`engine.prepare`
        or :meth:`Playbook.prepare`).
    selections
        The classifiers and their starting parameters.
    playbook
        Optional: its rules are applied (:meth:`rules`) and :meth:`save` writes into it.
    accelerate
        Use the incremental evaluators of the built-in classifiers (default).
    """

    def __init__(self, prepared: Prepared, selections: Sequence[Selection], *, playbook: Any = None,
                 accelerate: bool = True):
        self.playbook = playbook
        self.accelerate = accelerate
        self.classifiers: dict[str, Classifier] = {s.classifier.name: s.classifier for s in selections}
        self.params: dict[str, dict[str, Any]] = {s.classifier.name: dict(s.params) for s in selections}
        self.timings: dict[str, float] = {}
        self._load(prepared)

    @classmethod
    def from_playbook(cls, playbook: Any, prepared: Prepared | None = None, **kwargs: Any) -> WorkbenchModel:
        return cls(prepared if prepared is not None else playbook.prepare(), playbook.selections,
                   playbook=playbook, **kwargs)

    def _load(self, prepared: Prepared) -> None:
        self.prepared = prepared
        customers = prepared.customers
        self.n = customers.height
        self.total_revenue = float(customers["monetary"].sum()) if "monetary" in customers.columns else 0.0
        weights = (customers["monetary"].cast(pl.Float64).fill_null(0.0).to_numpy() if "monetary" in customers.columns
                   else np.zeros(self.n))
        self.evaluators: dict[str, _Evaluator] = {}
        for name, clf in self.classifiers.items():
            kind = _evaluator_class(clf, self.accelerate)
            self.evaluators[name] = kind(clf, customers, prepared.as_of, prepared.registry, weights)
        self._counts: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._columns: dict[str, dict[str, pl.Series]] = {}

    # -------------------------------------------------------------- parameters
    @property
    def as_of(self) -> dt.date:
        return self.prepared.as_of

    def specs(self) -> list[tuple[str, ParamSpec]]:
        return [(name, spec) for name, clf in self.classifiers.items() for spec in clf.params]

    def set_params(self, changes: Mapping[str, Any]) -> None:
        """Set ``{"abc.a": 0.7}`` or ``{"abc": {"a": 0.7}}``; validated, cross-checks included.

        On a :class:`ParamError` nothing changes.
        """
        from .run import split_params

        new = {name: dict(values) for name, values in self.params.items()}
        for name, values in split_params(changes).items():
            if name not in self.classifiers:
                raise ParamError(f"classifier {name!r} is not in the workbench ({', '.join(self.classifiers)})")
            new[name].update(values)
            new[name] = self.classifiers[name].resolve(new[name])
        for name in new:
            if new[name] != self.params[name]:
                self._counts.pop(name, None)
                self._columns.pop(name, None)
        self.params = new

    def set_as_of(self, prepared: Prepared) -> None:
        """Swap in a customer table computed for another as_of (every cache is dropped)."""
        self._load(prepared)

    def selections(self) -> list[Selection]:
        return [Selection(self.classifiers[n], dict(p)) for n, p in self.params.items()]

    # ----------------------------------------------------------------- numbers
    def numbers(self) -> pl.DataFrame:
        """Class sizes and revenue shares, in the shape of :func:`engine.summarize`.

        Only classifiers whose parameters changed are recomputed.
        """
        t0 = time.perf_counter()
        rows: dict[str, list] = {k: [] for k in _NUMBERS_SCHEMA}
        for name, params in self.params.items():
            if name not in self._counts:
                self._counts[name] = self.evaluators[name].counts(params)
            for o in self.classifiers[name].output_specs(params):
                if o.labels is None:
                    continue
                counts, revenue = self._counts[name][o.column]
                for i, label in enumerate([*o.labels, NONE_LABEL]):
                    if label == NONE_LABEL and counts[i] == 0:
                        continue
                    rows["classifier"].append(name)
                    rows["column"].append(o.column)
                    rows["label"].append(label)
                    rows["customers"].append(int(counts[i]))
                    rows["customer_share"].append(int(counts[i]) / max(self.n, 1))
                    rows["revenue"].append(float(revenue[i]))
                    rows["revenue_share"].append(float(revenue[i]) / self.total_revenue if self.total_revenue
                                                 else None)
        out = pl.DataFrame(rows, schema=_NUMBERS_SCHEMA)
        self.timings["numbers"] = time.perf_counter() - t0
        return out

    # ----------------------------------------------------------- labels, rules
    def columns(self, name: str) -> dict[str, pl.Series]:
        if name not in self._columns:
            self._columns[name] = self.evaluators[name].columns(self.params[name])
        return self._columns[name]

    def classified(self) -> pl.DataFrame:
        """The customer table with every label column, as :func:`engine.run.apply_classifiers` returns it."""
        cols = []
        for name, params in self.params.items():
            got = self.columns(name)
            cols += [got[o.column].alias(o.column) for o in self.classifiers[name].output_specs(params)]
        return self.prepared.customers.with_columns(cols)

    def playbook_now(self) -> Any:
        """The playbook with the current parameters (only the changed ones are set)."""
        pb = self.playbook
        if pb is None:
            return None
        changes: dict[str, dict[str, Any]] = {}
        for name, params in self.params.items():
            start = pb.classifiers.get(name, {})
            for key, value in params.items():
                if start.get(key) != value:
                    changes.setdefault(name, {})[key] = value
        return pb.with_params(changes) if changes else pb

    def rules(self) -> Any:
        """The playbook's result (hits per rule, cut by capacity, actions) for the current parameters."""
        if self.playbook is None:
            return None
        from .playbook import _evaluate_rules

        t0 = time.perf_counter()
        customers = self.classified()
        result = _evaluate_rules(self.playbook_now(), self.prepared, customers)
        self.timings["rules"] = time.perf_counter() - t0
        return result

    def save(self, path: str | Path | None = None) -> str:
        """Write the current parameters into the playbook (or ``path``); return the diff."""
        if self.playbook is None:
            raise TierbookError("this workbench has no playbook to save into")
        pb = self.playbook_now()
        diff = pb.save(path)
        return diff

    # --------------------------------------------------------------- charts
    def pareto_data(self, name: str = "abc") -> dict[str, Any] | None:
        """Cumulative metric share against customer share, and the cut-offs (None without ABC)."""
        ev = self.evaluators.get(name)
        if ev is None:
            return None
        p = self.params[name]
        if isinstance(ev, _AbcEvaluator):
            c = ev.sorted(p["metric"])
            na, nb = ev.bounds(p)
            y = c.cum_share
        else:
            m = self.prepared.customers[p["metric"]].cast(pl.Float64).fill_null(0.0)
            total = float(m.sum())
            s = -np.sort(-m.filter(m > 0).to_numpy())
            y = np.cumsum(s) / total if total > 0 else np.zeros(len(s))
            codes = self.columns(name)["abc"].to_physical().to_numpy()
            na, nb = int((codes == 0).sum()), int((codes <= 1).sum())
        x = (np.arange(1, len(y) + 1)) / max(self.n, 1)
        if len(y) > 2000:  # enough points for a curve
            idx = np.unique(np.linspace(0, len(y) - 1, 2000).astype(np.int64))
            x, y = x[idx], y[idx]
        return {"x": np.concatenate([[0.0], x]), "y": np.concatenate([[0.0], y]),
                "a_customers": na / max(self.n, 1), "ab_customers": nb / max(self.n, 1),
                "mode": p["mode"], "metric": p["metric"],
                "a": p["a"] if p["mode"] == "share" else p["a_rank"],
                "b": p["b"] if p["mode"] == "share" else p["b_rank"]}

    def rf_grid(self, name: str = "rfm") -> np.ndarray | None:
        """Customers per (R, F) score cell: rows R = bins .. 1, columns F = 1 .. bins (None without RFM)."""
        ev = self.evaluators.get(name)
        if ev is None:
            return None
        bins = self.params[name]["bins"]
        if isinstance(ev, _RfmEvaluator):
            return ev.rf_grid(bins)
        cols = self.columns(name)
        df = pl.DataFrame({"r": cols["rfm_r"], "f": cols["rfm_f"]}).drop_nulls()
        grid = np.zeros((bins, bins), dtype=np.int64)
        for r, f, k in df.group_by("r", "f").len().iter_rows():
            grid[bins - r, f - 1] = k
        return grid

    def sample(self, column: str, label: str, k: int = 10) -> pl.DataFrame:
        """Up to ``k`` customers of one class, highest monetary first."""
        df = self.classified()
        cond = pl.col(column).is_null() if label == NONE_LABEL else pl.col(column).cast(pl.String) == label
        sort = "monetary" if "monetary" in df.columns else "customer_id"
        return df.filter(cond).sort(sort, descending=True, nulls_last=True).head(k)


# --------------------------------------------------------------------- HTML
def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def numbers_html(numbers: pl.DataFrame) -> str:
    """An HTML table per class column; every number carries CSS classes and data attributes.

    >>> df = pl.DataFrame({"classifier": ["abc"], "column": ["abc"], "label": ["A"], "customers": [3],
    ...                    "customer_share": [0.5], "revenue": [80.0], "revenue_share": [0.8]})
    >>> 'class="tierbook-count" data-classifier="abc" data-column="abc" data-label="A" data-value="3"' in numbers_html(df)
    True
    """
    parts = ['<div class="tierbook-numbers">']
    for (classifier, column), group in numbers.group_by(["classifier", "column"], maintain_order=True):
        a = html.escape
        parts.append(f'<table class="tierbook-summary" data-classifier="{a(classifier)}" data-column="{a(column)}" '
                     f'style="display:inline-table;margin:0 1.5em 1em 0;border-collapse:collapse">'
                     f'<caption style="text-align:left;font-weight:bold">{a(column)}</caption>'
                     '<tr><th style="text-align:left">class</th><th>customers</th><th>% customers</th>'
                     '<th>% revenue</th></tr>')
        for row in group.iter_rows(named=True):
            attrs = f'data-classifier="{a(classifier)}" data-column="{a(column)}" data-label="{a(row["label"])}"'
            parts.append(
                f'<tr {attrs}><td class="tierbook-label" style="text-align:left;padding-right:1em">{a(row["label"])}</td>'
                f'<td class="tierbook-count" {attrs} data-value="{row["customers"]}" style="text-align:right">'
                f'{row["customers"]:,}</td>'
                f'<td class="tierbook-customer-share" {attrs} data-value="{row["customer_share"]!r}" '
                f'style="text-align:right">{_pct(row["customer_share"])}</td>'
                f'<td class="tierbook-revenue-share" {attrs} data-value="{row["revenue_share"]!r}" '
                f'style="text-align:right">{_pct(row["revenue_share"])}</td></tr>')
        parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)


def rules_html(result: Any) -> str:
    """Hits per rule and customers cut by capacity."""
    if result is None:
        return ""
    a = html.escape
    rows = ['<table class="tierbook-rules" style="border-collapse:collapse"><caption style="text-align:left;'
            'font-weight:bold">rules</caption><tr><th style="text-align:left">rule</th><th>matched</th>'
            '<th>hits</th><th>cut by capacity</th><th>actions</th></tr>']
    for r in result.rule_summary.iter_rows(named=True):
        cells = "".join(f'<td class="tierbook-rule-{k.replace("_", "-")}" data-rule="{a(r["rule"])}" '
                        f'data-value="{r[k]}" style="text-align:right;padding-left:1em">{r[k]:,}</td>'
                        for k in ("matched", "hits", "cut_by_capacity", "actions"))
        rows.append(f'<tr data-rule="{a(r["rule"])}"><td style="text-align:left">{a(r["rule"])}</td>{cells}</tr>')
    s = result.summary
    rows.append(f'</table><div class="tierbook-rule-totals">actions <span class="tierbook-actions" '
                f'data-value="{s["actions"]}">{s["actions"]:,}</span> · cut by capacity '
                f'<span class="tierbook-cut" data-value="{s["cut_by_capacity"]}">{s["cut_by_capacity"]:,}</span>'
                f' · unmatched <span class="tierbook-unmatched" data-value="{s["unmatched"]}">'
                f'{s["unmatched"]:,}</span></div>')
    if result.cut.height:
        more = f" (first 10 of {result.cut.height:,})" if result.cut.height > 10 else ""
        rows.append(f'<details class="tierbook-cut-list"><summary>customers cut by capacity{more}</summary>'
                    f'{frame_html(result.cut.head(10), "tierbook-cut-table")}</details>')
    return "".join(rows)


def frame_html(df: pl.DataFrame, css: str = "tierbook-sample") -> str:
    a = html.escape
    head = "".join(f"<th>{a(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{a(_fmt(v))}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f'<table class="{css}" style="font-size:90%"><tr>{head}</tr>{body}</table>'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    return "" if v is None else str(v)


# ------------------------------------------------------------------- charts
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def pareto_png(data: Mapping[str, Any]) -> bytes:
    """ABC Pareto chart: cumulative share of the metric against the share of customers, cut-offs drawn."""
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot()
    ax.plot(data["x"], data["y"], color="#1f4e79", lw=2)
    xa, xb = data["a_customers"], data["ab_customers"]
    ax.axvspan(0, xa, color="#2e7d32", alpha=0.15, label=f"A: {100 * xa:.1f}% of customers")
    ax.axvspan(xa, xb, color="#f9a825", alpha=0.15, label=f"B: {100 * (xb - xa):.1f}%")
    if data["mode"] == "share":
        for cut, name in ((data["a"], "a"), (data["b"], "b")):
            ax.axhline(cut, color="grey", ls="--", lw=1)
            ax.text(1.0, cut, f" {name} = {cut:g}", va="center", ha="left", fontsize=8)
    for x in (xa, xb):
        ax.axvline(x, color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of customers (best first)")
    ax.set_ylabel(f"cumulative share of {data['metric']}")
    ax.set_title("ABC Pareto curve")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def heatmap_png(grid: np.ndarray) -> bytes:
    """R x F heat map: customers per (recency score, frequency score) cell."""
    bins = grid.shape[0]
    fig = _figure(4.6, 3.6)
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(bins), [str(f) for f in range(1, bins + 1)])
    ax.set_yticks(range(bins), [str(r) for r in range(bins, 0, -1)])
    ax.set_xlabel("F score")
    ax.set_ylabel("R score")
    ax.set_title("RFM grid: customers per R x F")
    top = grid.max() if grid.size else 0
    if bins <= 10:
        for i in range(bins):
            for j in range(bins):
                v = int(grid[i, j])
                ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=7 if bins > 6 else 8,
                        color="white" if top and v > top * 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------- widgets
def _decimals(step: float) -> int:
    text = repr(float(step))
    if "e-" in text:
        return int(text.split("e-")[1])
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def control_for(spec: ParamSpec, value: Any, *, classifier: str, columns: Mapping[str, pl.DataType] | None = None):
    """The ipywidgets control for one parameter, from its spec alone."""
    import ipywidgets as w

    desc = f"{classifier}.{spec.name}"
    common = {"description": desc, "description_allow_html": False, "tooltip": spec.help,
              "style": {"description_width": "13em"}, "layout": w.Layout(width="32em")}
    if spec.type == "bool":
        ctl = w.Checkbox(value=bool(value), indent=False, **common)
    elif spec.type == "str" and (spec.choices or spec.feature):
        options = list(spec.choices) if spec.choices else [c for c, t in (columns or {}).items()
                                                           if t.is_numeric() and c != "customer_id"]
        if value not in options:
            options.append(value)
        ctl = w.Dropdown(options=options, value=value, **common)
    elif spec.type == "str":
        ctl = w.Text(value=value, continuous_update=False, **common)
    elif spec.type in ("int", "float") and spec.min is not None and spec.max is not None:
        if spec.type == "int":
            ctl = w.IntSlider(value=int(value), min=int(spec.min), max=int(spec.max), step=int(spec.step or 1),
                              continuous_update=False, **common)
        else:
            step = spec.step or (spec.max - spec.min) / 100
            ctl = w.FloatSlider(value=float(value), min=float(spec.min), max=float(spec.max), step=step,
                                readout_format=f".{max(_decimals(step), 0)}f", continuous_update=False, **common)
    elif spec.type in ("int", "float"):
        kind = w.IntText if spec.type == "int" else w.FloatText
        ctl = kind(value=value, **common)
    else:  # mapping: shown, set in the playbook
        import json

        ctl = w.Textarea(value=json.dumps(value, indent=1) if value else "{} (default)", disabled=True,
                         **{**common, "layout": w.Layout(width="30em", height="4em")})
    ctl.add_class("tierbook-param")
    ctl.add_class(f"tierbook-param-{classifier}-{spec.name}".replace("_", "-"))
    return ctl


class Workbench:
    """The widget workbench over a playbook (or a prepared table and classifiers).

    ``Workbench(playbook)`` reads the data once; ``save_path`` (default: the
    playbook itself) is where Save writes the tuned parameters.
    """

    def __init__(self, playbook: Any = None, *, prepared: Prepared | None = None,
                 selections: Sequence[Selection] | None = None, save_path: str | Path | None = None,
                 charts: bool = True, accelerate: bool = True):
        import ipywidgets as w

        if playbook is not None and not hasattr(playbook, "selections"):
            from .playbook import load_playbook

            playbook = load_playbook(playbook)
        if playbook is not None:
            self.model = WorkbenchModel.from_playbook(playbook, prepared, accelerate=accelerate)
        else:
            if prepared is None:
                raise TierbookError("give a playbook, or prepared= and selections=")
            self.model = WorkbenchModel(prepared, selections or prepared.select(), accelerate=accelerate)
        self.save_path = Path(save_path) if save_path is not None else None
        self.charts_enabled = charts
        self._prepared_by_date: dict[dt.date, Prepared] = {self.model.as_of: self.model.prepared}
        self.last_result = None
        self._syncing = False

        m = self.model
        self.controls: dict[str, Any] = {}
        schema = m.prepared.customers.schema
        groups = []
        for name, clf in m.classifiers.items():
            ctls = []
            for spec in clf.params:
                ctl = control_for(spec, m.params[name][spec.name], classifier=name, columns=schema)
                if spec.type != "mapping":
                    ctl.observe(self._on_change(name, spec), names="value")
                self.controls[f"{name}.{spec.name}"] = ctl
                ctls.append(ctl)
            groups.append(w.VBox([w.HTML(f"<b>{html.escape(name)}</b> <i>{html.escape(clf.description)}</i>"),
                                  *ctls]))
        self.as_of = w.DatePicker(value=m.as_of, description="as_of", style={"description_width": "11em"})
        self.as_of.add_class("tierbook-as-of")
        if m.playbook is None:  # re-reading the data for another date needs the playbook's data section
            self.as_of.disabled = True
        self.as_of.observe(self._on_as_of, names="value")
        self.status = w.HTML(layout=w.Layout(min_height="1.5em"))
        self.status.add_class("tierbook-status")
        self.summary = w.HTML()
        self.summary.add_class("tierbook-summary-box")
        self.rules_box = w.HTML()
        self.rules_box.add_class("tierbook-rules-box")
        self.pareto = w.Image(format="png", layout=w.Layout(max_width="480px", display="none"))
        self.heatmap = w.Image(format="png", layout=w.Layout(max_width="420px", display="none"))
        self.class_picker = w.Dropdown(description="sample of", layout=w.Layout(width="24em"))
        self.class_picker.add_class("tierbook-class-picker")
        self.class_picker.observe(lambda _: self._show_sample(), names="value")
        self.sample_box = w.HTML()
        self.save_button = w.Button(description="Save to playbook", icon="save", button_style="primary",
                                    tooltip=f"write the parameters into {self._target()}")
        self.save_button.add_class("tierbook-save")
        self.save_button.on_click(lambda _: self.save())
        self.diff_box = w.HTML()
        self.diff_box.add_class("tierbook-diff")
        self.timing = w.HTML()
        self.timing.add_class("tierbook-timing")
        title = ""
        if m.playbook is not None:
            title = (f"<h3 style='margin:0'>{html.escape(m.playbook.name)}</h3>"
                     f"<div>{html.escape(m.playbook.description)}</div>")
        left = w.VBox([*groups, self.as_of, w.HBox([self.save_button]), self.status, self.diff_box],
                      layout=w.Layout(min_width="32em", max_width="36em"))
        charts = w.VBox([self.pareto, self.heatmap], layout=w.Layout(margin="0 0 0 1.5em"))
        numbers = w.VBox([self.summary, w.HBox([self.rules_box]), self.timing])
        self.widget = w.VBox([w.HTML(title), w.HBox([left, charts], layout=w.Layout(flex_flow="row wrap")),
                              numbers, w.VBox([self.class_picker, self.sample_box])])
        self.widget.add_class("tierbook-workbench")
        self.refresh()

    # ---------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _target(self) -> Path | None:
        if self.save_path is not None:
            return self.save_path
        return self.model.playbook.path if self.model.playbook is not None else None

    # ---------------------------------------------------------------- updates
    def _on_change(self, name: str, spec: ParamSpec):
        def handler(change: Mapping[str, Any]) -> None:
            if self._syncing:
                return
            # All of this classifier's controls together: a pair that was invalid (a >= b)
            # becomes valid when either control moves.
            values = {}
            for p in self.model.classifiers[name].params:
                if p.type == "mapping":
                    continue
                value = self.controls[f"{name}.{p.name}"].value
                if p.type == "float" and p.step:
                    value = round(float(value), _decimals(p.step) + 2)
                values[f"{name}.{p.name}"] = value
            self.set(values)
        return handler

    def set(self, changes: Mapping[str, Any]) -> None:
        """Set parameters (``{"abc.a": 0.7}``) as moving their controls does, and refresh."""
        try:
            self.model.set_params(changes)
        except ParamError as exc:
            self.status.value = f'<span class="tierbook-error" style="color:#b00020">{html.escape(str(exc))}</span>'
            return
        for name, params in self.model.params.items():
            for key, value in params.items():
                ctl = self.controls.get(f"{name}.{key}")
                if ctl is not None and not isinstance(value, dict) and ctl.value != value:
                    self._syncing = True
                    try:
                        ctl.value = value
                    finally:
                        self._syncing = False
        self.status.value = ""
        self.refresh()

    def _on_as_of(self, change: Mapping[str, Any]) -> None:
        day = change["new"]
        if day is None or self.model.playbook is None:
            return
        if day not in self._prepared_by_date:
            self.status.value = f"reading the data as of {day} ..."
            try:
                self._prepared_by_date[day] = self.model.playbook.prepare(day)
            except TierbookError as exc:
                self.status.value = f'<span class="tierbook-error">{html.escape(str(exc))}</span>'
                return
        self.model.set_as_of(self._prepared_by_date[day])
        self.status.value = ""
        self.refresh()

    def refresh(self) -> None:
        """Numbers first (fast), then rules, sample customers and charts."""
        m = self.model
        t0 = time.perf_counter()
        numbers = m.numbers()
        self.summary.value = numbers_html(numbers)
        t_numbers = time.perf_counter() - t0
        self.numbers = numbers
        t1 = time.perf_counter()
        if m.playbook is not None:
            self.last_result = m.rules()
            self.rules_box.value = rules_html(self.last_result)
        t_rules = time.perf_counter() - t1
        options = [(f"{c} = {lab}", (c, lab)) for c, lab in numbers.select("column", "label").iter_rows()]
        current = self.class_picker.value
        self.class_picker.options = options
        if current in [v for _, v in options]:
            self.class_picker.value = current
        elif options:
            self.class_picker.value = options[0][1]
        self._show_sample()
        t2 = time.perf_counter()
        if self.charts_enabled:
            self.redraw()
        t_charts = time.perf_counter() - t2
        self.timings = {"numbers": t_numbers, "rules": t_rules, "charts": t_charts}
        self.timing.value = (f'<small style="color:grey">{m.n:,} customers as of {m.as_of} · numbers '
                             f'{1000 * t_numbers:.0f} ms · rules {1000 * t_rules:.0f} ms · charts '
                             f'{1000 * t_charts:.0f} ms</small>')

    def redraw(self) -> None:
        """Redraw the charts from the model (numbers are already shown)."""
        data = self.model.pareto_data()
        if data is not None:
            self.pareto.value = pareto_png(data)
        self.pareto.layout.display = None if data is not None else "none"
        grid = self.model.rf_grid()
        if grid is not None:
            self.heatmap.value = heatmap_png(grid)
        self.heatmap.layout.display = None if grid is not None else "none"

    def _show_sample(self) -> None:
        choice = self.class_picker.value
        if not choice:
            self.sample_box.value = ""
            return
        column, label = choice
        df = self.model.sample(column, label)
        keep = [c for c in ("customer_id", "recency_days", "frequency", "monetary", "tenure_days")
                if c in df.columns]
        labels = [c for name in self.model.params for o in self.model.classifiers[name].output_specs(
            self.model.params[name]) if (c := o.column) in df.columns and o.labels is not None]
        self.sample_box.value = frame_html(df.select(keep + labels))

    def save(self) -> str:
        """Write the tuned parameters into the playbook (comments kept); show and return the diff."""
        try:
            diff = self.model.save(self.save_path)
        except TierbookError as exc:
            self.status.value = f'<span class="tierbook-error">{html.escape(str(exc))}</span>'
            return ""
        target = self._target()
        if diff:
            self.status.value = f'<span class="tierbook-saved">saved to {html.escape(str(target))}</span>'
        else:
            self.status.value = f'<span class="tierbook-saved">{html.escape(str(target))} already up to date</span>'
        self.diff_box.value = f'<pre class="tierbook-diff-text" style="font-size:85%">{html.escape(diff)}</pre>'
        return diff
