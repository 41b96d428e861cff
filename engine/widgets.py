"""The Jupyter workbench: tune a playbook's thresholds with widgets, watch the classes move.

    import engine
    from engine.widgets import Workbench
    wb = Workbench(engine.load_playbook("playbooks/my-playbook.yaml"))
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
    *numbers*), then, on demand, the label columns, the rules and the charts.
    A classifier that brings a fast path (its ``workbench`` field, see
    :mod:`engine.fastpath`) is evaluated by it, incrementally; every other
    classifier, and every parameter set a fast path declines, goes through the
    engine's own :func:`~engine.run.apply_classifiers` (:class:`GenericPath`,
    cached per parameter set). The workbench knows no classifier by name.
:class:`Workbench`
    The ipywidgets front end: controls, an HTML summary beside them whose
    numbers carry CSS classes and ``data-*`` attributes
    (``td.tierbook-count[data-column=...][data-label=...]``), the classifiers'
    charts (a class-size bar chart for those without their own) rendered to PNG
    into ``Image`` widgets and redrawn only when what they show changed, sample
    customers of a chosen class, and a Save button that writes the tuned
    parameters back with :meth:`Playbook.save` (comments kept) and shows the
    diff. A refused value (``a`` not below ``b``) puts its control back and
    says why, so the controls always show what Save writes; an "unsaved
    changes" marker shows when they differ from the file.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .classifier import Classifier
from .errors import ParamError, TierbookError
from .fastpath import Chart, FastPath, Overlay, Table, figure
from .params import ParamSpec
from .run import Prepared, Selection, apply_classifiers

__all__ = ["WorkbenchModel", "Workbench", "GenericPath", "numbers_html", "rules_html", "changes_html",
           "class_sizes_png"]

NONE_LABEL = "(none)"
_NUMBERS_SCHEMA = {"classifier": pl.String, "column": pl.String, "label": pl.String, "customers": pl.Int64,
                   "customer_share": pl.Float64, "revenue": pl.Float64, "revenue_share": pl.Float64}


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in params.items()))


# ------------------------------------------------------------------ evaluators
class GenericPath(FastPath):
    """Any classifier: its own expressions over the whole table, cached per parameter set.

    The workbench uses it for a classifier without a ``workbench`` fast path,
    and for the parameter sets a fast path declines (:meth:`FastPath.supports`).
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._cache: dict[str, dict[str, pl.Series]] = {}

    def columns(self, params: Mapping[str, Any]) -> dict[str, pl.Series]:
        key = _key(params)
        if key not in self._cache:
            sel = Selection(self.classifier, dict(params))
            t = self.table
            out = apply_classifiers(t.customers, [sel], as_of=t.as_of, registry=t.registry)
            self._cache = {key: {o.column: out[o.column] for o in sel.outputs}}  # keep the latest only
        return self._cache[key]

    def counts(self, params: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        cols = self.columns(params)
        out = {}
        for o in self.classifier.output_specs(params):
            if o.labels is None:
                continue
            codes = cols[o.column].to_physical().fill_null(len(o.labels)).cast(pl.Int64).to_numpy()
            out[o.column] = self.tally(codes, len(o.labels))
        return out


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
        Use the classifiers' own fast paths where they have one (default); False: the generic path for all.
    """

    def __init__(self, prepared: Prepared, selections: Sequence[Selection], *, playbook: Any = None,
                 accelerate: bool = True):
        self.playbook = playbook
        self.accelerate = accelerate
        self.classifiers: dict[str, Classifier] = {s.classifier.name: s.classifier for s in selections}
        self.params: dict[str, dict[str, Any]] = {s.classifier.name: dict(s.params) for s in selections}
        self.timings: dict[str, float] = {}
        #: The table shown before the last as_of move (None before any), and a model over it for its labels.
        self.previous: Prepared | None = None
        self._previous_model: WorkbenchModel | None = None
        #: The two tables aligned for the migration, and its cells per column (see _migration_cells).
        self._migration: tuple[Any, Any, dict] | None = None
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
        self.table = Table.of(customers, prepared.as_of, prepared.registry)
        #: Each classifier's own fast path (``Classifier.workbench``), where it has one.
        self.fast_paths: dict[str, FastPath] = {}
        if self.accelerate:
            for name, clf in self.classifiers.items():
                if clf.workbench is not None:
                    self.fast_paths[name] = clf.workbench(clf, self.table)
        self._generic: dict[str, GenericPath] = {}
        self._counts: dict[str, Mapping[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._columns: dict[str, Mapping[str, pl.Series]] = {}
        self._codes: dict[str, Mapping[str, np.ndarray]] = {}
        #: The rules counted incrementally (engine.playbook.live), per label sets and column types.
        self._live: tuple[Any, Any] | None = None
        self._sample_order: np.ndarray | None = None
        self._dtypes: dict[tuple[str, Any], pl.DataType] = {}
        self._plots: dict[tuple[str, tuple[str, ...]], SizesPlot] = {}  # class-size figures, kept across moves

    def evaluator(self, name: str) -> FastPath:
        """The evaluator for ``name``'s current parameters: its fast path if it supports them, else the generic one."""
        return self.evaluator_for(name, self.params[name])

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
                self._codes.pop(name, None)
        self.params = new

    def set_as_of(self, prepared: Prepared) -> None:
        """Swap in a customer table computed for another as_of (every cache is dropped).

        The table shown until now becomes :attr:`previous`: :meth:`migration` compares the two.
        """
        if prepared.as_of != self.prepared.as_of:
            self.previous = self.prepared
            self._previous_model = None
        self._migration = None
        self._load(prepared)

    def migration(self) -> pl.DataFrame | None:
        """The migration between :attr:`previous` (the table before the last ``as_of`` move) and the table now,
        both classified with the current parameters: :func:`engine.migration.migration_table`'s long matrix,
        the earlier date first whichever way the date moved. None before any move.

        The previous table is classified by a second model over it (its own fast paths, the same parameters),
        so a moved slider costs the previous table what it costs the current one; the cells of the matrix
        are counted from the two models' label codes (:meth:`_migration_cells`), only for the columns that
        moved, and the long table is :func:`~engine.migration.migration_table`'s own.
        """
        from .migration import label_outputs, migration_table

        if self.previous is None:
            return None
        t0 = time.perf_counter()
        if self._previous_model is None:
            self._previous_model = WorkbenchModel(self.previous, self.selections(), accelerate=self.accelerate)
        prev = self._previous_model
        changed = {name: values for name, values in self.params.items() if prev.params.get(name) != values}
        if changed:
            prev.set_params(changed)
        pairs = sorted([(self.previous.as_of, prev), (self.as_of, self)], key=lambda p: p[0])
        outputs = label_outputs(self.selections())
        dates = [d for d, _ in pairs]
        cells = self._migration_cells(pairs[0][1], pairs[1][1], outputs)
        if cells is not None:
            out = migration_table([m.prepared.customers for _, m in pairs], dates, outputs, cells=cells)
        else:
            out = migration_table([m.classified() for _, m in pairs], dates, outputs)
        self.timings["migration"] = time.perf_counter() - t0
        return out

    def _migration_cells(self, before: WorkbenchModel, after: WorkbenchModel,
                         outputs: Sequence[tuple[str, Any]]) -> dict | None:
        """:func:`engine.migration.migration_cells` for the two tables, from the models' label codes.

        The two tables are aligned once (a full join on customer_id: each customer's row in either, or
        none) and each customer's revenue in units kept as 64-bit integers; a move then counts the cells of
        the moved classifier's columns only, with ``bincount`` over the pair of codes, and sums revenue
        exactly (22-bit limbs, each sum below 2^53). None (the full path) when the units do not fit or a
        column's codes are not its labels'.
        """
        key = (id(before.prepared), id(after.prepared))
        if self._migration is None or self._migration[0] != key:
            self._migration = (key, _align(before.prepared.customers, after.prepared.customers), {})
        _, aligned, cache = self._migration
        if aligned is None:
            return None
        at_from, at_to, units_from, units_to = aligned
        cells = {}
        for name, o in outputs:
            n = len(o.labels)
            version = (o.labels, _key(before.params[name]), _key(after.params[name]))
            if o.column in cache and cache[o.column][0] == version:
                cells[(1, o.column)] = cache[o.column][1]
                continue
            sides = []
            for model, at in ((before, at_from), (after, at_to)):
                dtype = model._dtype(name, o.column, o.labels)
                codes = model.label_codes(name).get(o.column)
                if codes is None or (isinstance(dtype, pl.Enum) and dtype.categories.to_list() != list(o.labels)):
                    return None
                sides.append(np.where(at >= 0, codes[np.maximum(at, 0)], n).astype(np.int64))
            code = sides[0] * (n + 1) + sides[1]
            size = (n + 1) ** 2
            counts = np.bincount(code, minlength=size)
            grid = pl.DataFrame({
                "_rank_from": pl.Series([r for r in [*range(n), None] for _ in range(n + 1)], dtype=pl.Int64),
                "_rank_to": pl.Series([t for _ in range(n + 1) for t in [*range(n), None]], dtype=pl.Int64),
                "customers": pl.Series(counts, dtype=pl.Int64),
                "_uf": pl.Series(_exact_sums(code, units_from, size), dtype=pl.Int128),
                "_ut": pl.Series(_exact_sums(code, units_to, size), dtype=pl.Int128),
            })
            cache[o.column] = (version, (list(o.labels), grid))
            cells[(1, o.column)] = cache[o.column][1]
        return cells

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
                self._counts[name] = self.evaluator(name).counts(params)
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
            self._columns[name] = self.evaluator(name).columns(self.params[name])
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

    def classified_with(self, params: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
        """The customer table with every label column for ``params`` (each classifier's full parameters)."""
        cols = []
        for name, values in params.items():
            got = self.evaluator_for(name, values).columns(values)
            cols += [got[o.column].alias(o.column) for o in self.classifiers[name].output_specs(values)]
        return self.prepared.customers.with_columns(cols)

    def evaluator_for(self, name: str, params: Mapping[str, Any]) -> FastPath:
        """The evaluator for ``name`` with ``params``: its fast path if it supports them, else the generic one."""
        fast = self.fast_paths.get(name)
        if fast is not None and fast.supports(params):
            return fast
        if name not in self._generic:
            self._generic[name] = GenericPath(self.classifiers[name], self.table)
        return self._generic[name]

    def action_changes(self, saved: Mapping[str, Mapping[str, Any]]) -> Any:
        """Who gets a different action now than under the ``saved`` parameters, and why: a
        :class:`~engine.playbook.diff.PlaybookDiff` (None without a playbook)."""
        if self.playbook is None:
            return None
        from .playbook.diff import diff_customers

        pb = self.playbook
        changes = {name: {k: v for k, v in values.items() if pb.classifiers.get(name, {}).get(k) != v}
                   for name, values in saved.items()}
        changes = {name: values for name, values in changes.items() if values}
        old = pb.with_params(changes) if changes else pb
        return diff_customers(old, self.playbook_now(), self.classified_with(saved), self.classified(),
                              self.prepared.as_of)

    def label_codes(self, name: str) -> Mapping[str, np.ndarray]:
        """Each class output of ``name`` as codes (:meth:`FastPath.label_codes`), for the current parameters."""
        if name not in self._codes:
            if name in self._columns:  # built already: read them off the columns
                self._codes[name] = FastPath.label_codes(_Built(self.classifiers[name], self._columns[name]),
                                                         self.params[name])
            else:
                self._codes[name] = self.evaluator(name).label_codes(self.params[name])
        return self._codes[name]

    def _owners(self) -> dict[str, tuple[str, Any]]:
        """Every output column: (its classifier, its output spec) for the current parameters."""
        return {o.column: (name, o) for name, params in self.params.items()
                for o in self.classifiers[name].output_specs(params)}

    def _dtype(self, name: str, column: str, labels: Any) -> pl.DataType:
        """The type of an output column (the classifier's own; learnt once per labels from its columns)."""
        key = (column, labels)
        if key not in self._dtypes:
            self._dtypes[key] = self.columns(name)[column].dtype
        return self._dtypes[key]

    def rules(self) -> Any:
        """What the playbook's rules do for the current parameters: a :class:`~engine.playbook.live.RuleCounts`
        (matched, hits, cut by capacity, actions and control per rule position, the unmatched customers and
        the first customers cut), counted incrementally and equal to :func:`~engine.playbook.evaluate_rules`'s;
        the action rows and anything else of a :class:`~engine.playbook.RuleResult` are built on first use."""
        if self.playbook is None:
            return None
        from .playbook import label_sets
        from .playbook.live import LiveRules, Unsupported

        t0 = time.perf_counter()
        pb = self.playbook_now()
        owners = self._owners()
        labels = label_sets(pb.selections)
        varying = {col: self._dtype(name, col, o.labels) for col, (name, o) in owners.items()}
        key = (tuple(sorted(labels.items())), tuple(sorted((c, str(t)) for c, t in varying.items())))
        result = None
        if self._live is None or self._live[0] != key:
            try:
                live = LiveRules(self.prepared.customers.drop([c for c in varying if c in
                                                               self.prepared.customers.columns]),
                                 pb.rules, as_of=self.prepared.as_of, varying=varying, labels=labels,
                                 hit_policy=pb.hit_policy, fallback=pb.fallback, source=pb.path, holdout=pb.holdout)
            except Unsupported:
                live = None
            self._live = (key, live)
        live = self._live[1]
        if live is not None:
            try:
                result = live.evaluate(version=lambda col: _key(self.params[owners[col][0]]),
                                       codes=lambda col: self.label_codes(owners[col][0]).get(col),
                                       series=lambda col: self.columns(owners[col][0])[col],
                                       full=self.rules_full)
            except Unsupported:
                result = None
        if result is None:
            result = self.rules_full()
        self.timings["rules"] = time.perf_counter() - t0
        return result

    def rules_full(self) -> Any:
        """The playbook's rules evaluated in full (:func:`~engine.playbook.evaluate_rules`): every action row."""
        from .playbook import evaluate_rules, label_sets

        customers = self.classified()
        pb = self.playbook_now()
        return evaluate_rules(customers, pb.rules, as_of=self.prepared.as_of, hit_policy=pb.hit_policy,
                              fallback=pb.fallback, labels=label_sets(pb.selections), source=pb.path,
                              holdout=pb.holdout)  # as a run holds out: actions per rule are what it sends

    def save(self, path: str | Path | None = None) -> str:
        """Write the current parameters into the playbook (or ``path``); return the diff.

        Without a playbook, ``path`` is required: an existing playbook there gets
        the parameters that differ from its own (comments kept; every classifier
        with such parameters must be in its ``classifiers:``); a new file gets a
        ``classifiers:`` section with the parameters that differ from the defaults.
        """
        if self.playbook is not None:
            return self.playbook_now().save(path)
        if path is None:
            raise TierbookError("this workbench has no playbook: give a path to save to")
        path = Path(path)
        if path.exists():
            from .playbook import load_playbook

            pb = load_playbook(path, registry=self.prepared.registry, check_data=False)
            # against the playbook's values; a classifier it does not have, against the defaults
            start = {name: pb.classifiers.get(name) or self.classifiers[name].resolve() for name in self.params}
            changes = {name: {k: v for k, v in params.items() if start[name].get(k) != v}
                       for name, params in self.params.items()}
            changes = {name: values for name, values in changes.items() if values}
            missing = [name for name in changes if name not in pb.classifiers]
            if missing:
                raise TierbookError(f"{path}: {', '.join(missing)} not in the playbook's classifiers: "
                                    "(add them there, then save again)")
            return pb.with_params(changes).save() if changes else ""
        import difflib

        import yaml

        from .io import atomic_write_text

        section = {name: {k: v for k, v in params.items() if v != self.classifiers[name].param(k).default}
                   for name, params in self.params.items()}
        text = ("# Classifier parameters tuned in the tierbook workbench; a playbook's classifiers: section.\n"
                + yaml.safe_dump({"classifiers": section}, sort_keys=False, allow_unicode=True))
        atomic_write_text(text, path)
        return "".join(difflib.unified_diff([], text.splitlines(True), fromfile="/dev/null", tofile=str(path)))

    # --------------------------------------------------------------- charts
    def charts(self, name: str) -> list[Chart]:
        """The charts of one classifier: its fast path's, else a class-size bar chart per class output."""
        params = self.params[name]
        ev = self.evaluator(name)
        charts = list(ev.charts(params)) if ev is not self._generic.get(name) else []
        if charts:
            return charts
        if name not in self._counts:
            self._counts[name] = ev.counts(params)
        for o in self.classifiers[name].output_specs(params):
            if o.labels is None:
                continue
            counts = tuple(int(x) for x in self._counts[name][o.column][0])
            labels = [*o.labels, NONE_LABEL] if counts[-1] else list(o.labels)
            sizes = counts[:len(labels)]
            charts.append(Chart(f"sizes-{o.column}", (o.column, tuple(labels), sizes),
                                lambda c=o.column, lab=labels, k=sizes: self._sizes_plot(c, lab).draw(k)))
        return charts

    def _sizes_plot(self, column: str, labels: Sequence[str]) -> SizesPlot:
        key = (column, tuple(labels))
        if key not in self._plots:
            self._plots[key] = SizesPlot(column, labels)
        return self._plots[key]

    def sample(self, column: str, label: str, k: int = 10, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Up to ``k`` customers of one class, highest monetary first (ties: lowest customer id first).

        The same rows as ``classified().filter(class).sort(["monetary", "customer_id"], descending=[True,
        False], nulls_last=True).head(k)``, found by walking the table's order by monetary (sorted once) until
        ``k`` of the class turn up; ``columns`` limits the columns (default: all of :meth:`classified`).
        """
        name, out = self._owners()[column]
        codes = self.label_codes(name).get(column) if out.labels is not None else None
        if codes is None:
            df = self.classified()
            cond = pl.col(column).is_null() if label == NONE_LABEL else pl.col(column).cast(pl.String) == label
            rows = df.filter(cond).sort(*self._sample_sort()).head(k)
            return rows if columns is None else rows.select(columns)
        want = len(out.labels) if label == NONE_LABEL else list(out.labels).index(label)
        if self._sample_order is None:
            by, descending, nulls_last = self._sample_sort()
            self._sample_order = (self.prepared.customers.select(by).with_row_index("_i")
                                  .sort(by, descending=descending, nulls_last=nulls_last)["_i"].to_numpy())
        order = self._sample_order
        found, got, step = [], 0, 4096
        for start in range(0, len(order), step):
            part = order[start:start + step]
            hit = part[codes[part] == want]
            found.append(hit[:k - got])
            got += len(found[-1])
            if got >= k:
                break
            step = min(step * 4, 1 << 20)
        idx = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        base = self.prepared.customers
        wanted = self.classified().columns if columns is None else list(columns)
        cols = []
        for c in wanted:
            if c in self._owners():
                owner, o = self._owners()[c]
                got_codes = self.label_codes(owner).get(c) if o.labels is not None else None
                if got_codes is not None:
                    values = pl.Series(c, [*o.labels, None], dtype=pl.String).cast(self._dtype(owner, c, o.labels))
                    cols.append(values.gather(pl.Series(got_codes[idx].astype(np.uint32))).alias(c))
                else:
                    cols.append(self.columns(owner)[c].gather(idx).alias(c))
            else:
                cols.append(base[c].gather(idx))
        return pl.DataFrame(cols)

    def _sample_sort(self) -> tuple[list[str], list[bool], bool]:
        if "monetary" in self.prepared.customers.columns:
            return ["monetary", "customer_id"], [True, False], True
        return ["customer_id"], [True], True


def _align(before: pl.DataFrame, after: pl.DataFrame) -> tuple[Any, ...] | None:
    """Every customer of either table once: their row in ``before`` and in ``after`` (-1: not there) and their
    revenue units in each (0: not there or null) as float64 limbs ready for :func:`_exact_sums`; None when a
    customer's units do not fit in 62 bits."""
    from .features import NET_REVENUE, to_units

    pair = (before.select("customer_id").with_row_index("_f")
            .join(after.select("customer_id").with_row_index("_t"), on="customer_id", how="full", coalesce=True))
    at = [pair[c].cast(pl.Int64).fill_null(-1).to_numpy() for c in ("_f", "_t")]
    units = []
    for table, rows in ((before, at[0]), (after, at[1])):
        u = table.select(to_units(pl.col(NET_REVENUE)).fill_null(0).alias("u"))["u"]
        if u.len() and (u.max() >= 2**62 or u.min() <= -(2**62)):
            return None
        u = u.cast(pl.Int64).to_numpy()
        units.append(_limbs(np.where(rows >= 0, u[np.maximum(rows, 0)], 0)))
    return at[0], at[1], units[0], units[1]


_LIMB = 22


def _limbs(units: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """``units`` (int64) as their minimum and float64 parts whose sums over any subset stay below 2^53 (exact):
    the units above the minimum whole when their total is below 2^53, else in three 22-bit limbs (each limb's
    sum below 2^53 for under 2^31 customers)."""
    if not len(units):
        return 0, []
    low = int(units.min())
    shifted = (units - low).astype(np.uint64)
    if int(shifted.sum(dtype=np.uint64)) < 2**53 and int(shifted.max()) * len(shifted) < 2**63:
        return low, [shifted.astype(np.float64)]
    mask = np.uint64((1 << _LIMB) - 1)
    return low, [((shifted >> np.uint64(_LIMB * k)) & mask).astype(np.float64) for k in range(3)]


def _exact_sums(code: np.ndarray, limbs: tuple[int, list[np.ndarray]], size: int) -> list[int]:
    """The sum of the units per ``code`` (0 .. size - 1), exactly, from :func:`_limbs`, as Python integers."""
    low, parts = limbs
    counts = np.bincount(code, minlength=size)
    total = [low * int(k) for k in counts]
    for k, part in enumerate(parts):
        sums = np.bincount(code, weights=part, minlength=size)
        shift = 0 if len(parts) == 1 else _LIMB * k
        for i in range(size):
            total[i] += int(sums[i]) << shift
    return total


class _Built(FastPath):
    """Columns already built, as a fast path (to read their codes off them)."""

    def __init__(self, classifier: Classifier, built: Mapping[str, pl.Series]):
        self.classifier = classifier
        self.built = built

    def columns(self, params: Mapping[str, Any]) -> Mapping[str, pl.Series]:
        return self.built


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
                     '<tr><th style="text-align:left">class</th><th style="padding-left:1em">customers</th>'
                     '<th style="padding-left:1em">% customers</th><th style="padding-left:1em">% revenue</th></tr>')
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


def migration_html(migration: pl.DataFrame | None) -> str:
    """The migration since the previous ``as_of``: per label column a line (stayed, up, down, entered, left)
    and the matrix of customers (rows: the class at the earlier date, columns: at the later one).

    Every count carries ``data-column``, ``data-from``, ``data-to`` and ``data-value``.
    """
    if migration is None or not migration.height:
        return ""
    start, end = migration["from_as_of"][0], migration["to_as_of"][0]
    parts = [f'<div class="tierbook-migration"><b>migration from {start} to {end}</b> '
             '<small style="color:grey">(rows: class as of the earlier date; columns: as of the later one; '
             'entered: not a customer then, left: no class now)</small>']
    for column in migration["column"].unique(maintain_order=True).to_list():
        m = migration.filter(pl.col("column") == column)
        rows = m.select("from", "from_rank").unique().sort("from_rank", nulls_last=False)["from"].to_list()
        cols = m.select("to", "to_rank").unique().sort("to_rank", nulls_last=True)["to"].to_list()
        at = {(f, t): n for f, t, n in m.select("from", "to", "customers").iter_rows()}
        f_rank, t_rank = pl.col("from_rank"), pl.col("to_rank")
        both = f_rank.is_not_null() & t_rank.is_not_null()
        tally = m.select(
            pl.col("customers").filter(both & (f_rank == t_rank)).sum().alias("stayed"),
            pl.col("customers").filter(both & (t_rank < f_rank)).sum().alias("up"),
            pl.col("customers").filter(both & (t_rank > f_rank)).sum().alias("down"),
            pl.col("customers").filter(f_rank.is_null() & t_rank.is_not_null()).sum().alias("entered"),
            pl.col("customers").filter(f_rank.is_not_null() & t_rank.is_null()).sum().alias("left"),
        ).row(0, named=True)
        line = ", ".join(f'<span class="tierbook-move" data-column="{html.escape(column)}" data-move="{k}" '
                         f'data-value="{v}">{v:,}</span> {k}' for k, v in tally.items())
        head = "".join(f"<th>{html.escape(t)}</th>" for t in cols)
        body = "".join(
            f"<tr><th>{html.escape(f)}</th>" + "".join(
                f'<td class="tierbook-migration-count" data-column="{html.escape(column)}" data-from="{html.escape(f)}" '
                f'data-to="{html.escape(t)}" data-value="{at.get((f, t), 0)}" style="text-align:right">'
                f"{at.get((f, t), 0):,}</td>" for t in cols) + "</tr>" for f in rows)
        parts.append(f'<div><b>{html.escape(column)}</b>: {line}<table class="tierbook-migration-table">'
                     f"<tr><th></th>{head}</tr>{body}</table></div>")
    parts.append("</div>")
    return "".join(parts)


def rules_html(result: Any) -> str:
    """Hits per rule and customers cut by capacity, from a :class:`~engine.playbook.RuleResult`."""
    if result is None:
        return ""
    a = html.escape
    rows = ['<table class="tierbook-rules" style="border-collapse:collapse"><caption style="text-align:left;'
            'font-weight:bold">rules</caption><tr><th style="text-align:left">rule</th>'
            + "".join(f'<th style="padding-left:1em">{h}</th>' for h in ("matched", "hits", "cut by capacity", "actions"))
            + '</tr>']
    for r in result.rule_summary.iter_rows(named=True):
        cells = "".join(f'<td class="tierbook-rule-{k.replace("_", "-")}" data-rule="{a(r["rule"])}" '
                        f'data-value="{r[k]}" style="text-align:right;padding-left:1em">{r[k]:,}</td>'
                        for k in ("matched", "hits", "cut_by_capacity", "actions"))
        rows.append(f'<tr data-rule="{a(r["rule"])}"><td style="text-align:left">{a(r["rule"])}</td>{cells}</tr>')
    cut_total = sum(result.cut_by_capacity)
    s = {"actions": sum(result.actions_per_rule), "cut_by_capacity": cut_total, "unmatched": result.unmatched}
    rows.append(f'</table><div class="tierbook-rule-totals">actions <span class="tierbook-actions" '
                f'data-value="{s["actions"]}">{s["actions"]:,}</span> · cut by capacity '
                f'<span class="tierbook-cut" data-value="{s["cut_by_capacity"]}">{s["cut_by_capacity"]:,}</span>'
                f' · unmatched <span class="tierbook-unmatched" data-value="{s["unmatched"]}">'
                f'{s["unmatched"]:,}</span></div>')
    if cut_total:
        more = f" (first 10 of {cut_total:,})" if cut_total > 10 else ""
        head = result.cut_head(10) if hasattr(result, "cut_head") else result.cut.head(10)
        rows.append(f'<details class="tierbook-cut-list"><summary>customers cut by capacity{more}</summary>'
                    f'{frame_html(head, "tierbook-cut-table")}</details>')
    return "".join(rows)


def changes_html(d: Any, top: int = 8) -> str:
    """The customers whose action a saved change moves: count, old -> new action table, main reasons."""
    n = d.changes.height
    head = (f'<div class="tierbook-changes-count" data-value="{n}"><b>customers who change action: {n:,}</b> '
            f'of {d.customers:,}</div>')
    if n == 0:
        return head
    rows = "".join(
        f'<tr class="tierbook-transition"><td>{html.escape(r["old_action"])}</td><td>&rarr;</td>'
        f'<td>{html.escape(r["new_action"])}</td><td class="tierbook-transition-count" '
        f'data-value="{r["customers"]}" style="text-align:right">{r["customers"]:,}</td>'
        f'<td style="text-align:right">{r["revenue"]:,.2f}</td></tr>'
        for r in d.transitions.head(top).iter_rows(named=True))
    more = d.transitions.height - top
    reasons = (d.changes.group_by("reason").agg(pl.len().alias("n")).sort(["n", "reason"], descending=[True, False]))
    why = "".join(f"<li>{r['n']:,}: {html.escape(r['reason'])}</li>" for r in reasons.head(top).iter_rows(named=True))
    return (head + '<table class="tierbook-transitions" style="font-size:85%"><tr><th>old action</th><th></th>'
            f'<th>new action</th><th>customers</th><th>revenue</th></tr>{rows}</table>'
            + (f"<div>... and {more:,} more</div>" if more > 0 else "")
            + f'<ul class="tierbook-change-reasons" style="font-size:85%">{why}</ul>')


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
class SizesPlot:
    """The generic chart, customers per class of one class column as horizontal bars, as a figure kept
    across redraws. The bars are drawn against the share of all customers (0-100%, a fixed axis, so the
    axes and labels are drawn once: :class:`~engine.fastpath.Overlay`), each with its count beside it;
    :meth:`draw` draws the bars and counts over the fixed part."""

    def __init__(self, column: str, labels: Sequence[str]):
        height = 1.2 + 0.32 * len(labels)
        self.fig = fig = figure(4.6, min(height, 6.0))
        self.ax = ax = fig.add_subplot()
        self.y = np.arange(len(labels))
        ax.set_yticks(self.y, [str(lab) for lab in labels])
        ax.set_ylim(len(labels) - 0.5, -0.5)  # best class on top
        ax.set_xlim(0, 1.18)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
        ax.set_xlabel("share of customers")
        ax.set_title(f"{column}: customers per class", fontsize=10)
        self.moving: list[Any] = []
        fig.tight_layout()
        self.overlay = Overlay(fig)

    def draw(self, counts: Sequence[int]) -> bytes:
        for artist in self.moving:
            artist.remove()
        total = sum(counts)
        shares = [k / total if total else 0.0 for k in counts]
        bars = list(self.ax.barh(self.y, shares, color="#1f4e79"))
        texts = [self.ax.text(x + 0.01, i, f"{k:,}", va="center", fontsize=8)
                 for i, (x, k) in enumerate(zip(shares, counts))]
        self.moving = [*bars, *texts]
        return self.overlay.render(self.moving)


def class_sizes_png(column: str, labels: Sequence[str], counts: Sequence[int]) -> bytes:
    """The generic chart: customers per class of one class column, as horizontal bars."""
    return SizesPlot(column, labels).draw(counts)


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
    playbook itself) is where Save writes the tuned parameters. Without a
    playbook, "Save to..." writes into the playbook (or new parameters file)
    named in the path box beside it.
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
        self._saved_params = self._snapshot()
        self.last_changes = None  # the action diff of the last save (engine.playbook.diff.PlaybookDiff)
        #: Chart images by (classifier, chart name), the key each one was drawn for, and how often each was drawn.
        self.chart_images: dict[tuple[str, str], Any] = {}
        self._chart_keys: dict[tuple[str, str], Any] = {}
        self.draws: dict[tuple[str, str], int] = {}

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
        self.unsaved = w.HTML()
        self.unsaved.add_class("tierbook-unsaved")
        self.summary = w.HTML()
        self.summary.add_class("tierbook-summary-box")
        self.rules_box = w.HTML()
        self.rules_box.add_class("tierbook-rules-box")
        self.migration_box = w.HTML()  # after an as_of move: the migration from the table shown before
        self.migration_box.add_class("tierbook-migration-box")
        self.chart_box = w.HBox(layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.chart_box.add_class("tierbook-charts")
        self.class_picker = w.Dropdown(description="sample of", layout=w.Layout(width="24em"))
        self.class_picker.add_class("tierbook-class-picker")
        self.class_picker.observe(lambda _: self._show_sample(), names="value")
        self.sample_box = w.HTML()
        if m.playbook is not None:
            self.path_box = None
            self.save_button = w.Button(description="Save to playbook", icon="save", button_style="primary",
                                        tooltip=f"write the parameters into {self._target()}")
            save_row = [self.save_button]
        else:  # no playbook: the path says where
            self.path_box = w.Text(value=str(self.save_path) if self.save_path else "",
                                   placeholder="path/to/playbook.yaml", description="save to",
                                   continuous_update=True, style={"description_width": "5em"},
                                   layout=w.Layout(width="22em"))
            self.path_box.add_class("tierbook-save-path")
            self.path_box.observe(lambda _: self._update_save_state(), names="value")
            self.save_button = w.Button(description="Save to...", icon="save", button_style="primary",
                                        tooltip="write the parameters into the playbook (or a new parameters "
                                                "file) named in the box")
            save_row = [self.path_box, self.save_button]
        self.save_button.add_class("tierbook-save")
        self.save_button.on_click(lambda _: self.save())
        self.diff_box = w.HTML()
        self.diff_box.add_class("tierbook-diff")
        #: beside the YAML diff: the customers whose action the saved change moves (tierbook diff's table)
        self.changes_box = w.HTML()
        self.changes_box.add_class("tierbook-action-diff")
        self.timing = w.HTML()
        self.timing.add_class("tierbook-timing")
        title = ""
        if m.playbook is not None:
            title = (f"<h3 style='margin:0'>{html.escape(m.playbook.name)}</h3>"
                     f"<div>{html.escape(m.playbook.description)}</div>")
        left = w.VBox([*groups, self.as_of, w.HBox(save_row), self.unsaved, self.status, self.diff_box,
                       self.changes_box],
                      layout=w.Layout(min_width="32em", max_width="36em"))
        left.add_class("tierbook-controls")
        # The numbers sit beside the controls (they are what a move changes); charts and samples below.
        numbers = w.VBox([self.summary, self.rules_box, self.migration_box, self.timing],
                         layout=w.Layout(margin="0 0 0 1.5em", flex="1 1 30em", min_width="24em"))
        numbers.add_class("tierbook-numbers-box")
        self.widget = w.VBox([w.HTML(title), w.HBox([left, numbers], layout=w.Layout(flex_flow="row wrap")),
                              self.chart_box, w.VBox([self.class_picker, self.sample_box])])
        self.widget.add_class("tierbook-workbench")
        self._update_save_state()
        self.refresh()

    # ---------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _target(self) -> Path | None:
        if getattr(self, "path_box", None) is not None:
            text = self.path_box.value.strip()
            return Path(text).expanduser() if text else None
        if self.save_path is not None:
            return self.save_path
        return self.model.playbook.path if self.model.playbook is not None else None

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: dict(p) for name, p in self.model.params.items()}

    @property
    def has_unsaved_changes(self) -> bool:
        """Whether the parameters differ from the playbook's (or from the last save)."""
        return self.model.params != self._saved_params

    def _update_save_state(self) -> None:
        dirty = self.has_unsaved_changes
        self.unsaved.value = ('<span class="tierbook-unsaved-marker" style="color:#b26a00">&#9679; unsaved changes'
                              '</span>' if dirty else "")
        self.save_button.disabled = self._target() is None

    # ---------------------------------------------------------------- updates
    def _on_change(self, name: str, spec: ParamSpec):
        def handler(change: Mapping[str, Any]) -> None:
            if self._syncing:
                return
            value = change["new"]
            if spec.type == "float" and spec.step:
                value = round(float(value), _decimals(spec.step) + 2)
            if not self.set({f"{name}.{spec.name}": value}):
                # Refused (a >= b, out of bounds): the control goes back to the value in force, so what
                # the controls show is always what the numbers and Save use.
                self._sync_controls()
        return handler

    def _sync_controls(self) -> None:
        for name, params in self.model.params.items():
            for key, value in params.items():
                ctl = self.controls.get(f"{name}.{key}")
                if ctl is not None and not isinstance(value, dict) and ctl.value != value:
                    self._syncing = True
                    try:
                        ctl.value = value
                    finally:
                        self._syncing = False

    def set(self, changes: Mapping[str, Any]) -> bool:
        """Set parameters (``{"classifier.param": value}``) as moving their controls does, and refresh.

        Returns False, shows why and changes nothing when the values are refused.
        """
        try:
            self.model.set_params(changes)
        except ParamError as exc:
            self.status.value = (f'<span class="tierbook-error" style="color:#b00020">{html.escape(str(exc))}; '
                                 f'kept the previous value</span>')
            return False
        self._sync_controls()
        self.status.value = ""
        self.diff_box.value = ""  # a diff describes the last save, not the parameters now
        self.changes_box.value = ""
        self._update_save_state()
        self.refresh()
        return True

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
        self._chart_keys.clear()  # another table: every chart shows something else
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
        t_migration = 0.0
        if m.previous is not None:
            t = time.perf_counter()
            self.migration_box.value = migration_html(m.migration())
            t_migration = time.perf_counter() - t
        options = [(f"{c} = {lab}", (c, lab)) for c, lab in numbers.select("column", "label").iter_rows()]
        current = self.class_picker.value
        if list(self.class_picker.options) != options:
            self.class_picker.options = options
        if current in [v for _, v in options]:
            self.class_picker.value = current
        elif options:
            self.class_picker.value = options[0][1]
        t = time.perf_counter()
        self._show_sample()
        t_sample = time.perf_counter() - t
        t2 = time.perf_counter()
        if self.charts_enabled:
            self.redraw()
        t_charts = time.perf_counter() - t2
        total = time.perf_counter() - t0
        self.timings = {"numbers": t_numbers, "rules": t_rules, "migration": t_migration, "sample": t_sample,
                        "charts": t_charts, "total": total}
        self.timing.value = (f'<small style="color:grey">{m.n:,} customers as of {m.as_of} · numbers '
                             f'{1000 * t_numbers:.0f} ms · rules {1000 * t_rules:.0f} ms · '
                             + (f'migration {1000 * t_migration:.0f} ms · ' if m.previous is not None else '')
                             + f'sample {1000 * t_sample:.0f} ms · charts {1000 * t_charts:.0f} ms · '
                             f'in all {1000 * total:.0f} ms</small>')

    def redraw(self) -> None:
        """Redraw the charts whose content changed (each chart's ``key``); the others stay as they are."""
        import ipywidgets as w

        wanted = []
        for name in self.model.classifiers:
            for chart in self.model.charts(name):
                ident = (name, chart.name)
                wanted.append(ident)
                if ident not in self.chart_images:
                    img = w.Image(format="png", layout=w.Layout(max_width="480px", margin="0 1em 1em 0"))
                    img.add_class("tierbook-chart")
                    img.add_class(f"tierbook-chart-{name}-{chart.name}".replace("_", "-"))
                    self.chart_images[ident] = img
                if self._chart_keys.get(ident, _NOTHING) != chart.key:
                    self.chart_images[ident].value = chart.draw()
                    self._chart_keys[ident] = chart.key
                    self.draws[ident] = self.draws.get(ident, 0) + 1
        children = tuple(self.chart_images[i] for i in wanted)
        if self.chart_box.children != children:
            self.chart_box.children = children

    def _show_sample(self) -> None:
        choice = self.class_picker.value
        if not choice:
            self.sample_box.value = ""
            return
        column, label = choice
        base = self.model.prepared.customers.columns
        keep = [c for c in ("customer_id", "recency_days", "frequency", "monetary", "tenure_days") if c in base]
        labels = [o.column for name in self.model.params for o in self.model.classifiers[name].output_specs(
            self.model.params[name]) if o.labels is not None]
        df = self.model.sample(column, label, columns=keep + list(dict.fromkeys(labels)))
        self.sample_box.value = frame_html(df)

    def save(self) -> str | None:
        """Write the tuned parameters (comments kept); show and return the diff.

        Refuses (returns None, says why) when there is nowhere to save, or when
        a control shows a value that is not the one in force.
        """
        target = self._target()
        if target is None:
            self.status.value = ('<span class="tierbook-error">not saved: give a path to save to (a playbook, or a '
                                 'new file for the parameters)</span>')
            return None
        shown = {key: ctl.value for key, ctl in self.controls.items()}
        in_force = {f"{n}.{k}": v for n, p in self.model.params.items() for k, v in p.items()}
        stale = [key for key, value in shown.items() if key in in_force and not isinstance(in_force[key], dict)
                 and value != in_force[key]]
        if stale:
            self.status.value = (f'<span class="tierbook-error">not saved: {html.escape(", ".join(stale))} '
                                 'show a value that is not in force; fix it first</span>')
            return None
        before = self._saved_params
        try:
            diff = self.model.save(target if self.model.playbook is None or self.save_path is not None else None)
        except TierbookError as exc:
            self.status.value = f'<span class="tierbook-error">not saved: {html.escape(str(exc))}</span>'
            return None
        self.last_changes = self.model.action_changes(before) if diff else None
        self.changes_box.value = changes_html(self.last_changes) if self.last_changes is not None else ""
        self._saved_params = self._snapshot()
        if diff:
            self.status.value = f'<span class="tierbook-saved">saved to {html.escape(str(target))}</span>'
        else:
            self.status.value = f'<span class="tierbook-saved">{html.escape(str(target))} already up to date</span>'
        self.diff_box.value = f'<pre class="tierbook-diff-text" style="font-size:85%">{html.escape(diff)}</pre>'
        self._update_save_state()
        return diff


_NOTHING = object()
