"""The contracts a plugin fulfils: :class:`Classifier`, :class:`Output`, :class:`Feature`.

A classifier is a pure function of the customer table: given its validated
parameters it returns one Polars expression per output column. It never
collects, never loops over rows in Python, and never reads the transactions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .errors import ParamError
from .params import ParamSpec, resolve_params

__all__ = ["Classifier", "Output", "Feature", "Context"]


@dataclass(frozen=True)
class Output:
    """One column a classifier adds to the customer table.

    ``labels`` (ordered best to worst) makes the column a Polars ``Enum``: it is
    then a class column, summarised by class size and revenue share, and rules
    may compare it only with these labels. Without labels the column is a plain
    value of ``dtype`` (a score, a code).
    """

    column: str
    description: str
    labels: tuple[str, ...] | None = None
    dtype: Any = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            labels = tuple(self.labels)
            if not labels or len(set(labels)) != len(labels):
                raise ValueError(f"output {self.column!r}: labels must be non-empty and unique, got {labels!r}")
            object.__setattr__(self, "labels", labels)
        elif self.dtype is None:
            raise ValueError(f"output {self.column!r}: give labels or a dtype")

    @property
    def polars_dtype(self) -> pl.DataType:
        """``pl.Enum(labels)`` for a class column, else ``dtype``."""
        if self.labels is not None:
            return pl.Enum(list(self.labels))
        return self.dtype


@dataclass(frozen=True)
class Context:
    """What a classifier may know besides its parameters.

    ``schema`` is the customer table's schema (features, plugin features and
    customer attributes); ``as_of`` the reference date of the run; ``fit`` what
    the classifier's own :attr:`Classifier.fit` returned for this run (``None``
    for a classifier without one).
    """

    as_of: dt.date
    schema: Mapping[str, pl.DataType]
    fit: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Classifier:
    """A named classification of customers.

    Parameters
    ----------
    name
        Unique name; the prefix of ``--set name.param=value`` and the key in a
        playbook's ``classifiers:``.
    description
        One line for listings.
    outputs
        The columns it adds. A tuple of :class:`Output`, or a callable of the
        resolved parameters returning one (when labels depend on parameters).
    params
        Its :class:`~engine.params.ParamSpec` list.
    requires
        Customer-table columns it reads (features, attributes). A tuple, or a
        callable of the resolved parameters returning one (when the columns
        depend on a parameter, e.g. a period of days or of weeks): the run
        computes the on-demand features the parameters in force need
        (:meth:`required`). Either way the attribute is then the tuple for
        the default parameters, so code that reads it keeps working.
    expressions
        ``expressions(params, context) -> {column: pl.Expr}``, one expression per
        output, evaluated with ``customers.with_columns(...)``. An output may use
        the classifier's own outputs declared before it, by column name
        (``pl.col("rfm_r")``): those are computed first, so a value several
        outputs need is computed once.
    check
        Optional cross-parameter validation, ``check(params)``; raise
        ``ValueError`` with a message when the combination is invalid.
    workbench
        Optional fast path for the notebook workbench,
        ``workbench(classifier, table) -> engine.fastpath.FastPath``: an
        incremental evaluator that recounts the classes when a parameter moves
        without re-running the expressions over the whole table, and optional
        charts. Without it the workbench re-runs the expressions and draws a
        class-size bar chart. See :mod:`engine.fastpath`.
    report
        Optional charts for ``tierbook report``,
        ``report(classifier, table, params) -> Sequence[engine.report.Figure]``:
        ``table`` is an :class:`engine.fastpath.Table` of the classified
        customers (the classifier's columns included), ``params`` its resolved
        parameters. Each :class:`~engine.report.Figure` is a plotly.js figure as
        plain JSON values (no charting import needed). Without it the report
        shows the class-size chart every class output gets. See
        :mod:`engine.report`.
    fit
        Optional ``fit(customers, params, context) -> dict``, for a classifier
        whose labels depend on a model estimated from the whole customer table
        (CLV). It is called once per classification, before ``expressions``,
        with the collected customer table; what it returns is handed to
        ``expressions`` as ``context.fit`` and reported (``summary.json`` under
        ``fits``), so it must be JSON-serialisable. It may raise a
        :class:`~engine.errors.TierbookError` (e.g. ``DataError``: too few
        customers to fit) to stop the run with that message.
    by_default
        ``False`` for a classifier that runs only when named (``--classifier``,
        a playbook's ``classifiers:``), not when every classifier is selected:
        one that fits a model, takes seconds, or needs data not every shop has.
    """

    name: str
    description: str
    outputs: tuple[Output, ...] | Callable[[Mapping[str, Any]], Sequence[Output]]
    params: tuple[ParamSpec, ...]
    requires: tuple[str, ...] | Callable[[Mapping[str, Any]], Sequence[str]]
    expressions: Callable[[Mapping[str, Any], Context], Mapping[str, pl.Expr]]
    check: Callable[[Mapping[str, Any]], None] | None = field(default=None, compare=False)
    workbench: Callable[[Classifier, Any], Any] | None = field(default=None, compare=False)
    fit: Callable[[pl.DataFrame, Mapping[str, Any], Context], Mapping[str, Any] | None] | None = field(
        default=None, compare=False)
    by_default: bool = True
    report: Callable[[Classifier, Any, Mapping[str, Any]], Sequence[Any]] | None = field(default=None, compare=False)
    #: ``requires`` when given as a callable (set by ``__post_init__``)
    requires_by_params: Callable[[Mapping[str, Any]], Sequence[str]] | None = field(default=None, compare=False,
                                                                                    repr=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"classifier name {self.name!r} must be an identifier")
        object.__setattr__(self, "params", tuple(self.params))
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"classifier {self.name!r}: duplicate parameter names {names}")
        if callable(self.requires):
            object.__setattr__(self, "requires_by_params", self.requires)
            object.__setattr__(self, "requires", tuple(self.requires(self.resolve())))
        object.__setattr__(self, "requires", tuple(self.requires))

    def resolve(self, values: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None) -> dict:
        """Validate ``values`` over the defaults, including the cross-parameter check."""
        params = resolve_params(self.params, values or {}, owner=self.name, sources=sources)
        if self.check is not None:
            try:
                self.check(params)
            except ValueError as exc:
                given = [k for k in values or {} if k in (sources or {})]
                raise ParamError(f"{self.name}: {exc}", source=sources[given[0]] if given else None,
                                 classifier=self.name, param=given[0] if given else None) from None
        return params

    def output_specs(self, params: Mapping[str, Any] | None = None) -> tuple[Output, ...]:
        """The outputs for these (resolved) parameters."""
        if callable(self.outputs):
            return tuple(self.outputs(params if params is not None else self.resolve()))
        return tuple(self.outputs)

    def required(self, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The columns it reads with these (resolved) parameters (default: the defaults)."""
        if self.requires_by_params is not None and params is not None:
            return tuple(self.requires_by_params(params))
        return self.requires

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Labels of the first class output with default parameters (for listings)."""
        for out in self.output_specs():
            if out.labels is not None:
                return out.labels
        return None

    def param(self, name: str) -> ParamSpec:
        """The spec called ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class Feature:
    """A per-customer feature contributed by a plugin.

    Exactly one of ``agg``, ``table`` and ``derive`` is given:

    * ``agg``: an aggregation over the canonical transaction columns
      (``customer_id``, ``order_id``, ``order_date``, ``amount``), computed in
      the same single ``group_by`` pass as the built-in features;
    * ``table``: ``table(rows) -> LazyFrame``, a query over the same usable
      rows (canonical columns) returning at most one row per ``customer_id``
      and a column called like the feature, for what one aggregation per
      customer cannot say (e.g. a ``group_by`` per customer and day, then per
      customer). It is collected together with the built-in features, from the
      same single scan; features that give the same ``table`` function share one
      query. Customers it has no row for get null. A function that also takes
      an ``int64_safe`` keyword (``table(rows, *, int64_safe=False)``) is told
      when its result is used only if no sum of ``amount_units`` can leave an
      Int64, so it may sum them in Int64 instead of Int128;
    * ``derive``: an expression over the customer table after aggregation
      (it may use the built-in features, ``as_of``-based columns and other
      plugin features).

    ``on_demand`` features are computed only when a selected classifier
    requires them (or a derived feature that is computed uses them, or a
    playbook's rule names them), so their cost is paid only by runs that use
    them.
    """

    name: str
    description: str
    agg: pl.Expr | None = None
    derive: pl.Expr | None = None
    table: Callable[[pl.LazyFrame], pl.LazyFrame] | None = field(default=None, compare=False)
    on_demand: bool = False

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.agg, self.derive, self.table)) != 1:
            raise ValueError(f"feature {self.name!r}: give exactly one of agg=, table= and derive=")
        if not self.name.isidentifier():
            raise ValueError(f"feature name {self.name!r} must be an identifier")
