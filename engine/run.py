"""The pipeline shared by the command line, scripts and notebooks.

``prepare`` reads the transactions once and computes the customer table;
``Prepared.classify`` adds label columns (cheap, repeatable: the notebook
workbench calls it on every slider move); ``classify`` does both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import polars as pl

from .classifier import Classifier, Context, Output
from .data import AMOUNT_SCALE, as_date, read_customers, read_transactions
from .errors import DataError, ParamError, PluginError, TierbookError, option, suggest
from .features import BUILTIN_FEATURES, FeatureResult, LoadReport, compute_features, to_units
from .registry import Registry, describe_failure, get_registry, plugin_time_limit, stops_tierbook

#: Where the feature pass runs: Polars in this process, or Apache Spark (engine.spark).
ENGINES = ("polars", "spark")

#: Engine for the classifiers' ``with_columns`` over the (in-memory) customer table. Polars' default is
#: the streaming engine, which evaluates a subexpression shared by several columns (a rank, a sort) once
#: per column; the in-memory engine computes it once (bench/PROFILE.md: RFM 3x faster at 1M customers).
CLASSIFY_ENGINE = "in-memory"

__all__ = ["Prepared", "prepare", "classify", "classify_frame", "split_params", "Selection", "summarize"]


def split_params(items: Iterable[str] | Mapping[str, Any] | None, *, where: str | None = None) -> dict[str, dict]:
    """Turn ``["abc.a=0.7"]`` or ``{"abc.a": 0.7}`` or ``{"abc": {"a": 0.7}}`` into ``{"abc": {"a": "0.7"}}``.

    Errors name the parameters as the caller gave them (``where``, default
    :func:`~engine.errors.option` ``("params")``: ``params`` from Python, ``--set``
    on the command line).

    >>> split_params(["abc.a=0.7", "adc.active_days=60"])
    {'abc': {'a': '0.7'}, 'adc': {'active_days': '60'}}
    >>> split_params({"bins": 4})
    Traceback (most recent call last):
    ...
    engine.errors.ParamError: params: key 'bins' does not name a classifier: give {'<classifier>.bins': 4} or {'<classifier>': {'bins': 4}}
    """
    where = where or option("params")
    out: dict[str, dict] = {}
    if items is None:
        return out
    if isinstance(items, str):
        items = [items]
    if isinstance(items, Mapping):
        for key, value in items.items():
            if isinstance(value, Mapping):
                out.setdefault(str(key), {}).update(value)
                continue
            name, dot, param = str(key).partition(".")
            if not dot or not name or not param:
                raise ParamError(f"{where}: key {key!r} does not name a classifier: give "
                                 f"{{'<classifier>.{key}': {value!r}}} or {{'<classifier>': {{{str(key)!r}: "
                                 f"{value!r}}}}}", value=key)
            out.setdefault(name, {})[param] = value
        return out
    for item in items:
        key, eq, value = str(item).partition("=")
        name, dot, param = key.strip().partition(".")
        if not eq or not dot or not name or not param:
            raise ParamError(f"{where} {item}: expected classifier.param=value", value=item)
        out.setdefault(name, {})[param] = value.strip()
    return out


@dataclass(frozen=True)
class Selection:
    """A classifier with its resolved parameters."""

    classifier: Classifier
    params: dict[str, Any]

    @property
    def outputs(self) -> tuple[Output, ...]:
        return self.classifier.output_specs(self.params)

    @property
    def requires(self) -> tuple[str, ...]:
        """The customer-table columns the classifier reads with these parameters."""
        return self.classifier.required(self.params)


def select(
    registry: Registry,
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    sources: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Selection]:
    """Resolve classifier names and their parameters; unknown names and params fail with a suggestion."""
    params = dict(params or {})
    # Every classifier that runs by default, and any other one given parameters.
    names = list(names) if names is not None else sorted(
        n for n, c in registry.classifiers.items() if c.by_default or n in params)
    for name in params:
        if name not in names:
            if name in registry.classifiers:
                raise ParamError(f"parameters given for {name!r}, which is not selected (selected: {', '.join(names)})")
            known = ", ".join(sorted(registry.classifiers)) or "none"
            raise ParamError(f"parameters given for unknown classifier {name!r}{suggest(name, registry.classifiers)}"
                             f" (installed: {known})")
    out = []
    for name in names:
        clf = registry.classifier(name)
        out.append(Selection(clf, clf.resolve(params.get(name, {}), (sources or {}).get(name))))
    return out


def _check_columns(sel: Selection, schema: Mapping[str, pl.DataType], owner: str = "its plugin") -> None:
    clf = sel.classifier
    for col in sel.requires:
        if col not in schema:
            raise PluginError(f"classifier {clf.name!r} of {owner} needs column {col!r}, which the customer table "
                              f"does not have{suggest(col, schema)}")
    for spec in clf.params:
        if spec.feature:
            col = sel.params[spec.name]
            if col not in schema:
                raise ParamError(f"{clf.name}.{spec.name}: no customer column {col!r}{suggest(col, schema)}; "
                                 f"numeric columns: {', '.join(c for c, t in schema.items() if t.is_numeric())}")
            if not schema[col].is_numeric():
                raise ParamError(f"{clf.name}.{spec.name}: column {col!r} is {schema[col]}, not numeric")


def _label_exprs(sel: Selection, ctx: Context, owner: str) -> list[pl.Expr]:
    clf = sel.classifier
    try:
        with plugin_time_limit(f"classifier {clf.name!r} of {owner}: expressions()"):
            exprs = clf.expressions(sel.params, ctx)
    except PluginError:
        raise
    except BaseException as exc:  # sys.exit in a plugin included: it fails the classifier, named
        if stops_tierbook(exc):
            raise
        raise PluginError(f"classifier {clf.name!r} of {owner} failed: {describe_failure(exc)}") from None
    if not isinstance(exprs, Mapping):
        raise PluginError(f"classifier {clf.name!r} of {owner}: expressions() returned a {type(exprs).__name__}, "
                          f"not a mapping of column to Polars expression")
    exprs = dict(exprs)
    wanted = [o.column for o in sel.outputs]
    if set(exprs) != set(wanted):
        raise PluginError(f"classifier {clf.name!r} of {owner} returned columns {sorted(exprs)}, "
                          f"but declares {wanted}")
    out = []
    for o in sel.outputs:
        expr = exprs[o.column]
        if not isinstance(expr, pl.Expr):
            raise PluginError(f"classifier {clf.name!r} of {owner}: column {o.column!r} is a "
                              f"{type(expr).__name__}, not a Polars expression")
        out.append(expr.cast(o.polars_dtype).alias(o.column))
    return out


def _layers(exprs: Sequence[pl.Expr]) -> list[list[pl.Expr]]:
    """Split output expressions into ``with_columns`` steps: an output that uses an earlier one comes after it.

    A classifier's outputs may refer to its own earlier outputs by name (RFM's
    segment reads ``rfm_r``): each score is then computed once and read, where one
    ``with_columns`` would compute it again inside every expression that uses it.
    Outputs that use none go into the first step together.
    """
    layer_of: dict[str, int] = {}
    layers: list[list[pl.Expr]] = []
    for expr in exprs:
        name = expr.meta.output_name()
        uses = [layer_of[c] for c in expr.meta.root_names() if c in layer_of]
        layer = max(uses) + 1 if uses else 0
        if layer == len(layers):
            layers.append([])
        layers[layer].append(expr)
        layer_of[name] = layer
    return layers


def _with_outputs(customers: pl.DataFrame, exprs: Sequence[pl.Expr]) -> pl.DataFrame:
    lf = customers.lazy()
    for layer in _layers(exprs):
        lf = lf.with_columns(layer)
    return lf.collect(engine=CLASSIFY_ENGINE)


def apply_classifiers(
    customers: pl.DataFrame,
    selections: Sequence[Selection],
    *,
    as_of: dt.date,
    registry: Registry | None = None,
    skipped: list[str] | None = None,
    skipped_classifiers: dict[str, str] | None = None,
    fits: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Add every selected classifier's columns to ``customers`` (one ``with_columns``).

    A classifier with a ``fit`` is fitted first, on ``customers``; with ``fits``
    (a dict), what each fit returned is stored there under the classifier's name.

    A classifier that breaks its contract (an exception, a column of the wrong
    length or type, a label outside its declared set, a missing feature) is
    named, with its plugin's package and version, in a :class:`PluginError`.
    With ``skipped`` (a list), a failing classifier is skipped instead: its
    columns are left empty (null, so no rule matches them), and its error is
    appended to ``skipped`` (and, given ``skipped_classifiers``, recorded
    there under the classifier's name).
    """
    record = skipped_classifiers if skipped_classifiers is not None else {}
    schema = customers.schema
    ctx = Context(as_of=as_of, schema=schema)
    owners = registry.owners if registry is not None else {}
    columns: dict[str, str] = {}
    for sel in selections:
        for o in sel.outputs:
            if o.column in schema or o.column in columns:
                other = columns.get(o.column, "the customer table")
                raise PluginError(f"classifier {sel.classifier.name!r} writes column {o.column!r}, "
                                  f"which {other} already has")
            columns[o.column] = f"classifier {sel.classifier.name!r}"

    def owner_of(sel: Selection) -> str:
        name = sel.classifier.name
        return owners[name].label() if name in owners else "its plugin"

    exprs: list[pl.Expr] = []
    failed: set[str] = set()
    contexts: dict[str, Context] = {}
    for sel in selections:
        try:
            _check_columns(sel, schema, owner_of(sel))
            contexts[sel.classifier.name] = _fit(sel, customers, ctx, owner_of(sel), fits)
            exprs.extend(_label_exprs(sel, contexts[sel.classifier.name], owner_of(sel)))
        except PluginError as exc:
            if skipped is None:
                raise
            failed.add(sel.classifier.name)
            skipped.append(str(exc))
            record[sel.classifier.name] = str(exc)
            exprs.extend(pl.lit(None, o.polars_dtype).alias(o.column) for o in sel.outputs)
    try:
        return _with_outputs(customers, exprs)
    except pl.exceptions.PolarsError:
        pass
    # Find which classifier broke, one at a time (error path only).
    exprs = []
    for sel in selections:
        if sel.classifier.name in failed:
            exprs.extend(pl.lit(None, o.polars_dtype).alias(o.column) for o in sel.outputs)
            continue
        own = contexts[sel.classifier.name]
        error = _diagnose(customers, sel, own, owner_of(sel))
        if error is None:
            exprs.extend(_label_exprs(sel, own, owner_of(sel)))
        elif skipped is None:
            raise error
        else:
            skipped.append(str(error))
            record[sel.classifier.name] = str(error)
            exprs.extend(pl.lit(None, o.polars_dtype).alias(o.column) for o in sel.outputs)
    try:
        return _with_outputs(customers, exprs)
    except pl.exceptions.PolarsError as exc:  # pragma: no cover - each classifier passed alone
        raise PluginError(f"the classifiers failed together but not one by one: {_first(exc)}") from None


