"""Several as_of dates from one scan: snapshots, their migration and the KPIs between them.

A *snapshot* is the customer table as of one date, exactly what a run with that
``as_of`` computes. :func:`run_snapshots` computes every snapshot's table from
**one** scan of the transactions (docs/decisions/0013-snapshots-in-one-scan.md),
classifies each with the same classifiers, and derives from them

* the migration between consecutive snapshots of every label column
  (:mod:`engine.migration`), and
* the KPIs per period, the cohort table and the historical value per customer
  by class (:mod:`engine.kpi`).

The one scan
------------
Every snapshot date (and every lookback window's start, and the start of the
period before the first snapshot) is a *boundary*. Each usable line is tagged
with the interval between two boundaries it falls in (its *bucket*), and the
lines are aggregated once by (customer, bucket), with the same aggregations the
single-date pass uses (:data:`engine.feature_table.FEATURES`): a sum, a count,
a minimum or a maximum over a snapshot's lines is the sum, minimum or maximum
of its buckets'. The distinct count of orders is not additive (an order may
have lines in two buckets): an order counts in a snapshot from the first bucket
it has a purchase line in, found from run starts on input written order by
order, else from each bucket's distinct orders checked against the customer's
(a customer with an order in two buckets counted again), and with windows from
distinct (customer, order, bucket) triples. Plugin features (arbitrary aggregations) are computed per
snapshot over the same cached rows, so they stay exact too; they are the only
per-snapshot work over the lines. On integer customer ids and input in date
order the (customer, bucket) rows come from the dense pass's arrays, one bucket
at a time, instead of a ``group_by`` (:class:`_DenseBuckets`).

Lookback windows
----------------
``windows={"<classifier>": "12 months"}`` classifies that classifier, in each
snapshot, on features computed from the lines of the window before ``as_of``
only (``[as_of - window, as_of)``), e.g. a ranking by the last year's revenue.
Every customer of the snapshot is still classified: one without a line in the
window has the features of a customer without transactions (frequency 0,
monetary 0, no dates), as a prospect from a customer table has.

Example
-------
>>> import engine
>>> from engine.sample import SAMPLE_MAPPING
>>> snaps = run_snapshots(engine.sample_path(), every="quarter", periods=3, end="2011-12-01",
...                       mapping=SAMPLE_MAPPING, classifiers=["abc"])
>>> [str(d) for d in snaps.as_of], [t.height for t in snaps.customers]
(['2011-06-01', '2011-09-01', '2011-12-01'], [157, 199, 249])
>>> snaps.kpis.select("as_of", "active", "new", "retained", "churned").rows()[-1]
(datetime.date(2011, 12, 1), 152, 51, 79, 41)
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from . import features
from .classifier import Feature
from .data import AMOUNT_SCALE, Transactions, as_date, read_customers, read_transactions
from .errors import DataError, ParamError, option
from .feature_table import FEATURES, Agg
from .features import (
    _DOUBT,
    _INT64_SAFE,
    BUILTIN_FEATURES,
    NET_REVENUE,
    PROBE_ROWS,
    FeatureResult,
    LoadReport,
    _amounts,
    _derived,
    _looks_ordered,
    _order_flags,
    _ordered_path_possible,
    _scan,
    complete_features,
    plugin_table_queries,
    read_report,
)
from .kpi import (COHORT_DEFINITIONS, KPI_DEFINITIONS, VALUE_DEFINITIONS, VALUE_SCHEMA, cohort_table, kpi_table,
                  period_stats, values_from_combos)
from .migration import cell_side, flows_table, label_combos, label_outputs, migration_table, pair_cells, with_previous
from .registry import Registry, get_registry
from .run import Selection, apply_classifiers, plugin_features_for, select, split_params, summary_from_counts

__all__ = ["Step", "SnapshotSpec", "Snapshots", "SnapshotFeatures", "parse_step", "snapshot_dates",
           "snapshot_spec", "compute_snapshot_features", "run_snapshots", "EVERY"]

#: How each snapshot key is named from Python (the keyword); the command line and playbooks name them
#: through :data:`engine.errors.CLI_WORDS` / ``PLAYBOOK_WORDS`` (``--snapshots``, ``snapshots.as_of`` ...).
_PYTHON_KEYS = {"snapshots_as_of": "as_of", "every": "every", "periods": "periods", "end": "end", "window": "windows",
                "cohort": "cohort"}


def key(name: str) -> str:
    """The caller's name for a snapshot key (``snapshots_as_of``, ``every``, ``periods``, ``end``, ``window``,
    ``cohort``): the keyword from Python, ``--snapshots`` on the command line, ``snapshots.as_of`` in a playbook."""
    word = option(name)
    return _PYTHON_KEYS.get(name, name) if word == name else word


#: Named steps of ``every``.
EVERY = {"day": (0, 1), "week": (0, 7), "month": (1, 0), "quarter": (3, 0), "year": (12, 0)}
_UNITS = {"day": (0, 1), "week": (0, 7), "month": (1, 0), "quarter": (3, 0), "year": (12, 0)}


@dataclass(frozen=True)
class Step:
    """A calendar step: ``months`` then ``days`` (``12 months``, ``90 days``, ``2 weeks``)."""

    months: int = 0
    days: int = 0
    text: str = ""

    def back(self, date: dt.date, times: int = 1) -> dt.date:
        """``date`` moved back ``times`` steps (months keep the day, or the month's last day)."""
        months = self.months * times
        if months:
            y, m = divmod(date.year * 12 + date.month - 1 - months, 12)
            if y < 1:
                raise DataError(f"{self.text}: reaches back before the year 1")
            date = date.replace(year=y, month=m + 1, day=min(date.day, calendar.monthrange(y, m + 1)[1]))
        return date - dt.timedelta(days=self.days * times)

    def __str__(self) -> str:
        return self.text


def parse_step(value: Any, where: str) -> Step:
    """``"quarter"``, ``"12 months"``, ``"90 days"``, ``"2 weeks"``, ``"1 year"`` or a number of days.

    >>> parse_step("12 months", "window").months, parse_step("quarter", "every").months
    (12, 3)
    >>> parse_step(30, "window").days
    30
    >>> parse_step("fortnight", "every")
    Traceback (most recent call last):
    ...
    engine.errors.ParamError: every: 'fortnight' is not a period: give day, week, month, quarter or year, or 'N days' (weeks, months, quarters, years)
    """
    text = str(value).strip().lower()
    if isinstance(value, int) and not isinstance(value, bool):
        n, unit = value, "day"
    elif text in EVERY:
        n, unit = 1, text
    else:
        m = re.fullmatch(r"(\d+)\s*(day|week|month|quarter|year)s?", text)
        if not m:
            raise ParamError(f"{where}: {value!r} is not a period: give day, week, month, quarter or year, or "
                             f"'N days' (weeks, months, quarters, years)", value=value)
        n, unit = int(m.group(1)), m.group(2)
    if n < 1 or n > 100_000:
        raise ParamError(f"{where}: {value!r} must be at least one {unit} (and at most 100,000)", value=value)
    months, days = _UNITS[unit]
    return Step(months * n, days * n, f"{n} {unit}{'s' if n != 1 else ''}")


def snapshot_dates(every: Step, periods: int, end: dt.date) -> list[dt.date]:
    """``periods`` dates ending at ``end``, one ``every`` apart, oldest first.

    >>> [str(d) for d in snapshot_dates(parse_step("quarter", "every"), 3, dt.date(2011, 12, 31))]
    ['2011-06-30', '2011-09-30', '2011-12-31']
    """
    return [every.back(end, periods - 1 - i) for i in range(periods)]


@dataclass(frozen=True)
class SnapshotSpec:
    """Which snapshots to compute.

    ``as_of``: the snapshot dates, oldest first (each exclusive, as a run's
    ``as_of``); ``every``: their step when they were given as a period and a
    count; ``windows``: classifier name -> lookback :class:`Step`;
    ``cohort``: ``month`` or ``quarter`` (the grain of the cohort table).
    """

    as_of: tuple[dt.date, ...]
    every: Step | None = None
    windows: Mapping[str, Step] = field(default_factory=dict)
    cohort: str = "month"

    @property
    def previous(self) -> dt.date | None:
        """The start of the period before the first snapshot (the first period's previous period)."""
        if self.every is not None:
            return self.every.back(self.as_of[0])
        if len(self.as_of) >= 2:
            return self.as_of[0] - (self.as_of[1] - self.as_of[0])
        return None

    def window_start(self, name: str, as_of: dt.date) -> dt.date | None:
        step = self.windows.get(name)
        return step.back(as_of) if step is not None else None


COHORT_GRAINS = ("month", "quarter")


def snapshot_spec(
    *,
    as_of: Iterable[Any] | None = None,
    every: Any = None,
    periods: int | None = None,
    end: Any = None,
    windows: Mapping[str, Any] | None = None,
    cohort: str | None = None,
    default_end: dt.date | None = None,
) -> SnapshotSpec | None:
    """Check and build a :class:`SnapshotSpec` from explicit dates or ``every`` / ``periods`` / ``end``.

    ``end`` defaults to ``default_end``. Returns None when an end is still
    needed (``every`` without one): :func:`run_snapshots` then takes the day
    after the last transaction. Errors name the keys as the caller gives them
    (see :func:`key`).
    """
    if as_of is not None and (every is not None or periods is not None or end is not None):
        raise ParamError(f"{key('snapshots_as_of')}: give either snapshot dates or {key('every')} with "
                         f"{key('periods')}, not both", value=None)
    step = parse_step(every, key("every")) if every is not None else None
    if as_of is not None:
        if isinstance(as_of, (str, dt.date)):
            as_of = [as_of]
        dates = [as_date(value, where=key("snapshots_as_of")) for value in as_of]
        if not dates:
            raise ParamError(f"{key('snapshots_as_of')}: give at least one date", value=[])
        if len(set(dates)) != len(dates):
            dup = next(d for d in dates if dates.count(d) > 1)
            raise ParamError(f"{key('snapshots_as_of')}: {dup} is given twice", value=str(dup))
        dates.sort()
    else:
        if step is None:
            raise ParamError(f"{key('snapshots_as_of')}: give snapshot dates, or {key('every')} (a period) with "
                             f"{key('periods')}", value=None)
        if periods is None:
            raise ParamError(f"{key('every')} {step} needs {key('periods')} (how many snapshots)", value=None)
        if not isinstance(periods, int) or isinstance(periods, bool) or not 1 <= periods <= 1000:
            raise ParamError(f"{key('periods')}: {periods!r} must be a whole number from 1 to 1,000", value=periods)
        end_date = as_date(end, where=key("end")) if end is not None else default_end
        if end_date is None:
            return None
        dates = snapshot_dates(step, periods, end_date)
    if cohort is not None and cohort not in COHORT_GRAINS:
        raise ParamError(f"{key('cohort')}: {cohort!r} is not one of {', '.join(COHORT_GRAINS)}", value=cohort)
    steps = {str(k): parse_step(v, f"{key('window')} {k}") for k, v in (windows or {}).items()}
    return SnapshotSpec(tuple(dates), step, steps, cohort or "month")


# --------------------------------------------------------------------------------------------- the scan
@dataclass
class SnapshotFeatures:
    """What the one scan gives: each snapshot's customer table (built on demand), and the per-period activity.

    :meth:`table` ``(i)`` is the customer table as of ``as_of[i]`` (a
    :class:`~engine.features.FeatureResult`, exactly a single run's);
    :meth:`window_table` ``(name, i, snapshot)`` the one a windowed classifier
    ``name`` reads in snapshot ``i``. Tables are built when asked for, from the
    aggregated buckets (no transaction is read again), so a caller can keep
    only what it needs of each. ``activity`` has one row per customer and
    period with a line in it: ``customer_id``, ``period`` (the index of the
    snapshot that ends it: period ``i`` is ``[as_of[i-1], as_of[i])``, period 0
    starts at :attr:`SnapshotSpec.previous`), ``purchases`` (purchase lines) and
    ``revenue_units`` (net amount in units of 1/10,000: Int64, or Int128 where the scan summed wide because
    a sum of the amounts might leave Int64). ``firsts`` has each customer of the last snapshot with a usable line
    and their ``first_order`` (what the cohorts read), without building the last table.

    The last table is built when first asked for (:meth:`table`, :attr:`report`), not with the others: held from
    the scan on, it added its size (0.07 GiB at 1M customers) to the peak while the earlier snapshots are
    classified.
    """

    spec: SnapshotSpec
    activity: pl.DataFrame
    scan_report: LoadReport
    build: Any = field(repr=False, default=None)
    build_window: Any = field(repr=False, default=None)
    last: FeatureResult | None = field(repr=False, default=None)
    firsts: pl.DataFrame | None = field(repr=False, default=None)

    @property
    def as_of(self) -> tuple[dt.date, ...]:
        return self.spec.as_of

    @property
    def report(self) -> LoadReport:
        """The scan's report, with the last snapshot's customers (its table built for them if not yet)."""
        self.table(-1)
        return self.scan_report

    def table(self, i: int) -> FeatureResult:
        """The customer table as of ``as_of[i]`` (the earlier ones: not after :meth:`built`). The last one is kept
        once built, and its customers go into :attr:`report`."""
        i = range(len(self.as_of))[i]
        last = i == len(self.as_of) - 1
        if last and self.last is not None:
            return self.last
        if self.build is None:
            raise RuntimeError("the snapshot tables were all built and their running totals let go")
        result = self.build(i)
        if last:
            self.last = result
            _last_report(self.scan_report, result.report)
        return result

    def built(self) -> None:
        """No earlier table will be asked for again: the last table is built (if not yet) and the running totals
        the tables are built from are let go (the last table and the window tables stay)."""
        self.table(-1)
        self.build = None

    def window_table(self, name: str, i: int, snapshot: pl.DataFrame) -> pl.DataFrame:
        """The table windowed classifier ``name`` reads in snapshot ``i`` (``snapshot``: that snapshot's table)."""
        return self.build_window(name, i, snapshot)

    @property
    def tables(self) -> list[FeatureResult]:
        """Every snapshot's table (all built at once: memory for all of them)."""
        return [self.table(i) for i in range(len(self.as_of))]


_AGGREGATED = [f for f in FEATURES if isinstance(f.compute, Agg)]
_COMBINE = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}
_ROWS = {"all": None, "purchases": pl.col("amount_units") > 0, "returns": pl.col("amount_units") < 0}
#: The bucket column with each bucket's net revenue in units: the sum of every line's amount.
_NET_UNITS = next((f"_{f.name}_units" for f in _AGGREGATED if (f.compute.op, f.compute.column, f.compute.rows,
                   f.compute.negate) == ("sum", "amount", "all", False)), "_net_units")