def _fit(sel: Selection, customers: pl.DataFrame, ctx: Context, owner: str,
         fits: dict[str, Any] | None) -> Context:
    """Run the classifier's ``fit`` (if any) and return the context its expressions get."""
    clf = sel.classifier
    if clf.fit is None:
        return ctx
    try:
        with plugin_time_limit(f"classifier {clf.name!r} of {owner}: fit()"):
            fitted = clf.fit(customers, sel.params, ctx)
    except TierbookError:
        raise
    except Exception as exc:
        raise PluginError(f"classifier {clf.name!r} of {owner}: fit() failed: {type(exc).__name__}: {exc}") from None
    if fitted is not None and not isinstance(fitted, Mapping):
        raise PluginError(f"classifier {clf.name!r} of {owner}: fit() returned a {type(fitted).__name__}, "
                          f"not a mapping")
    fitted = dict(fitted or {})
    if fits is not None:
        fits[clf.name] = fitted
    return replace(ctx, fit=fitted)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _diagnose(customers: pl.DataFrame, sel: Selection, ctx: Context, owner: str) -> PluginError | None:
    """The contract a classifier broke on ``customers``, as a :class:`PluginError` (None if it works)."""
    clf = sel.classifier
    who = f"classifier {clf.name!r} of {owner}"
    try:
        raw = clf.expressions(sel.params, ctx)
    except BaseException as exc:
        if stops_tierbook(exc):
            raise
        return PluginError(f"{who} failed: {describe_failure(exc)}")
    n = customers.height
    # Output by output, each added to the table before the next (a later output may use an earlier one).
    work = customers
    for o in sel.outputs:
        try:
            values = work.lazy().select(raw[o.column].alias(o.column)).collect()[o.column]
        except pl.exceptions.PolarsError as exc:
            return PluginError(f"{who}: column {o.column!r} cannot be computed: {_first(exc)}")
        if values.len() not in (1, n):
            return PluginError(f"{who}: column {o.column!r} has {values.len()} values for {n} customers")
        if o.labels is not None:
            text = values.cast(pl.String, strict=False)
            bad = text.filter(text.is_not_null() & ~text.is_in(list(o.labels)))
            if bad.len():
                return PluginError(f"{who}: column {o.column!r} has the label {bad[0]!r}, which is not one of "
                                   f"its declared labels ({', '.join(o.labels)})")
        try:
            values = values.cast(o.polars_dtype, strict=True)
        except pl.exceptions.PolarsError as exc:
            return PluginError(f"{who}: column {o.column!r} is {values.dtype}, which does not convert to the "
                               f"declared {o.polars_dtype}: {_first(exc)}")
        work = work.with_columns(pl.repeat(values[0], n, dtype=values.dtype).alias(o.column) if values.len() == 1
                                 else values.alias(o.column))
    try:
        _with_outputs(customers, _label_exprs(sel, ctx, owner))
    except pl.exceptions.PolarsError as exc:
        return PluginError(f"{who} produced a bad column: {_first(exc)}")
    return None


@dataclass
class Prepared:
    """Customer features computed once, ready to be classified again and again."""

    customers: pl.DataFrame
    as_of: dt.date
    report: LoadReport
    registry: Registry
    selections: list[Selection] = field(default_factory=list)
    #: Classifiers skipped by the last ``classify(skip_failing=True)``, one message each.
    skipped: list[str] = field(default_factory=list)
    #: What the fitted classifiers of the last ``classify`` returned (parameters, standard errors), by name.
    fits: dict[str, Any] = field(default_factory=dict)
    #: How the table came about, for a run's manifest (a playbook fills it: where as_of came from, durations).
    provenance: dict[str, Any] = field(default_factory=dict)

    def select(self, classifiers: Sequence[str] | None = None, params: Any = None) -> list[Selection]:
        return select(self.registry, classifiers, split_params(params))

    def classify(self, classifiers: Sequence[str] | None = None, params: Any = None, *,
                 skip_failing: bool = False) -> pl.DataFrame:
        """One row per customer with features and the label columns of ``classifiers`` (default: all).

        With ``skip_failing`` a classifier that fails is skipped (its columns
        stay empty) and named in :attr:`skipped`, instead of stopping the run.
        """
        self.selections = self.select(classifiers, params)
        missing = [c for sel in self.selections for c in sel.requires
                   if c not in self.customers.columns and c in self.registry.features]
        if missing:
            raise PluginError(f"{', '.join(dict.fromkeys(missing))}: plugin features computed on demand, not in this "
                              f"customer table; prepare it with needs={list(dict.fromkeys(missing))!r} "
                              f"(engine.prepare(..., needs=...)) or call engine.classify")
        self.skipped = []
        self.fits = {}
        return apply_classifiers(self.customers, self.selections, as_of=self.as_of, registry=self.registry,
                                 skipped=self.skipped if skip_failing else None, fits=self.fits)