def _bucket_aggregations(wide: bool) -> list[pl.Expr]:
    """Per (customer, bucket): each additive built-in aggregation, named as the single-date pass names it."""
    u, date = pl.col("amount_units"), pl.col("order_date")
    source = {"amount": u.cast(pl.Int128) if wide else u, "order_date": date}
    out = []
    for f in _AGGREGATED:
        a: Agg = f.compute
        if a.op == "n_unique":
            continue
        cond = _ROWS[a.rows]
        if a.op == "count":
            out.append((pl.len() if cond is None else cond.sum()).cast(pl.Int64).alias(f.name))
            continue
        value = source[a.column] if cond is None else pl.when(cond).then(source[a.column])
        name = f"_{f.name}_units" if a.op == "sum" else f.name
        out.append(getattr(value, a.op)().alias(name))
    # for the KPIs: purchase lines and net revenue (units) in the bucket (the net revenue feature's sum, when
    # the table has one: not summed twice)
    out.append((u > 0).sum().cast(pl.Int64).alias("_purchases"))
    if _NET_UNITS == "_net_units":
        out.append(source["amount"].sum().alias("_net_units"))
    return out


def _combine(buckets: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
    """The aggregated features over buckets ``lo..hi`` (inclusive), one row per customer with a line there."""
    part = buckets.filter(pl.col("_bucket").is_between(lo, hi))
    aggs = []
    for f in _AGGREGATED:
        a: Agg = f.compute
        if a.op == "n_unique":
            continue
        name = f"_{f.name}_units" if a.op == "sum" else f.name
        expr = getattr(pl.col(name), _COMBINE[a.op])()
        aggs.append((expr.cast(pl.Int64) if a.op == "count" else expr).alias(name))
    return part.group_by("customer_id").agg(aggs)


def _distinct_orders(orders: pl.DataFrame, first: pl.DataFrame, lo: int, hi: int, cumulative: bool) -> pl.DataFrame:
    """Per customer, the number of distinct keys of each n_unique feature with a line in buckets ``lo..hi``."""
    out = None
    for f in _AGGREGATED:
        if f.compute.op != "n_unique":
            continue
        if cumulative:  # a key counts from the first bucket it has a line in
            counts = (first.filter(pl.col(f"_first_{f.name}") <= hi).group_by("customer_id")
                      .agg(pl.len().cast(pl.Int64).alias(f.name)))
        else:
            keys = orders.filter(pl.col(f"_in_{f.name}") & pl.col("_bucket").is_between(lo, hi))
            counts = (keys.select("customer_id", "_key").unique().group_by("customer_id")
                      .agg(pl.len().cast(pl.Int64).alias(f.name)))
        out = counts if out is None else out.join(counts, on="customer_id", how="full", coalesce=True)
    return out


def _bucketed(tx: Transactions, spec: SnapshotSpec) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """The one scan's ``rows`` (:func:`engine.features._scan`) with ``_bucket`` (bucket j holds the lines in
    ``[boundaries[j-1], boundaries[j])``, bucket 0 those before the first boundary), the rows themselves,
    and the scan's exceptions and totals queries."""
    dates = spec.as_of
    starts = [spec.window_start(name, d) for name in spec.windows for d in dates]
    boundaries = sorted({*dates, *starts, *([spec.previous] if spec.previous else [])})
    rows, exceptions_q, totals_q = _scan(tx, dates[-1])
    date = pl.col("order_date")
    bucket = pl.sum_horizontal([(date >= pl.lit(b)).cast(pl.Int32) for b in boundaries]).alias("_bucket")
    return rows.with_columns(bucket), rows, exceptions_q, totals_q


def snapshot_queries(tx: Transactions, spec: SnapshotSpec, plugin_features: Mapping[str, Feature],
                     window_features: Mapping[str, Mapping[str, Feature]], wide: bool = False,
                     ordered: bool = False, per_bucket: bool = False, packed: bool = False):
    """The queries of the one scan of ``tx`` for ``spec``: ``(queries, extra)``.

    With ``ordered`` (input in the file's order, not split by customer), the orders each bucket adds are
    counted from run starts (:func:`_ordered_runs`): ``buckets`` gets ``_runs`` and ``_null_key`` instead of
    ``_new_<name>``, for :func:`_orders_from_runs`.

    With ``per_bucket`` (hashing, all history, the file read again here if need be: not on a split of the
    rows), ``_runs`` is each bucket's count of distinct order keys instead, and ``orders`` one row: the count
    of distinct (customer, order) codes over all history (``_pairs``, :func:`_across_buckets`): no (customer,
    order) grouping, and no grouping by customer unless an order has lines in two buckets.

    With ``packed`` and integer customer ids, the rows are grouped by one integer made of the customer id and
    the bucket (:func:`_pack_step`), taken apart again after the ``group_by``; ``span`` then also has the
    smallest and largest id (``_id_min``, ``_id_max``), for :func:`compute_snapshot_features` to check that
    none was too large for it (:func:`_pack_fits`).

    ``queries`` are ``buckets``, ``exceptions``, ``totals``, ``span``, then (with windows) ``orders``, then
    the plugin features' queries, described by ``extra`` (kind, snapshot index, window name, names).
    Every query but ``totals`` and ``span`` has rows of one customer each, so it may run on any split of
    the transactions by customer (the Spark engine runs it per partition: :func:`combine_parts`).
    """
    dates = spec.as_of
    starts = {(name, i): spec.window_start(name, d) for name in spec.windows for i, d in enumerate(dates)}
    tagged, rows, exceptions_q, totals_q = _bucketed(tx, spec)
    date = pl.col("order_date")
    key_features = [f for f in _AGGREGATED if f.compute.op == "n_unique"]
    aggregations = _bucket_aggregations(wide)
    if ordered and key_features:
        tagged = _ordered_runs(tagged, tx.frame.collect_schema())
        aggregations += [pl.col("_run").sum().alias("_runs"),
                         ((pl.col("amount_units") > 0) & pl.col("order_key").is_null()).any().alias("_null_key")]
    orders_q = per_customer_q = None
    if per_bucket and key_features and not ordered and not spec.windows:
        # an order counts in the first bucket it has a purchase line in; when no order of a customer has lines
        # in two buckets, that is the bucket's own distinct count, which the customer's count over all history
        # (the sum of them then) tells (:func:`_across_buckets`)
        key, counted = pl.col("order_key"), (pl.col("amount_units") > 0) & pl.col("order_key").is_not_null()
        keys = pl.when(counted).then(key)
        aggregations += [(keys.n_unique() - (keys.null_count() > 0).cast(pl.UInt32)).cast(pl.Int64).alias("_runs"),
                         ((pl.col("amount_units") > 0) & key.is_null()).any().alias("_null_key")]
        # the distinct (customer, order) pairs over all history, counted at once (one set, no grouping): when the
        # buckets' counts add up to it, no order is in two buckets (:func:`_across_buckets`)
        per_customer_q = rows.filter(counted).select(_pair_codes().n_unique().cast(pl.Int64).alias("_pairs"))
    id_type = tx.frame.collect_schema()["customer_id"]
    step = _pack_step(id_type, spec) if packed else None
    if step is None:
        buckets_q = tagged.group_by("customer_id", "_bucket").agg(aggregations)
    else:  # one Int64 key groups faster than two columns: id * step + bucket, in order as (id, bucket) is
        packed_key = (pl.col("customer_id").cast(pl.Int64) * step + pl.col("_bucket")).alias("_packed")
        buckets_q = (tagged.group_by(packed_key).agg(aggregations).sort("_packed")
                     .select((pl.col("_packed") // step).cast(id_type).alias("customer_id"),
                             (pl.col("_packed") % step).cast(pl.Int32).alias("_bucket"), pl.exclude("_packed")))
    if key_features and not ordered and per_customer_q is None:
        conds = {f.name: _ROWS[f.compute.rows] for f in key_features}
        any_cond = pl.any_horizontal([c if c is not None else pl.lit(True) for c in conds.values()])
        if spec.windows:  # a window needs to know every bucket an order has a line in
            orders_q = (tagged.filter(any_cond).group_by("customer_id", pl.col("order_key").alias("_key"), "_bucket")
                        .agg([(c if c is not None else pl.lit(True)).any().alias(f"_in_{n}")
                              for n, c in conds.items()]))
        else:  # all history: an order counts from the first bucket it has a line in
            orders_q = (tagged.filter(any_cond).group_by("customer_id", pl.col("order_key").alias("_key"))
                        .agg([(pl.col("_bucket").filter(c) if c is not None else pl.col("_bucket")).min()
                              .alias(f"_first_{n}") for n, c in conds.items()]))
    if orders_q is not None and not spec.windows:
        # the orders each bucket adds (an order counts from its first bucket), joined in the same plan: the
        # orders themselves are not needed afterwards
        for f in key_features:
            new_q = (orders_q.filter(pl.col(f"_first_{f.name}").is_not_null())
                     .group_by("customer_id", pl.col(f"_first_{f.name}").alias("_bucket"))
                     .agg(pl.len().cast(pl.Int64).alias(f"_new_{f.name}")))
            buckets_q = (buckets_q.join(new_q, on=["customer_id", "_bucket"], how="left")
                         .with_columns(pl.col(f"_new_{f.name}").fill_null(0)))
        orders_q = None
    if per_customer_q is not None:
        orders_q = per_customer_q
    span = [date.min().alias("first"), date.max().alias("last")]
    if step is None:
        buckets_q = buckets_q.sort("customer_id", "_bucket")
    else:
        span += [pl.col("customer_id").cast(pl.Int64).min().alias("_id_min"),
                 pl.col("customer_id").cast(pl.Int64).max().alias("_id_max")]
    span_q = rows.select(span)
    # Plugin features are arbitrary aggregations: computed per table over that table's lines.
    extra: list[tuple[str, int, str | None, list[str]]] = []  # (kind, i, window name, names)
    extra_q: list[pl.LazyFrame] = []
    per_table = [(None, i, d, None, plugin_features) for i, d in enumerate(dates)]
    per_table += [(name, i, d, starts[(name, i)], window_features.get(name, plugin_features))
                  for name in spec.windows for i, d in enumerate(dates)]
    for name, i, d, start, feats in per_table:
        lines = rows.filter(date < pl.lit(d))
        if start is not None:
            lines = lines.filter(date >= pl.lit(start))
        aggs = [f.agg.alias(n) for n, f in feats.items() if f.agg is not None]
        if aggs:
            extra.append(("agg", i, name, []))
            extra_q.append(lines.group_by("customer_id").agg(aggs))
        for query, names in plugin_table_queries(lines, feats):
            extra.append(("table", i, name, names))
            extra_q.append(query)
    queries = [buckets_q, exceptions_q, totals_q, span_q, *([orders_q] if orders_q is not None else []), *extra_q]
    return queries, extra


#: Integer customer ids whose values all fit in an Int64: the ones a packed key is made of.
_PACKABLE = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def _pack_step(id_type: pl.DataType, spec: SnapshotSpec) -> int | None:
    """The power of two a packed (customer, bucket) key multiplies the customer id by (more than the number of
    buckets), or None when the ids are not integers."""
    if not isinstance(id_type, _PACKABLE):
        return None
    buckets = len(set(spec.as_of) | {spec.window_start(n, d) for n in spec.windows for d in spec.as_of}) + 2
    return 1 << buckets.bit_length()


def _pack_fits(span: pl.DataFrame, step: int) -> bool:
    """Whether every customer id of ``span`` (its ``_id_min`` and ``_id_max``) times ``step``, plus a bucket,
    fits in an Int64: else the packed keys may have wrapped."""
    low, high = span["_id_min"].item(), span["_id_max"].item()
    limit = (2**63 - 1) // step - 1
    return low is None or (-limit <= low and high <= limit)


def combine_parts(parts: Sequence[Sequence[pl.DataFrame]], empty: Sequence[pl.DataFrame]) -> list[pl.DataFrame]:
    """The queries' results over the whole data from their results over splits of it by customer.

    ``parts[k]`` holds query ``k``'s result on each split (see :func:`snapshot_queries`), ``empty[k]`` its
    result on no rows (its schema). A customer's rows are all in one split, so the per-customer results are
    put together; ``totals`` are added up (flags: any) and ``span`` is the earliest first and the latest last.
    """
    out = []
    for k, (frames, none) in enumerate(zip(parts, empty)):
        frames = [f for f in frames if f.height] or [none]
        if k == 2:  # totals: one row
            both = pl.concat(frames, how="vertical_relaxed")
            out.append(both.select([pl.col(c).any() if both.schema[c] == pl.Boolean else pl.col(c).sum()
                                    for c in both.columns]).cast(none.schema))
        elif k == 3:  # span: one row
            both = pl.concat(frames, how="vertical_relaxed")
            out.append(both.select(pl.col("first").min(), pl.col("last").max()).cast(none.schema))
        else:
            both = pl.concat(frames, how="vertical_relaxed").cast(none.schema)
            out.append(both.sort("customer_id", "_bucket") if k == 0 else both)
    return out


def compute_snapshot_features(
    tx: Transactions,
    spec: SnapshotSpec,
    *,
    customers: pl.DataFrame | None = None,
    plugin_features: Mapping[str, Feature] | None = None,
    window_features: Mapping[str, Mapping[str, Feature]] | None = None,
    streaming: bool = True,
    feature_owners: Mapping[str, str] | None = None,
    wide: bool = False,
    collect: Any = None,
    orders: str = "auto",
    pack: bool = True,
    dense: bool = True,
) -> SnapshotFeatures:
    """Every snapshot's customer table (and each windowed classifier's) from one scan of ``tx``.

    ``plugin_features`` are the plugin features of the snapshot tables,
    ``window_features`` those of each windowed classifier's tables (by
    classifier name). Each table equals what :func:`engine.features.compute_features`
    gives for that ``as_of`` (for a window: for the lines of the window, with
    every customer of the snapshot); ``tests/engine/test_snapshots.py`` checks
    it on the bundled sample and on the full UCI file.

    ``collect(build)``, when given, runs the queries elsewhere (the Spark engine, see
    :meth:`engine.spark.SparkSource.collect`): ``build(tx)`` gives :func:`snapshot_queries` for a
    :class:`Transactions` over the rows of some customers; it returns, by query position, the results on
    each such split of the rows (:func:`combine_parts` puts them together). ``tx`` then only names the
    source (its frame has the canonical columns and no row).

    ``orders`` says how orders are counted, as for :func:`engine.features.compute_features`: ``"auto"``
    from run starts when the first rows are written order by order, ``"boundaries"`` tries that whatever
    they look like, ``"hashing"`` hashes. Windows and ``collect`` (rows split by customer: the file's
    order is gone) always hash. The report says which way ran. ``pack=False`` groups the buckets by
    (customer, bucket) even where integer ids could be packed into one key (see :func:`snapshot_queries`).

    Raises :class:`~engine.errors.DataError` naming the key and value for a
    snapshot outside the data's date range, a period without a buyer and a
    window reaching back before the first transaction.
    """
    import functools

    plugin_features = dict(plugin_features or {})
    window_features = {k: dict(v) for k, v in (window_features or {}).items()}
    dates = spec.as_of
    last = dates[-1]
    starts = {(name, i): spec.window_start(name, d) for name in spec.windows for i, d in enumerate(dates)}
    boundaries = sorted({*dates, *starts.values(), *([spec.previous] if spec.previous else [])})
    index = {d: j for j, d in enumerate(boundaries)}
    key_features = [f for f in _AGGREGATED if f.compute.op == "n_unique"]
    if orders not in ("auto", "boundaries", "hashing"):
        raise ValueError(f"orders must be auto, boundaries or hashing, not {orders!r}")
    why_not = None
    if key_features:
        why_not = ("hashing asked for" if orders == "hashing"
                   else "the Spark pass splits the rows by customer" if collect is not None
                   else "a lookback window counts an order in every window it has a line in" if spec.windows
                   else _ordered_path_possible(tx))
        if why_not is None and orders == "auto" and not _looks_ordered(tx, last):
            why_not = f"the first {PROBE_ROWS:,} rows are not written order by order"
    ordered = bool(key_features) and why_not is None
    # hashing, all history, the file at hand: each bucket's distinct orders, checked against the customer's
    per_bucket = (bool(key_features) and not ordered and collect is None and not spec.windows
                  and all((f.compute.column, f.compute.rows) == ("order_key", "purchases") for f in key_features))

    # integer ids, all history, input in date order: the buckets from the dense pass's arrays (one bucket at a
    # time), not a group_by; None when it does not apply or gives up (the input not in date order ...)
    dense_result = None
    positions = False
    if (dense and features.DENSE_PASS and collect is None and key_features and not spec.windows
            and (ordered or orders == "auto") and not any(f.agg is not None or f.table is not None
                                                  for f in plugin_features.values())
            and features._dense_possible(tx, plugin_features, streaming=streaming, wide=wide)):
        try:
            dense_result = _dense_buckets(tx, boundaries, last, positions=not ordered)
        except pl.exceptions.PolarsError as exc:
            from .data import explain_read_error

            raise DataError(f"{tx.describe()}: {explain_read_error(tx.path, tx.fmt, exc, tx.delimiter)}") from None
    packed = pack and collect is None and dense_result is None
    queries, extra = snapshot_queries(tx, spec, plugin_features, window_features, wide, ordered=ordered,
                                      per_bucket=per_bucket, packed=packed)
    if dense_result is not None:
        queries, extra = [], []
        positions, per_bucket = not ordered, False
    has_orders = len(queries) - len(extra) == 5
    try:
        if dense_result is not None:
            collected = list(dense_result)
        elif collect is None:
            collected = pl.collect_all(queries, engine="streaming" if streaming else "auto")
        else:  # ``tx`` has no row: the queries' results on none (a plugin feature reading a missing column
            # fails here, before any work), then on the partitions, put together
            empty = pl.collect_all(queries)
            parts = collect(functools.partial(snapshot_queries, spec=spec, plugin_features=plugin_features,
                                              window_features=window_features, wide=wide))
            collected = combine_parts([parts.get(k, []) for k in range(len(queries))], empty)
    except pl.exceptions.ColumnNotFoundError as exc:
        from .features import _feature_error

        raise _feature_error({**plugin_features, **{k: v for f in window_features.values() for k, v in f.items()}},
                             feature_owners or {}, exc) from None
    except pl.exceptions.PolarsError as exc:
        from .data import explain_read_error

        raise DataError(f"{tx.describe()}: {explain_read_error(tx.path, tx.fmt, exc, tx.delimiter)}") from None
    buckets, exceptions, totals, span = collected[:4]
    order_rows = collected[4] if has_orders else None
    extra_frames = collected[4 + has_orders:]
    collected = dense_result = None  # the scan's results held by the names above only (let go with them)

    total = totals if isinstance(totals, dict) else totals.row(0, named=True)
    for flag in tx.checks:
        if total[flag]:
            raise tx.locate(flag)
    step = _pack_step(tx.frame.collect_schema()["customer_id"], spec) if packed else None
    if step is not None and not _pack_fits(span, step):  # ids too large for a packed key: group by both columns
        del buckets, order_rows
        return compute_snapshot_features(tx, spec, customers=customers, plugin_features=plugin_features,
                                         window_features=window_features, streaming=streaming,
                                         feature_owners=feature_owners, wide=wide, collect=collect, orders=orders,
                                         pack=False, dense=dense)
    if not wide and (total["_gross_units"] or 0) >= _INT64_SAFE:  # an Int64 sum may have wrapped: sum again
        del buckets, order_rows
        return compute_snapshot_features(tx, spec, customers=customers, plugin_features=plugin_features,
                                         window_features=window_features, streaming=streaming,
                                         feature_owners=feature_owners, wide=True, collect=collect, orders=orders,
                                         pack=pack, dense=dense)
    tally_error = tx.tally_error({flag: int(bool(total[flag])) for flag in tx.tallies})
    if tally_error is not None:
        raise tally_error

    ids = buckets.filter((pl.col("customer_id") != pl.col("customer_id").shift(-1)).fill_null(True)
                         ).select("customer_id")  # sorted: each customer's last row
    report, no_id, known, unusable = read_report(tx, exceptions, total, ids, last)
    first_day, last_day = span.row(0)[:2]
    later = [d for d in (last_day, known["last_day"].max() if known.height else None, no_id["last_day"].max())
             if d is not None]
    _check_range(spec, first_day, max(later) if later else None, tx.describe())

    first = None
    recounted = 0
    if ordered or positions:
        if total["rows"] >= _DOUBT:  # a customer's run starts could reach _DOUBT: count by hashing
            del buckets
            return compute_snapshot_features(tx, spec, customers=customers, plugin_features=plugin_features,
                                             window_features=window_features, streaming=streaming,
                                             feature_owners=feature_owners, wide=wide, orders="hashing", pack=pack,
                                             dense=dense)
        buckets, recounted = _orders_from_runs(buckets, key_features, _bucketed(tx, spec)[0], streaming)
    if per_bucket:
        doubtful = _across_buckets(buckets, order_rows, lambda: _orders_per_customer(tx, spec, streaming))
        buckets, _ = _orders_from_runs(buckets, key_features, _bucketed(tx, spec)[0], streaming, doubtful=doubtful)
        order_rows = None
    if order_rows is not None:  # with windows: the orders by bucket are kept for the windows' distinct counts
        first = order_rows.group_by("customer_id", "_key").agg(
            [pl.col("_bucket").filter(pl.col(f"_in_{f.name}")).min().alias(f"_first_{f.name}") for f in key_features])
        # the orders each bucket adds (an order counts from its first bucket): additive like the sums
        for f in key_features:
            new = (first.filter(pl.col(f"_first_{f.name}").is_not_null())
                   .group_by("customer_id", pl.col(f"_first_{f.name}").alias("_bucket"))
                   .agg(pl.len().cast(pl.Int64).alias(f"_new_{f.name}")))
            buckets = (buckets.join(new, on=["customer_id", "_bucket"], how="left", maintain_order="left")
                       .with_columns(pl.col(f"_new_{f.name}").fill_null(0)))
    # the amounts (exact units to floats, the costly part of a snapshot's table) once per (customer, bucket) row,
    # not once per snapshot that reads the row (every snapshot from its bucket to the customer's next one):
    # 2.0M conversions instead of 3.8M at 1M customers and eight quarters
    activity = _activity(buckets, boundaries, dates, spec.previous)
    if spec.windows:  # a window's tables read the buckets again
        cumulative = _cumulative_amounts(buckets, key_features)
    else:  # the buckets handed over column by column, each let go once its running totals are computed
        columns, buckets, order_rows, first = buckets.get_columns(), None, None, None
        cumulative = _cumulative_amounts(columns, key_features)
    # a table reads the units of the net revenue only (its report's exact total), the amounts of the others: the
    # other units let go (16 MB a summed feature at 2.0M bucket rows, held while the snapshots are built)
    cumulative = cumulative.drop(f"_{f.name}_units" for f in _AGGREGATED
                                 if f.compute.op == "sum" and f.name != NET_REVENUE)
    _give_back_freed_memory()

    def finish(grouped: pl.DataFrame, as_of: dt.date, amounts: bool = True) -> pl.DataFrame:
        grouped = grouped.with_columns(pl.col(f.name).fill_null(0) for f in key_features)
        if amounts:
            grouped = grouped.with_columns(_amounts())
        return grouped.with_columns(_derived(pl.lit(as_of)))

    def extras(name: str | None, i: int, grouped: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        tables = []
        for (kind, j, wname, _), frame in zip(extra, extra_frames):
            if j != i or wname != name:
                continue
            if kind == "agg":
                grouped = grouped.join(frame, on="customer_id", how="left")
            else:
                tables.append(frame)
        return grouped, tables

    owners = feature_owners or {}

    # the buckets are sorted by customer (the ids' own order), and a filter keeps that order but not the flag that
    # says so: flagged again, the table's sort by customer (complete_features) has nothing to do
    # (0.1-0.2 CPU-s at 1M customers and eight quarters)
    ids_in_order = isinstance(cumulative.schema["customer_id"], _ORDERED_IDS)

    def build(i: int) -> FeatureResult:
        d = dates[i]
        idx = index[d]
        rows = cumulative.select(_rows_at(idx))
        at = cumulative.drop("_bucket", "_next").filter(rows.to_series())  # only the columns the table keeps copied
        if ids_in_order:
            at = at.with_columns(pl.col("customer_id").set_sorted())
        grouped, tables = extras(None, i, finish(at, d, amounts=False))
        snap_report = LoadReport(source=report.source, notes=list(report.notes))
        snap_report.rows, snap_report.rows_used, snap_report.rejected = report.rows, report.rows_used, report.rejected
        return complete_features(grouped, None, unusable if i == len(dates) - 1 else unusable.clear(), as_of=d,
                                 customers=customers, plugin_features=plugin_features, report=snap_report,
                                 describe=tx.describe(), tables=tables, feature_owners=owners)

    def build_window(name: str, i: int, snap: pl.DataFrame) -> pl.DataFrame:
        d, start = dates[i], starts[(name, i)]
        lo, hi = index[start] + 1, index[d]
        grouped = _combine(buckets, lo, hi)
        if order_rows is not None:
            grouped = grouped.join(_distinct_orders(order_rows, first, lo, hi, False), on="customer_id", how="left")
        grouped, tables = extras(name, i, finish(grouped, d))
        attributes = [c for c in snap.columns if c not in BUILTIN_FEATURES and c not in plugin_features]
        win = complete_features(grouped, None, unusable.clear(), as_of=d, customers=snap.select(attributes),
                                plugin_features=window_features.get(name, plugin_features),
                                report=LoadReport(source=report.source), describe=tx.describe(), tables=tables,
                                feature_owners=owners)
        return win.customers

    if ordered:
        report.orders_counted, report.orders_recounted = "boundaries", recounted
        report.orders_check = ("input written order by order (checked on every purchase line)" if not recounted
                               else f"{recounted:,} customer(s) with orders out of place counted again by hashing")
    elif positions:
        report.orders_counted, report.orders_recounted = "positions", recounted
        report.orders_check = f"{why_not}; " + (
            "each order id held one customer (checked on every purchase line)" if not recounted
            else f"{recounted:,} customer(s) sharing an order id with another counted again by hashing")
    elif why_not is not None:
        report.orders_check = why_not
    _check_periods(spec, activity)
    # each customer's first purchase as of the last snapshot (its table's rows: every row up to the last bucket)
    last_rows = cumulative.select(_rows_at(index[last]))
    firsts = cumulative.select("customer_id", "first_order").filter(last_rows.to_series())
    if ids_in_order:
        firsts = firsts.with_columns(pl.col("customer_id").set_sorted())
    return SnapshotFeatures(spec=spec, activity=activity, scan_report=report, build=build, build_window=build_window,
                            firsts=firsts)


def _rows_at(idx: int) -> pl.Expr:
    """The running totals' rows a table as of boundary ``idx`` reads: each customer's last bucket up to it."""
    return (pl.col("_bucket") <= idx) & (pl.col("_next").is_null() | (pl.col("_next") > idx))


# ------------------------------------------------------------------------------------------ the dense scan
class _DenseBuckets:
    """The snapshot scan's buckets on the dense pass (:func:`engine.features._dense_pass` with ``buckets``): the
    arrays indexed by the customer id hold one bucket's lines at a time, the input being in date order (as a
    transaction log is written), so each (customer, bucket) row is what the ``group_by`` of
    :func:`snapshot_queries` gives, without hashing and with memory for one bucket's arrays.

    :meth:`split` cuts a batch's usable rows where their bucket changes, and gives up (yields ``None``) when a
    bucket comes after a later one. :meth:`flush` takes a bucket's rows out of the arrays: the customers with a
    usable line in it, the sums, counts and days of its lines, its purchase lines (``_purchases``), whether one
    has no order id (``_null_key``), and ``_runs``, the orders it adds plus :data:`engine.features._DOUBT` for a
    customer in doubt (for :func:`_orders_from_runs`): by run starts, an order counts in the bucket of its first
    run's first line, which is its first bucket, since the buckets never go back; by positions, an order counts
    in the bucket its id was first held in (the ``born`` marks), the bucket of its first counted line.
    """

    def __init__(self, boundaries: Sequence[dt.date], id_type: pl.DataType):
        epoch = dt.date(1970, 1, 1)
        self.days = [(b - epoch).days for b in boundaries]  # NumPy is imported while the scan starts (split)
        self.edges = None
        self.id_type = id_type
        self.current = 0  # the latest bucket seen
        self.first = self.last = None  # the earliest and latest day of a usable line
        self.frames: list[pl.DataFrame] = []

    def split(self, np, batch: pl.DataFrame, units, days):
        """``(bucket, rows, units, days)`` for each bucket's part of a batch, in order; ``(None, None, None, None)``
        when the batch's buckets go back (in it, or before the latest bucket seen)."""
        if self.edges is None:
            self.edges = np.array(self.days, dtype=np.int64)
        bucket = np.searchsorted(self.edges, days, side="right")
        if bucket[0] < self.current or (bucket.size > 1 and (bucket[1:] < bucket[:-1]).any()):
            yield None, None, None, None
            return
        low, high = int(days.min()), int(days.max())
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        cuts = [0, *(np.flatnonzero(bucket[1:] != bucket[:-1]) + 1).tolist(), bucket.size]
        for a, b in zip(cuts[:-1], cuts[1:]):
            self.current = int(bucket[a])
            whole = a == 0 and b == bucket.size
            yield (self.current, batch if whole else batch.slice(a, b - a), units if whole else units[a:b],
                   days if whole else days[a:b])

    def flush(self, np, state, orders, bucket: int) -> None:
        """Bucket ``bucket``'s rows out of ``state``'s arrays (``orders``: the positions' array of owners, or None),
        and the arrays emptied for the next bucket."""
        a = state.arrays
        low = features._DAY_NONE_LOW
        at = np.flatnonzero((a["last"] != low) | (a["other_day"] != low))  # the customers with a line here
        if orders is not None:  # the orders first held in this bucket, by their holder
            owner, born = orders.arrays["owner"], orders.arrays["born"]
            fresh = (owner != features._NO_OWNER) & (born == 0)
            born[fresh] = 1
            starts = np.bincount(owner[fresh] - state.lo, minlength=state.size)[at]
        else:
            starts = a["starts"][at]
        bought = pl.Series(a["last"][at] != low)
        last = a["last"][at]
        frame = pl.DataFrame([
            pl.Series("customer_id", at + state.lo).cast(self.id_type),
            pl.Series("_bucket", np.full(at.size, bucket, np.int32)),
            pl.Series("_monetary_units", a["monetary"][at]),
            pl.Series("first_order", a["first"][at]).cast(pl.Date),
            pl.Series("last_order", last).cast(pl.Date),
            pl.Series("last_activity", np.maximum(last, a["other_day"][at])).cast(pl.Date),
            pl.Series("returns", a["returns"][at]),
            pl.Series("_returned_value_units", a["returned"][at]),
            pl.Series("_purchases", a["purchases"][at]),
            pl.Series("_runs", starts + (a["doubts"][at] > 0) * _DOUBT),
            pl.Series("_null_key", a["null_key"][at] > 0),
        ]).with_columns(pl.when(bought).then(pl.col("first_order", "last_order")).name.keep())
        self.frames.append(frame)
        for name, values in a.items():
            values.fill(state.EMPTY.get(name, 0))

    def table(self) -> pl.DataFrame:
        """Every bucket's rows, sorted by customer and bucket."""
        frames, self.frames = self.frames, []
        if not frames:
            return None
        # put in order column by column, each column's parts let go once it is gathered: a sort of the whole frame
        # would hold a second copy of every column at once (0.13 GiB at 2.0M bucket rows)
        flushed = [frame["_bucket"][0] for frame in frames if frame.height]
        whole = pl.concat(frames)  # the parts as chunks, not copied
        del frames
        if all(a < b for a, b in zip(flushed, flushed[1:])):
            # each part sorted by customer, the parts by bucket: a stable sort by customer alone puts the rows in
            # order of (customer, bucket), at a fifth of the cost of a sort by both (0.04 against 0.2 CPU-s)
            order = whole.select(pl.arg_sort_by("customer_id", maintain_order=True)).to_series()
        else:
            order = whole.select(pl.arg_sort_by("customer_id", "_bucket")).to_series()
        columns = whole.get_columns()
        del whole
        return _gathered(columns, order)


def _gathered(columns: list[pl.Series], order: pl.Series) -> pl.DataFrame:
    """A frame of ``columns`` with their rows in ``order``; the list is emptied, each column let go (where no one
    else holds it) once gathered."""
    out = []
    while columns:  # one piece first: a gather across the pieces of a column costs about twice as much
        out.append(columns.pop(0).rechunk().gather(order))
    return pl.DataFrame(out)


def _dense_buckets(tx: Transactions, boundaries: Sequence[dt.date], last: dt.date, *, positions: bool):
    """The one scan's ``buckets``, ``exceptions``, ``totals`` (a dict) and ``span`` from the dense pass with
    :class:`_DenseBuckets` (orders by run starts, or with ``positions`` as array positions), or None where the
    dense pass gives up (ids or order ids too far apart, the input not in date order, a date on the arrays' marks)
    or no row is usable (the streaming pass then says why)."""
    dense = _DenseBuckets(boundaries, tx.frame.collect_schema()["customer_id"])
    result = features._dense_pass(tx, last, positions=positions, buckets=dense)
    if result is None:
        return None
    table = dense.table()
    if table is None:
        return None
    exceptions, total = result
    epoch = dt.date(1970, 1, 1)
    span = pl.DataFrame({"first": [epoch + dt.timedelta(days=dense.first)],
                         "last": [epoch + dt.timedelta(days=dense.last)]})
    return table, exceptions, total, span


def _ordered_runs(tagged: pl.LazyFrame, schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """``tagged`` (usable rows in the input's order, with ``_bucket``) with ``_run``: the run starts of
    :func:`engine.features._order_flags`, and a line in doubt (``_DOUBT``) also where a run goes back to an
    earlier bucket.

    An order counts in a snapshot from the first bucket it has a purchase line in. For a customer with no
    run start in doubt, each order is one run of consecutive purchase lines; when no run goes back to an
    earlier bucket, the bucket of its first line is its first bucket, so the orders a bucket adds are the run
    starts in it: summed per (customer, bucket) like any count, no (customer, order) grouping. A customer with
    a line in doubt is counted again by hashing (:func:`_orders_from_runs`).
    """
    flagged = _order_flags(tagged, schema)
    counted = (pl.col("amount_units") > 0) & pl.col("order_key").is_not_null()
    previous = pl.when(counted).then(pl.col("_bucket")).forward_fill().shift(1)
    back = (counted & (pl.col("_run") == 0) & (pl.col("_bucket") < previous)).fill_null(False)
    return flagged.with_columns((pl.col("_run") + back.cast(pl.Int64) * _DOUBT).alias("_run"))


def _pair_codes() -> pl.Expr:
    """One 64-bit code per (customer, order key) pair: the same pair always gets the same code, two pairs the
    same one only by a hash collision. So there are at most as many distinct codes as distinct pairs."""
    return pl.col("customer_id").hash(0x2545F491) ^ pl.col("order_key").hash(0x9E3779B9)


def _orders_per_customer(tx: Transactions, spec: SnapshotSpec, streaming: bool) -> pl.DataFrame:
    """Each customer's distinct order keys of purchase lines over all history (``_orders``): the file read again."""
    key = pl.col("order_key")
    counted = (pl.col("amount_units") > 0) & key.is_not_null()
    return (_bucketed(tx, spec)[1].filter(counted).group_by("customer_id")
            .agg(key.n_unique().cast(pl.Int64).alias("_orders")).collect(engine="streaming" if streaming else "auto"))


def _across_buckets(buckets: pl.DataFrame, pairs: pl.DataFrame, per_customer: Any) -> pl.Series:
    """The customers with an order that has purchase lines in two buckets: whose buckets' distinct order keys
    (``_runs`` of ``buckets``, :func:`snapshot_queries` with ``per_bucket``) add up to more than their distinct
    order keys over all history (``_orders`` of ``per_customer()``). Every other customer's orders each count
    in the one bucket they have lines in: the first.

    A customer's buckets' counts add up to at least their count (every order key is in one of the buckets'),
    and the customers' counts to at least the distinct (customer, order) codes over all the lines (``_pairs``
    of ``pairs``: :func:`_pair_codes`, a collision only makes them fewer). So when the buckets' counts add up
    to the codes, every customer's add up to their own count: the usual case, found without grouping the lines
    by customer. Otherwise (an order in two buckets, or a collision of codes) the customers' counts are read
    (``per_customer``: the file read again) and compared one by one.
    """
    runs = buckets["_runs"].sum()
    if runs == pairs["_pairs"].item():
        return buckets["customer_id"].clear()
    orders = per_customer()
    if runs == orders["_orders"].sum():
        return buckets["customer_id"].clear()
    summed = buckets.group_by("customer_id").agg(pl.col("_runs").sum())
    both = summed.join(orders, on="customer_id", how="left")
    return both.filter(pl.col("_runs") != pl.col("_orders").fill_null(0))["customer_id"]


def _orders_from_runs(buckets: pl.DataFrame, key_features: Sequence[Any], rows: pl.LazyFrame,
                      streaming: bool, doubtful: pl.Series | None = None) -> tuple[pl.DataFrame, int]:
    """``buckets`` (sorted by customer and bucket, with ``_runs`` and ``_null_key``) with the orders each bucket
    adds (``_new_<name>``) and the count of customers counted again by hashing.

    ``doubtful``, when given, are the customers to count again (else those with a run start in doubt).

    The orders a bucket adds are its run starts, plus one in the first bucket with a purchase line without an
    order id (all of a customer's such lines are one order, as in the single pass). Customers with a line in
    doubt get the hashing path's count instead: their purchase lines (``rows``, read again for them only)
    grouped by (customer, order), each order counted in the first bucket it has a line in.
    """
    runs = pl.col("_runs")
    if doubtful is None:
        doubtful = buckets.filter(runs >= _DOUBT)["customer_id"].unique()
    new = runs.mod(_DOUBT)
    if buckets["_null_key"].any():  # (without such a sale, the usual case, no bucket adds that order)
        start = (pl.col("customer_id") != pl.col("customer_id").shift(1)).fill_null(True)
        null_key = pl.col("_null_key").cast(pl.Int64)
        seen = null_key.cum_sum()
        before = pl.when(start).then(seen - null_key).forward_fill()
        new = new + (pl.col("_null_key") & ((seen - before) == 1)).cast(pl.Int64)
    if doubtful.len():
        new = pl.when(pl.col("customer_id").is_in(doubtful.implode())).then(0).otherwise(new)
    buckets = buckets.with_columns(new.alias("_new")).drop("_runs", "_null_key")
    if doubtful.len():
        again = (rows.filter(pl.col("customer_id").is_in(doubtful.implode()) & (pl.col("amount_units") > 0))
                 .group_by("customer_id", pl.col("order_key").alias("_key")).agg(pl.col("_bucket").min())
                 .group_by("customer_id", "_bucket").agg(pl.len().cast(pl.Int64).alias("_again"))
                 .collect(engine="streaming" if streaming else "auto"))
        buckets = (buckets.join(again, on=["customer_id", "_bucket"], how="left", maintain_order="left")
                   .with_columns((pl.col("_new") + pl.col("_again").fill_null(0)).alias("_new")).drop("_again"))
    return buckets.with_columns(pl.col("_new").alias(f"_new_{f.name}") for f in key_features).drop("_new"), \
        doubtful.len()


def _cumulative(buckets: pl.DataFrame, key_features: Sequence[Any]) -> pl.DataFrame:
    """Each customer's running totals over their buckets, oldest first: the row of a customer's last bucket
    up to a snapshot's holds the aggregated features as of that snapshot (``_next``: their next bucket).

    Segmented running sums and fills, written as whole-column operations (no per-group window): the rows
    are sorted by customer, and a running sum less its value at the customer's first row is the customer's
    own. A latest date (``max``) over buckets is the last one present; an earliest (``min``) the first one
    present, since every date of a later bucket is later.
    """
    rows = buckets  # sorted by customer and bucket
    start = (pl.col("customer_id") != pl.col("customer_id").shift(1)).fill_null(True)
    group = start.cum_sum().alias("_g")
    rows = rows.with_columns(group)
    g = pl.col("_g")

    def running_sum(name: str) -> pl.Expr:
        c = pl.col(name).fill_null(0)
        total = c.cum_sum()
        base = pl.when(start).then(total - c).forward_fill()
        return (total - base).alias(name)

    def carried(value: pl.Expr, name: str) -> pl.Expr:
        """``value`` where present, else the customer's last present one (null before any)."""
        source = pl.when(value.is_not_null()).then(g).forward_fill()
        return pl.when(source == g).then(value.forward_fill()).alias(name)

    exprs = []
    for f in _AGGREGATED:
        a: Agg = f.compute
        if a.op == "n_unique":
            exprs.append(running_sum(f"_new_{f.name}").alias(f.name))
        elif a.op == "sum":
            exprs.append(running_sum(f"_{f.name}_units"))
        elif a.op == "count":
            exprs.append(running_sum(f.name))
        elif a.op == "max":
            exprs.append(carried(pl.col(f.name), f.name))
        else:  # min: the first present value, carried
            seen = pl.col(f.name).is_not_null().cast(pl.Int64).cum_sum()
            before = pl.when(start).then(seen - pl.col(f.name).is_not_null().cast(pl.Int64)).forward_fill()
            first_here = pl.col(f.name).is_not_null() & ((seen - before) == 1)
            exprs.append(carried(pl.when(first_here).then(pl.col(f.name)), f.name))
    nxt = pl.when(g.shift(-1) == g).then(pl.col("_bucket").shift(-1)).alias("_next")
    return rows.select("customer_id", "_bucket", nxt, *exprs)


#: Integers up to this size in absolute value are exact as floats: their quotient by the amount scale is then the
#: float nearest the exact decimal value (one IEEE division, correctly rounded), as :func:`engine.features.to_amount`.
_FLOAT_EXACT = 2**53


def _cumulative_amounts(buckets: pl.DataFrame | list[pl.Series], key_features: Sequence[Any]) -> pl.DataFrame:
    """:func:`_cumulative` with the amounts (``_amounts``), computed in NumPy over whole columns where that is
    exact: every running sum an Int64 column (the scan proved that no sum of the units can leave Int64 unless it
    summed wide, in Int128), the dates Dates. Otherwise (wide sums) :func:`_cumulative` and ``_amounts`` in Polars.

    The same table, column for column (tested against the Polars route): a customer's running sum is the running
    sum over all rows less its value before the customer's first row; a latest date is the last one present at or
    before the row, within the customer; an earliest the customer's first one present, from its row on. An amount
    is its units over the scale as one float division, the nearest float to the exact value while the units are
    exact as floats (:data:`_FLOAT_EXACT`), else :func:`engine.features.to_amount`.

    ``buckets`` may be given as its columns in a list, which is then emptied: each column is let go (where no one
    else holds it) once its running totals are computed, so that the bucket rows and the running totals (0.13 and
    0.15 GiB at 2.0M rows) are not held whole at the same time.
    """
    if isinstance(buckets, list):
        src = {c.name: c for c in buckets}
        buckets.clear()
    else:
        src = {c.name: c for c in buckets.get_columns()}
    sums = [f"_new_{f.name}" if f.compute.op == "n_unique" else f"_{f.name}_units" if f.compute.op == "sum"
            else f.name for f in _AGGREGATED if f.compute.op in ("n_unique", "sum", "count")]
    dates = [f.name for f in _AGGREGATED if f.compute.op in ("min", "max")]
    n = src["customer_id"].len()
    if (not n or any(src[c].dtype != pl.Int64 for c in sums) or any(src[c].dtype != pl.Date for c in dates)
            or src["_bucket"].null_count()):
        return _cumulative(pl.DataFrame(list(src.values())), key_features).with_columns(_amounts())
    import numpy as np

    ids = src["customer_id"]
    start = (ids != ids.shift(1)).fill_null(True).to_numpy()
    first = np.flatnonzero(start)  # each customer's first row
    lengths = np.diff(first, append=n)
    row = np.arange(n, dtype=np.int64)
    begins = np.repeat(first, lengths)  # each row's customer's first row

    def running_sum(name: str) -> pl.Series:
        values = src.pop(name).fill_null(0).to_numpy()
        total = np.cumsum(values)
        return pl.Series(name, total - np.repeat((total - values)[first], lengths), dtype=pl.Int64)

    def dated(name: str, where: Any, present: Any) -> pl.Series:
        """The dates of rows ``where``, null where not ``present``."""
        days = src.pop(name).to_physical().fill_null(0).to_numpy()
        return with_nulls(pl.Series(name, days[where], dtype=pl.Int32), present).cast(pl.Date)

    def with_nulls(values: pl.Series, present: Any) -> pl.Series:
        missing = np.flatnonzero(~present)
        return values.scatter(missing, None) if missing.size else values

    columns = {}
    for f in _AGGREGATED:
        a: Agg = f.compute
        if a.op == "n_unique":
            columns[f.name] = running_sum(f"_new_{f.name}").alias(f.name)
        elif a.op == "sum":
            columns[f"_{f.name}_units"] = running_sum(f"_{f.name}_units")
        elif a.op == "count":
            columns[f.name] = running_sum(f.name)
        else:
            has = src[f.name].is_not_null().to_numpy()
            if a.op == "max":  # the last present row at or before this one, within the customer
                last = np.maximum.accumulate(np.where(has, row, -1))
                present = last >= begins
                columns[f.name] = dated(f.name, np.maximum(last, 0), present)
            else:  # min: the customer's first present row, from that row on
                firsts = np.minimum.reduceat(np.where(has, row, n), first)
                at = np.repeat(firsts, lengths)
                present = at <= row
                columns[f.name] = dated(f.name, np.minimum(at, n - 1), present)
    bucket_column = src.pop("_bucket")
    bucket = bucket_column.to_numpy()
    following = np.zeros(n, dtype=np.int32)
    following[:-1] = bucket[1:]
    same_next = np.zeros(n, dtype=bool)  # the next row is the same customer's (never on the last row)
    same_next[:-1] = ~start[1:]
    nxt = with_nulls(pl.Series("_next", following, dtype=pl.Int32), same_next)
    out = pl.DataFrame([src.pop("customer_id"), bucket_column, nxt, *columns.values()])
    src.clear()  # what is left of the bucket rows (their other columns) let go
    amounts = []
    for f in _AGGREGATED:
        if f.compute.op != "sum":
            continue
        units = columns[f"_{f.name}_units"]
        low, high = units.min(), units.max()
        if -_FLOAT_EXACT <= low and high <= _FLOAT_EXACT:
            # negated as integers: -0 is 0, where the negated float 0.0 would be -0.0
            values = -units.to_numpy() if f.compute.negate else units.to_numpy()
            amounts.append(pl.Series(f.name, values.astype(np.float64) / float(AMOUNT_SCALE), dtype=pl.Float64))
        else:
            amounts.append(out.select(next(e for e in _amounts() if e.meta.output_name() == f.name)).to_series())
    return out.with_columns(amounts)


def _give_back_freed_memory() -> None:
    """Return the C heap's freed memory to the operating system (glibc's ``malloc_trim``; elsewhere nothing).

    NumPy allocates through the C library, Polars through its own allocator: the running totals' temporary
    arrays (:func:`_cumulative_amounts`, about 100 MB at 2M bucket rows), once freed, stayed in the C heap,
    counted in the process's memory while the snapshots were classified (0.87-0.91 GiB peak against
    0.78-0.81 with them given back, the 10M ordered set, measured under load)."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: the C library's, no search
    except (OSError, AttributeError):  # not glibc: nothing to give back this way
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


def _last_report(scan: LoadReport, last: LoadReport) -> LoadReport:
    """The run's report: the scan's row counts with the last snapshot's customers."""
    for key in ("customers_with_transactions", "customers_without_usable_rows", "unusable_in_table",
                "customers_from_table", "prospects", "customers", "net_revenue", "table_only", "warnings"):
        setattr(scan, key, getattr(last, key))
    return scan


def _activity(buckets: pl.DataFrame, boundaries: list[dt.date], dates: Sequence[dt.date],
              previous: dt.date | None) -> pl.DataFrame:
    """Per customer and period (``[as_of[i-1], as_of[i])``, period 0 from ``previous``): purchases, revenue."""
    edges = [previous, *dates]
    index = {d: j for j, d in enumerate(boundaries)}
    # bucket j -> the period it falls in; every bucket before period 0's start is period -1
    period_of: dict[int, int] = {j: -1 for j in range(index[previous] + 1)} if previous is not None else {}
    for i in range(len(dates)):
        if edges[i] is None:
            continue
        for j in range(index[edges[i]] + 1, index[edges[i + 1]] + 1):
            period_of[j] = i
    # the net revenue in the buckets' units: Int64 unless the scan summed wide (a sum of the amounts might leave
    # Int64); Int128 held 32 MB more at 2.0M rows, and as much again in the cohorts' join
    units = pl.Int64 if buckets.schema[_NET_UNITS] == pl.Int64 else pl.Int128
    schema = {"customer_id": buckets.schema["customer_id"], "period": pl.Int32, "purchases": pl.Int64,
              "revenue_units": units}
    if not period_of:
        return pl.DataFrame(schema=schema)
    rows = (buckets.select("customer_id", pl.col("_bucket").replace_strict(list(period_of), list(period_of.values()),
                                                                         default=None, return_dtype=pl.Int32)
                           .alias("period"), pl.col("_purchases").alias("purchases"),
                           pl.col(_NET_UNITS).cast(units).alias("revenue_units"))
            .filter(pl.col("period").is_not_null()))
    if len(set(period_of.values())) < len(period_of):  # window starts split some periods into several buckets
        rows = rows.group_by("customer_id", "period").agg(pl.col("purchases").sum(), pl.col("revenue_units").sum())
    elif isinstance(schema["customer_id"], _ORDERED_IDS):
        # the buckets' order (by customer, then bucket), said so: joins on the customer id (the cohorts') then
        # merge instead of hashing
        rows = rows.with_columns(pl.col("customer_id").set_sorted())
    return rows.select(list(schema)).cast(schema)


#: Id types whose sort order is the order their values compare in (a sorted flag on them tells the truth).
_ORDERED_IDS = (pl.String, *_PACKABLE, pl.UInt64)


def _check_range(spec: SnapshotSpec, first: dt.date | None, last: dt.date | None, source: str) -> None:
    """Every snapshot inside the data's dates; every window within the history."""
    if first is None:
        return  # no usable row: complete_features says so
    last = last or first
    starts = [spec.previous, *spec.as_of[:-1]]
    for d, start in zip(spec.as_of, starts):
        # outside: before any customer exists, or a period that begins after the last transaction (a snapshot
        # may follow the data by up to one period: month-end snapshots of data that ends mid-month)
        after = start > last if start is not None else d > last + dt.timedelta(days=1)
        if d <= first or after:
            why = (f"no customer exists before {first + dt.timedelta(days=1)}" if d <= first else
                   f"its period begins on {start}, after the last transaction" if start is not None else
                   f"it is after {last + dt.timedelta(days=1)}, the day after the last transaction")
            raise DataError(f"{key('snapshots_as_of')}: {d} is outside the data's date range ({source}: transactions "
                            f"from {first} to {last}; {why})", value=str(d))
    for name, step in spec.windows.items():
        start = step.back(spec.as_of[0])
        if start < first:
            raise DataError(f"{key('window')} {name}: {step} is longer than the history before the first snapshot (as of "
                            f"{spec.as_of[0]} it reaches back to {start}, the first transaction is on {first}); "
                            f"shorten the window or start the snapshots later", value=str(step))


def _check_periods(spec: SnapshotSpec, activity: pl.DataFrame) -> None:
    """Every period between two snapshots has a buyer (else its KPIs divide by nothing)."""
    have = set(activity.select(pl.col("period").filter(pl.col("purchases") > 0).unique()).to_series().to_list())
    for i in range(1, len(spec.as_of)):
        if i not in have:
            raise DataError(f"{key('snapshots_as_of')}: {spec.as_of[i]}: the period from {spec.as_of[i - 1]} to {spec.as_of[i]} has no "
                            f"customers (no purchase in it); choose snapshots that each follow some sales",
                            value=str(spec.as_of[i]))


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Snapshots:
    """What :func:`run_snapshots` returns; every table is a Polars DataFrame.

    Attributes
    ----------
    as_of
        The snapshot dates, oldest first.
    customers
        One classified customer table per snapshot (``customers[i]`` as of
        ``as_of[i]``): features and every selected classifier's columns, exactly
        what a single run with that ``as_of`` gives (windowed classifiers: their
        columns from the window's features).
    migration
        The migration matrices, long: one row per (label column, pair of
        consecutive snapshots, from class, to class); see
        :func:`engine.migration.migration_table`.
    flows
        Per label column, pair and class: stayed, moved up, moved down,
        entered, left, net flow, revenue of the customers who moved down
        (:func:`engine.migration.flows_table`).
    kpis
        One row per period between two snapshots: active, new, reactivated,
        retained, churned, retention and churn rate, revenue retention
        (:func:`engine.kpi.kpi_table`; definitions in :data:`engine.kpi.KPI_DEFINITIONS`).
    cohorts
        Customers by month (or quarter) of first purchase: per period, the share
        of the cohort that bought and the cohort's revenue (:func:`engine.kpi.cohort_table`).
    values
        Historical value per customer by class, per snapshot and label column
        (:func:`engine.kpi.value_by_class`).
    selections
        The classifiers with their parameters.
    report
        The scan's :class:`~engine.features.LoadReport` (customers of the last snapshot).
    activity
        Per customer and period: purchases and net revenue (:class:`SnapshotFeatures`), what the KPIs and
        cohorts are counted from; None with ``keep="slim"``, which lets go of it once they are counted.
    """

    as_of: list[dt.date]
    customers: list[pl.DataFrame]
    selections: list[Selection]
    report: LoadReport
    spec: SnapshotSpec
    activity: pl.DataFrame | None
    fits: list[dict[str, Any]] = field(default_factory=list)
    #: Under ``skip_failing``: the messages of classifiers skipped, and their names.
    skipped: list[str] = field(default_factory=list)
    skipped_classifiers: dict[str, str] = field(default_factory=dict)
    #: The derived tables (:func:`derive_tables`), or the :class:`~concurrent.futures.Future` of their
    #: computation on background threads: reading one of them waits for it (and raises what it raised).
    derived: Any = field(default=None, repr=False)
    #: The last table's figures (:func:`_figures`), or the Future of them: see :meth:`last_classes`.
    last_figures: Any = field(default=None, repr=False)

    def last_classes(self) -> pl.DataFrame | None:
        """:func:`engine.run.summarize` of the last snapshot's table, as counted for its summary in
        ``snapshots.tables`` (waiting for it, and raising what its thread raised), or None if not counted."""
        return _done(self.last_figures)[2] if self.last_figures is not None else None

    def derived_table(self, name: str) -> Any:
        """One of the derived tables (``"tables"``: each snapshot's summary), waiting for their computation."""
        if isinstance(self.derived, Future):
            self.derived = self.derived.result()
        return self.derived[name]

    migration = property(lambda self: self.derived_table("migration"))
    flows = property(lambda self: self.derived_table("flows"))
    kpis = property(lambda self: self.derived_table("kpis"))
    cohorts = property(lambda self: self.derived_table("cohorts"))
    values = property(lambda self: self.derived_table("values"))

    @property
    def last(self) -> pl.DataFrame:
        """The last snapshot's table with ``<label>_prev`` and ``<label>_change`` (see
        :func:`engine.migration.with_previous`): what a playbook's rules read."""
        if len(self.customers) < 2:
            return self.customers[-1]
        return with_previous(self.customers[-1], self.customers[-2], self.selections)


#: Columns a slim snapshot keeps (with the label columns): what migration, KPIs and the outputs read.
SLIM_COLUMNS = ("customer_id", "monetary", "first_order")


def classify_snapshots(feats: SnapshotFeatures, selections: Sequence[Selection], *, registry: Registry | None = None,
                       skipped: list[str] | None = None, skipped_classifiers: dict[str, str] | None = None,
                       keep: str = "all", on_table: Any = None, release: bool = False
                       ) -> tuple[list[pl.DataFrame], list[dict[str, Any]]]:
    """Classify every snapshot (windowed classifiers on their window's table); returns tables and fits.

    ``on_table(i, table)``, when given, is called with each table as it is kept, oldest first. With ``release``,
    ``feats`` lets go of the running totals once the last table built from them is (:meth:`SnapshotFeatures.built`).

    ``keep="all"`` keeps every snapshot's whole table; ``keep="slim"`` keeps the
    last two whole and, of the earlier ones, :data:`SLIM_COLUMNS` and the label
    columns (what migration, KPIs and the output files read), to hold less
    memory on large runs.
    """
    if keep not in ("all", "slim"):
        raise ParamError(f"keep: {keep!r} is not one of all, slim", value=keep)
    plain = [s for s in selections if s.classifier.name not in feats.spec.windows]
    windowed = [s for s in selections if s.classifier.name in feats.spec.windows]
    labels = [o.column for s in selections for o in s.outputs if o.labels is not None]
    n = len(feats.as_of)
    out, all_fits = [], []
    for i in range(n):
        result = feats.table(i)
        if release and i == max(n - 2, 0):  # the last two tables built from the running totals: let them go
            feats.built()
        table, fits = _classify_one(feats, i, result, plain, windowed, selections, registry, skipped,
                                    skipped_classifiers)
        del result
        if keep == "slim" and i < n - 2:
            table = table.select(*[c for c in SLIM_COLUMNS if c in table.columns], *labels)
        out.append(table)
        all_fits.append(fits)
        if on_table is not None:
            on_table(i, table)
    return out, all_fits


def _classify_one(feats: SnapshotFeatures, i: int, result: FeatureResult, plain: Sequence[Selection],
                  windowed: Sequence[Selection], selections: Sequence[Selection], registry: Registry | None,
                  skipped: list[str] | None, skipped_classifiers: dict[str, str] | None
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Snapshot ``i`` (``result``: its customer table) classified, and its classifiers' fits."""
    fits: dict[str, Any] = {}
    table = apply_classifiers(result.customers, plain, as_of=result.as_of, registry=registry, skipped=skipped,
                              skipped_classifiers=skipped_classifiers, fits=fits)
    for sel in windowed:
        win = apply_classifiers(feats.window_table(sel.classifier.name, i, result.customers), [sel],
                                as_of=result.as_of, registry=registry, skipped=skipped,
                                skipped_classifiers=skipped_classifiers, fits=fits)
        cols = [o.column for o in sel.outputs]
        table = table.join(win.select("customer_id", *cols), on="customer_id", how="left", maintain_order="left")
    order = [c for c in result.customers.columns] + [o.column for s in selections for o in s.outputs]
    return table.select(order), fits


def derive_tables(feats: SnapshotFeatures, tables: Sequence[pl.DataFrame], selections: Sequence[Selection]) -> dict:
    """Migration, flows, KPIs, cohorts and values from classified snapshot tables, and each table's
    summary (``"tables"``, for :func:`snapshot_summary`)."""
    deriving = _Deriving(feats, selections, background=False)
    for i, table in enumerate(tables):
        deriving.add(i, table)
    return deriving.finish(tables)


class _Deriving:
    """:func:`derive_tables` as the tables come: what a snapshot's table (and the one before it) gives
    (its side of the migration matrices, the cells between the two, its values and summary) is counted as
    soon as the table is classified, the rest (KPIs, cohorts, the long tables) once all are there.

    Each table is read once for all of it: its side (:func:`engine.migration.cell_side`: ids, revenue units
    and every label's rank packed into one code) gives the cells with the side before it and, grouped once
    by that code, its customers and revenue per combination of labels, from which its values and its class
    summary are read (a few hundred rows, not a pass over the customers per label column).

    With ``background`` the work runs on two threads of its own, the sides and the migration on one and the
    rest on the other, each in the order it was given, while the caller classifies the next
    snapshot and then applies the rules: :meth:`finish` returns the :class:`~concurrent.futures.Future` of the
    dict. Every piece is Polars work on tables no one changes any more (the GIL is released while it runs) and
    reads only core columns and labels: no plugin code runs on those threads. Without it everything runs
    here, at once.
    """

    def __init__(self, feats: SnapshotFeatures, selections: Sequence[Selection], background: bool):
        # only what the derived tables read: holding ``feats`` would keep the scan's buckets alive, holding the
        # activity would keep it alive after the KPIs' counts and the cohorts, the only readers of it, are counted
        self.spec, self.selections = feats.spec, selections
        self.dates = list(feats.as_of)
        self.outputs = label_outputs(selections)
        self.lanes = ([ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tierbook-derive-{k}") for k in (0, 1)]
                      if background else None)
        self.sides: dict[int, Any] = {}
        self.cells: dict[int, Any] = {}
        self.figures: dict[int, Any] = {}
        # what needs no classifier: the KPIs' counts (from the activity) and the cohorts (from the first
        # purchases in the last snapshot's features, the same customers as its classified table), on the thread
        # of the values and summaries (0.4 CPU-s for both at 1M customers and eight quarters, about what the
        # sides and the cells take on the other)
        spec = feats.spec
        last = feats.firsts if getattr(feats, "firsts", None) is not None else feats.table(-1).customers
        self.stats = self._run(1, period_stats, feats.activity)
        self.cohorts = self._run(1, cohort_table, feats.activity, last, self.dates, spec.previous, spec.cohort)

    def _run(self, lane: int, fn: Any, *args: Any) -> Any:
        return fn(*args) if self.lanes is None else self.lanes[lane].submit(fn, *args)

    def add(self, i: int, table: pl.DataFrame) -> None:
        """Snapshot ``i``'s classified table (as kept: slim tables have every column read here)."""
        outputs = self.outputs
        side = self.sides[i] = self._run(0, cell_side, table, outputs)
        if i > 0:  # lane 0 runs in order: both sides are done when the pair's turn comes
            earlier = self.sides[i - 1]
            self.cells[i] = self._run(0, lambda: pair_cells(_done(earlier), _done(side), table, outputs))
            self.sides[i - 1] = None  # no longer needed once its pair is counted
        self.figures[i] = self._run(1, lambda: _figures(_done(side), table, self.dates[i], self.selections, outputs))

    def finish(self, tables: Sequence[pl.DataFrame]) -> dict | Future:
        """Everything, once every table was :meth:`add`-ed (a Future of it in the background)."""
        dates, outputs, spec = self.dates, self.outputs, self.spec

        def moves() -> dict:
            cells = {(i, c): v for i, pair in self.cells.items() for c, v in _done(pair).items()}
            return {"migration": migration_table(tables, dates, outputs, cells=cells),
                    "flows": flows_table(tables, dates, outputs, cells=cells)}

        def rest(moved: Any) -> dict:
            figures = [_done(self.figures[i]) for i in range(len(tables))]
            frames = [f for values, _, _ in figures for f in values]
            out = {"kpis": kpi_table(None, tables, dates, spec.previous, stats=_done(self.stats)),
                   "cohorts": _done(self.cohorts),
                   "values": pl.concat(frames) if frames else pl.DataFrame(schema=VALUE_SCHEMA),
                   "tables": [summary for _, summary, _ in figures]}
            return {**_done(moved), **out}

        if self.lanes is None:
            return rest(moves())
        result = self._run(1, rest, self._run(0, moves))
        for lane in self.lanes:
            lane.shutdown(wait=False)  # each thread ends when its work is done
        return result


def _done(value: Any) -> Any:
    """``value``, or its result when it is a :class:`~concurrent.futures.Future`."""
    return value.result() if isinstance(value, Future) else value


def _figures(side: pl.DataFrame, table: pl.DataFrame, as_of: dt.date, selections: Sequence[Selection],
             outputs: Sequence[tuple[str, Any]]) -> tuple[list[pl.DataFrame], dict[str, Any], pl.DataFrame]:
    """One snapshot's values by class (:func:`engine.kpi.values_of`), its summary (:func:`_table_summary`) and its
    classes (:func:`engine.run.summarize` of the table), all from one grouping of its
    :func:`~engine.migration.cell_side` by combination of labels."""
    combos = label_combos(side, outputs, table)
    values = values_from_combos(combos, table.schema, as_of, outputs)
    counts = {}
    for k, (_, o) in enumerate(outputs):
        grouped = combos.group_by(f"_rank_{k}").agg(pl.col("customers").sum(), pl.col("_u").sum())
        counts[o.column] = {key: (n, u) for key, n, u in grouped.iter_rows()}
    total_units = (combos["_u"].sum() or 0) if combos is not None else 0
    classes = summary_from_counts(counts, table.schema, selections, table.height, total_units)
    return values, _table_summary(table, as_of, classes), classes


def _table_summary(table: pl.DataFrame, as_of: dt.date, classes: pl.DataFrame) -> dict[str, Any]:
    """A snapshot's entry in summary.json's ``snapshots.tables`` (``classes``: :func:`engine.run.summarize` of
    the table)."""
    revenue = table.select(pl.col("monetary").sum()).item() if "monetary" in table.columns else None
    return {"as_of": str(as_of), "customers": table.height, "revenue": revenue, "classes": classes.to_dicts()}


def window_plugin_features(registry: Registry, spec: SnapshotSpec, selections: Sequence[Selection],
                           needs: Iterable[str]) -> tuple[dict[str, Feature], dict[str, dict[str, Feature]]]:
    """The plugin features of the snapshot tables and of each windowed classifier's tables."""
    by_name = {s.classifier.name: s for s in selections}
    for name in spec.windows:
        if name not in by_name:
            raise ParamError(f"{key('window')}: {name!r} is not a selected classifier (selected: {', '.join(by_name)})",
                             value=name)
    plain = plugin_features_for(registry.features, needs)
    windowed = {name: plugin_features_for(registry.features, by_name[name].requires)
                for name in spec.windows}
    return plain, windowed


def run_snapshots(
    data: Any,
    *,
    as_of: Iterable[Any] | None = None,
    every: Any = None,
    periods: int | None = None,
    end: Any = None,
    windows: Mapping[str, Any] | None = None,
    cohort: str | None = None,
    classifiers: Sequence[str] | None = None,
    params: Any = None,
    mapping: Any = None,
    customers: Any = None,
    customers_id: str | None = None,
    date_format: str | None = None,
    sheet: str | None = None,
    delimiter: str | None = None,
    decimal_comma: bool = False,
    registry: Registry | None = None,
    streaming: bool = True,
    spec: SnapshotSpec | None = None,
    needs: Iterable[str] = (),
    keep: str = "all",
) -> Snapshots:
    """Classify the customers of ``data`` at several dates from one scan; migration and KPIs between them.

    Give the dates as ``as_of=[...]`` (any order; each exclusive, as a run's
    ``as_of``) or as ``every="quarter"`` (``month``, ``year``, ``"30 days"``
    ...) with ``periods=8`` snapshots ending at ``end`` (default: the day
    after the last transaction, found by one read of the date column before
    the scan). ``windows={"<classifier>": "12 months"}`` classifies that
    classifier on the lines of the window before each ``as_of``; ``cohort``
    is ``month`` (default) or ``quarter``. ``keep="slim"`` keeps the whole
    table of the last two snapshots only (see :func:`classify_snapshots`) and
    no ``activity`` (let go once the KPIs and cohorts are counted from it). The
    other keywords are those of :func:`engine.classify`.

    Returns a :class:`Snapshots` (every table a Polars DataFrame).
    """
    registry = registry or get_registry()
    sels = select(registry, classifiers, split_params(params))
    tx = read_transactions(data, mapping, date_format=date_format, sheet=sheet, delimiter=delimiter,
                           decimal_comma=decimal_comma)
    if spec is None:
        spec = snapshot_spec(as_of=as_of, every=every, periods=periods, end=end, windows=windows, cohort=cohort)
    if spec is None:  # every/periods without an end: the day after the last transaction
        spec = snapshot_spec(every=every, periods=periods, windows=windows, cohort=cohort,
                             default_end=default_end(tx))
    table = None
    if customers is not None:
        reserved = frozenset(BUILTIN_FEATURES) | frozenset(registry.features)
        table = read_customers(customers, customers_id, reserved=reserved)
    return snapshots_of(tx, spec, sels, registry=registry, customers=table, streaming=streaming,
                        needs=[*needs, *(c for s in sels for c in s.requires)], keep=keep)


def default_end(tx: Transactions) -> dt.date:
    """The day after the last dated row with an amount (the default ``as_of`` of a run): one read of the dates."""
    last = (tx.frame.filter(pl.col("order_date").is_not_null() & pl.col("amount_units").is_not_null())
            .select(pl.col("order_date").max()).collect().item())
    if last is None:
        raise DataError(f"{tx.describe()}: no usable transactions (no row has a date and an amount)")
    return last + dt.timedelta(days=1)


def snapshots_of(tx: Transactions, spec: SnapshotSpec, selections: Sequence[Selection], *,
                 registry: Registry, customers: pl.DataFrame | None = None, streaming: bool = True,
                 needs: Iterable[str] = (), skipped: list[str] | None = None,
                 skipped_classifiers: dict[str, str] | None = None, keep: str = "all", collect: Any = None
                 ) -> Snapshots:
    """:func:`run_snapshots` on transactions already read (``tx``) and classifiers already selected
    (``collect``: see :func:`compute_snapshot_features`)."""
    plain, windowed = window_plugin_features(registry, spec, selections, needs)
    feats = compute_snapshot_features(
        tx, spec, customers=customers, plugin_features=plain, window_features=windowed, streaming=streaming,
        feature_owners={name: info.label() for name, info in registry.feature_owners.items()}, collect=collect)
    # migration, values and KPIs are counted on two threads of their own as the snapshots are classified,
    # and finished while the caller applies the rules to the last one
    deriving = _Deriving(feats, selections, background=True)
    activity = feats.activity
    if keep == "slim":  # read by the KPIs' counts and the cohorts only (on a deriving thread): let go after them
        feats.activity = activity = None
    tables, fits = classify_snapshots(feats, selections, registry=registry, skipped=skipped,
                                      skipped_classifiers=skipped_classifiers, keep=keep, on_table=deriving.add,
                                      release=True)
    derived = deriving.finish(tables)
    report = feats.report
    del feats  # the scan's buckets: not needed once every snapshot is classified
    return Snapshots(as_of=list(spec.as_of), customers=tables, selections=list(selections), report=report,
                     spec=spec, activity=activity, fits=fits, derived=derived,
                     last_figures=deriving.figures[len(tables) - 1])


def snapshot_summary(snaps: Snapshots) -> dict[str, Any]:
    """The ``snapshots``, ``migration`` and ``kpis`` keys of ``summary.json`` (the tables in full are the
    files ``snapshots.parquet``, ``migration.csv``, ``flows.csv``, ``kpis.csv``, ``cohorts.csv``, ``values.csv``)."""
    spec = snaps.spec
    tables = snaps.derived_table("tables")
    return {
        "snapshots": {"as_of": [str(d) for d in snaps.as_of], "every": str(spec.every) if spec.every else None,
                      "windows": {k: str(v) for k, v in spec.windows.items()}, "cohort": spec.cohort,
                      "period_before_first": str(spec.previous) if spec.previous else None, "tables": tables},
        "migration": {
            "definitions": {
                "entered": "no label at the earlier snapshot (not yet a customer, or unlabelled)",
                "left": "no label at the later snapshot",
                "up / down": "to a label earlier / later in the classifier's order (best first)",
                "revenue_from / revenue_to": "the customers' net revenue (monetary) as of each snapshot",
                "period_revenue": "their net revenue between the two snapshots",
                "revenue_moved_down": "net revenue, as of the earlier snapshot, of the customers who moved down",
            },
            "flows": snaps.flows.to_dicts(),
            "matrix_file": "migration.csv",
        },
        "kpis": {"definitions": KPI_DEFINITIONS, "periods": snaps.kpis.to_dicts(),
                 "cohort_definitions": COHORT_DEFINITIONS, "value_definitions": VALUE_DEFINITIONS,
                 "value_by_class": snaps.values.to_dicts(), "cohorts_file": "cohorts.csv"},
    }