def prepare(
    data: Any,
    *,
    mapping: Any = None,
    customers: Any = None,
    customers_id: str | None = None,
    as_of: str | dt.date | None = None,
    date_format: str | None = None,
    sheet: str | None = None,
    registry: Registry | None = None,
    streaming: bool = True,
    delimiter: str | None = None,
    decimal_comma: bool = False,
    engine: str = "polars",
    spark: Any = None,
    needs: Iterable[str] | None = None,
) -> Prepared:
    """Read ``data`` once and compute the customer table (see :mod:`engine.features`).

    ``engine="spark"`` runs the feature pass on Apache Spark instead (``data``: Parquet paths, a
    directory or a glob; ``spark``: ``{"master": ..., "config": {...}}``, see :mod:`engine.spark`).

    Plugin features marked ``on_demand`` are computed when a name in ``needs``
    (columns the caller will use: classifiers' ``requires``, rule columns) asks
    for them; with ``needs=None``, when an installed classifier that runs by
    default requires them.
    """
    registry = registry or get_registry()
    if engine not in ENGINES:
        raise DataError(f"engine {engine!r}: use one of {', '.join(ENGINES)}{suggest(str(engine), ENGINES)}")
    if needs is None:
        needs = [c for clf in registry.classifiers.values() if clf.by_default for c in clf.required()]
    features = plugin_features_for(registry.features, needs)
    if engine == "polars":
        tx = read_transactions(data, mapping, date_format=date_format, sheet=sheet, delimiter=delimiter,
                               decimal_comma=decimal_comma)
    elif sheet is not None or delimiter is not None or decimal_comma:
        raise DataError("the spark engine reads Parquet: a sheet, a delimiter or a decimal comma does not apply")
    table = None
    if customers is not None:
        reserved = frozenset(BUILTIN_FEATURES) | frozenset(registry.features)
        table = read_customers(customers, customers_id, reserved=reserved)
    if engine == "spark":
        from .spark import SparkSettings, compute_features_spark

        settings = spark if isinstance(spark, SparkSettings) else SparkSettings.from_mapping(spark)
        result = compute_features_spark(
            data, mapping, as_of=as_of_date(as_of), customers=table, plugin_features=features,
            feature_owners={name: info.label() for name, info in registry.feature_owners.items()},
            settings=settings, date_format=date_format)
        return Prepared(result.customers, result.as_of, result.report, registry)
    result: FeatureResult = compute_features(
        tx, as_of=as_of_date(as_of), customers=table, plugin_features=features, streaming=streaming,
        feature_owners={name: info.label() for name, info in registry.feature_owners.items()},
    )
    return Prepared(result.customers, result.as_of, result.report, registry)


def plugin_features_for(features: Mapping[str, Any], needs: Iterable[str]) -> dict[str, Any]:
    """The plugin features to compute: every one not ``on_demand``, and the on-demand ones ``needs``
    names, with what the derived features among them use (transitively).

    >>> from engine import Feature
    >>> feats = {"a": Feature("a", "x", agg=pl.len(), on_demand=True),
    ...          "b": Feature("b", "x", derive=pl.col("a") + 1, on_demand=True),
    ...          "c": Feature("c", "x", agg=pl.len())}
    >>> sorted(plugin_features_for(feats, ["b"])), sorted(plugin_features_for(feats, []))
    (['a', 'b', 'c'], ['c'])
    """
    wanted = {n for n, f in features.items() if not f.on_demand} | {n for n in needs if n in features}
    todo = list(wanted)
    while todo:
        feat = features[todo.pop()]
        if feat.derive is not None:
            for col in feat.derive.meta.root_names():
                if col in features and col not in wanted:
                    wanted.add(col)
                    todo.append(col)
    # Features of one table function come from one query: all of them, or none.
    tables = {id(features[n].table) for n in wanted if features[n].table is not None}
    wanted |= {n for n, f in features.items() if f.table is not None and id(f.table) in tables}
    return {n: f for n, f in features.items() if n in wanted}


def as_of_date(value: Any) -> dt.date | None:
    return as_date(value)


def classify(
    data: Any,
    *,
    classifiers: Sequence[str] | None = None,
    params: Any = None,
    **kwargs: Any,
) -> pl.DataFrame:
    """Classify the customers of ``data`` in one call.

    ``data`` is a path (CSV, Parquet, NDJSON, xlsx) or a Polars / pandas frame;
    the other keywords are those of :func:`prepare` (``mapping``,
    ``customers``, ``as_of`` ...). ``params`` takes ``{"abc": {"a": 0.7}}``,
    ``{"abc.a": 0.7}`` or ``["abc.a=0.7"]``. pandas users call ``.to_pandas()``
    on the result. Plugin features computed on demand are computed when the
    selected classifiers require them.
    """
    registry = kwargs.pop("registry", None) or get_registry()
    if "needs" not in kwargs:
        kwargs["needs"] = [c for sel in select(registry, classifiers, split_params(params))
                           for c in sel.requires]
    return prepare(data, registry=registry, **kwargs).classify(classifiers, params)


def classify_frame(
    customers: pl.DataFrame,
    classifiers: str | Sequence[str] | None = None,
    params: Any = None,
    *,
    as_of: dt.date | None = None,
    registry: Registry | None = None,
) -> pl.DataFrame:
    """Classify a customer table that already has the features a classifier needs.

    Useful for tests, docs and custom feature pipelines.
    """
    registry = registry or get_registry()
    names = [classifiers] if isinstance(classifiers, str) else classifiers
    sels = select(registry, names, split_params(params))
    return apply_classifiers(customers, sels, as_of=as_of or dt.date.today(), registry=registry)


def summarize(classified: pl.DataFrame, selections: Sequence[Selection]) -> pl.DataFrame:
    """Class sizes and revenue shares: one row per (classifier, column, label).

    Every label appears, with zero customers if empty; customers without a
    label (e.g. no RFM segment for prospects) are counted under ``(none)``.
    Revenue is ``monetary``; shares are of the total over all customers, so
    each column's shares add up to 1.
    """
    total_n = classified.height
    has_rev = "monetary" in classified.columns
    # Revenue is summed as exact integer units (monetary holds sums of such units), so class revenues
    # do not depend on summation order and add up to the total exactly. Int128: an Int64 sum of units
    # wraps past 9.2e14 of revenue.
    units = to_units(pl.col("monetary")) if has_rev else pl.lit(0, pl.Int128)
    label_cols = [o.column for sel in selections for o in sel.outputs if o.labels is not None]
    base = classified.select(*[pl.col(c).to_physical() for c in dict.fromkeys(label_cols)], units.alias("_u"))
    total_units = base["_u"].sum() or 0
    counts = {}
    for column in dict.fromkeys(label_cols):
        grouped = base.group_by(column).agg(pl.len().alias("customers"), pl.col("_u").sum().alias("_u"))
        counts[column] = {key: (n, u) for key, n, u in grouped.iter_rows()}
    return summary_from_counts(counts, classified.schema, selections, total_n, total_units)


def summary_from_counts(counts: Mapping[str, Mapping[Any, tuple[int, int]]], schema: Mapping[str, pl.DataType],
                        selections: Sequence[Selection], total_n: int, total_units: int) -> pl.DataFrame:
    """:func:`summarize`'s table from each label column's customers and revenue units by key (``counts[column]``:
    an Enum column's code, 0, 1 ... in label order, or a text column's label, or None for no label -> (customers,
    units)), the table's ``schema``, its number of customers and its revenue units in all.

    A run with snapshots counts every label column of a snapshot in one grouping and reads this table from it."""
    frames = []
    for sel in selections:
        for o in sel.outputs:
            if o.labels is None:
                continue
            # An Enum column is grouped by its codes (0, 1, ... in label order), a text one by its labels.
            dtype = schema[o.column]
            enum = isinstance(dtype, pl.Enum)
            labels = dtype.categories.to_list() if enum else list(o.labels)
            by_key = dict(counts[o.column])
            none_n, none_u = by_key.pop(None, (0, 0))
            rows = [(label, *by_key.get(i if enum else label, (0, 0))) for i, label in enumerate(labels)]
            if none_n:
                rows.append(("(none)", none_n, none_u))
            frames.append(pl.DataFrame(
                {
                    "classifier": [sel.classifier.name] * len(rows),
                    "column": [o.column] * len(rows),
                    "label": [r[0] for r in rows],
                    "customers": [r[1] for r in rows],
                    "customer_share": [r[1] / max(total_n, 1) for r in rows],
                    "revenue": [_amount(r[2]) for r in rows],
                    "revenue_share": [(r[2] / total_units) if total_units else None for r in rows],
                },
                schema=SUMMARY_SCHEMA,
            ))
    if not frames:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    return pl.concat(frames)


SUMMARY_SCHEMA = {"classifier": pl.String, "column": pl.String, "label": pl.String, "customers": pl.Int64,
                  "customer_share": pl.Float64, "revenue": pl.Float64, "revenue_share": pl.Float64}


def _amount(units: int | None) -> float:
    """Exact integer units to the float nearest the decimal amount (as :func:`features.to_amount`)."""
    return float(Decimal(int(units or 0)) / AMOUNT_SCALE)
