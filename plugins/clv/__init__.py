"""Customer lifetime value: BG/NBD for purchases, Gamma-Gamma for spend.

The BTYD summary
----------------
The plugin adds the buy-till-you-die summary of lifetimes' ``summary_data_from_transaction_data``
and pymc-marketing's ``rfm_summary`` to the customer table, computed in the single pass over the
transactions (a query over the same scan's purchase lines, per customer and day, then per customer; see
:class:`engine.Feature` ``table``). The period is the day; everything is in days:

===================  ============================================================================
btyd_frequency       repeat purchase days: days with a purchase, minus 1 (the first)
btyd_recency         days from the first purchase day to the last
btyd_T               days from the first purchase day to the last observed day, ``as_of`` - 1
                     (lifetimes' ``observation_period_end``, which is inclusive; tierbook's
                     ``as_of`` is exclusive)
btyd_monetary_value  mean value of the repeat purchase days (the first day left out), 0 when
                     btyd_frequency is 0
btyd_first_purchase  the first purchase day
===================  ============================================================================

In calendar weeks (lifetimes' ``freq="W"``, pymc-marketing's ``time_unit="W"``; a week runs Monday to
Sunday, as pandas' ``W`` periods), from a query of their own per customer and week, run only when one
of them is needed (``WEEKLY_COLUMNS``, or a rule naming one):

=========================  ======================================================================
btyd_frequency_weeks       repeat purchase weeks: weeks with a purchase, minus 1
btyd_recency_weeks         whole weeks from the first purchase week to the last
btyd_T_weeks               whole weeks from the first purchase week to the week of ``as_of`` - 1
btyd_monetary_value_weeks  mean value of the repeat purchase weeks, 0 when there is none
btyd_first_purchase_week   the Monday of the first purchase week (``btyd_last_purchase_week``: the last)
=========================  ======================================================================

A *purchase day* is a day with at least one line of zero or positive amount, and its value is the sum
of those lines. A line of zero amount (a free item, a promotion) is a purchase of value 0, as in
lifetimes, pymc-marketing and the published CDNOW analyses (8 of the 2,357 CDNOW customers' first
purchases are of value 0). Returns (negative lines) are not purchases: a day with only returns is not a
purchase day, and returns do not lower a day's value (they stay in tierbook's ``monetary`` and
``returned_value``); lifetimes would count a return-only row as a purchase period, with a negative
value that the Gamma-Gamma model cannot take. A customer with no purchase day (a prospect, or one with
returns only) has no summary (null) and no CLV. Repeat buyers whose repeat days are all of value 0
(``btyd_monetary_value`` 0) are left out of the Gamma-Gamma fit (it needs positive spend) and counted
in the fit's report; their expected spend is the model's, from their frequency and a mean of 0. The classifier
converts days to weeks (``time_unit=weeks``: days / 7, lifetimes' ``freq="D", freq_multiplier=7``)
before it fits. With ``period=week`` it fits and predicts on the calendar-week columns instead (lifetimes'
``freq="W"``; time in weeks, a month of 4.345 weeks): the run then computes the weekly summary, not the
daily one (the classifier's ``requires`` follows its ``period``).

The classifier
--------------
``clv`` fits BG/NBD (r, alpha, a, b) on every customer with a purchase and Gamma-Gamma (p, q, v) on
those with a repeat purchase, by maximum likelihood (:mod:`plugins.clv.models`), on purchase days
(``period=day``, the default) or calendar weeks (``period=week``), and writes:

=======================  =========================================================================
clv_p_alive              probability that the customer is still active (1 with one purchase day)
clv_expected_purchases   expected purchases (purchase days) in the next ``horizon_months`` months
clv_expected_value       expected mean value of a future purchase (Gamma-Gamma)
clv                      CLV over ``horizon_months``, discounted at ``discount_rate`` a month
clv_tier                 high (top ``high_share`` of the customers by CLV), medium (up to
                         ``medium_share``), low; none for customers without a purchase
=======================  =========================================================================

CLV follows lifetimes' ``customer_lifetime_value`` (discounted cash flow, month by month)::

    clv = sum over m = 1..H of  E[M] * (E[Y(m f)] - E[Y((m - 1) f)]) / (1 + d)^m

with ``E[Y(t)]`` the BG/NBD expected purchases in the next t periods, ``E[M]`` the Gamma-Gamma
expected spend, ``f`` 30 periods a month in days or 4.345 in weeks (lifetimes' factors), H the horizon
in months and d the monthly discount rate. ``clv_expected_purchases`` is ``E[Y(H f)]``.

The fitted parameters, their standard errors (from the Hessian), the log-likelihoods and how many
customers each fit used are returned by the fit and reported in a playbook run's ``summary.json``
under ``fits.clv``. The classifier runs only when named (``--classifier clv``, or ``clv:`` in a
playbook): it fits a model, which takes a moment and needs repeat buyers.

Examples
--------
>>> from plugins.clv import models
>>> round(models.MONTH["weeks"] * 7, 3)
30.415
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import polars as pl

from engine import Classifier, Context, Feature, Output, ParamSpec, hookimpl
from engine.errors import DataError
from engine.features import to_amount

if TYPE_CHECKING:  # NumPy is imported by the runs that fit (see fit), not when the plugin is loaded
    import numpy as np


__all__ = ["CLV", "PERIOD_COLUMNS", "SUMMARY_COLUMNS", "WEEKLY_COLUMNS", "btyd_summary", "register_classifiers", "register_features"]

TIERS = ("high", "medium", "low")
SUMMARY_COLUMNS = ("btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value")
WEEKLY_COLUMNS = ("btyd_frequency_weeks", "btyd_recency_weeks", "btyd_T_weeks", "btyd_monetary_value_weeks")
_UNIT_DAYS = {"days": 1.0, "weeks": 7.0}
#: The summary columns the classifier fits on, by its ``period``: purchase days or calendar weeks.
PERIOD_COLUMNS = {"day": SUMMARY_COLUMNS, "week": WEEKLY_COLUMNS}
_AS_OF = (pl.col("first_order") + pl.duration(days=pl.col("tenure_days"))).max()


_INTEGER_IDS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _period(weeks: bool) -> pl.Expr:
    """The purchase period of a line as an Int32 number: its day (days since 1970-01-01), or its calendar
    week, Monday to Sunday (weeks since Monday 1969-12-29: lifetimes' and pandas' ``W`` periods)."""
    day = pl.col("order_date").cast(pl.Int32)
    return (day + 3) // 7 if weeks else day


def _period_start(period: pl.Expr, weeks: bool) -> pl.Expr:
    """The first day of a period number of :func:`_period` (a Monday for weeks)."""
    return (period * 7 - 3 if weeks else period).cast(pl.Int32).cast(pl.Date)


def _names(weeks: bool, suffix: str) -> dict[str, str]:
    """The table's columns: purchase periods, the first and the last, the value of those after the first."""
    week = "_week" if weeks else ""
    return {"count": f"btyd_purchase_{suffix}", "first": f"btyd_first_purchase{week}",
            "last": f"btyd_last_purchase{week}", "repeat": f"btyd_repeat{week}_value"}


def _per_period_then_customer(weeks: bool, suffix: str):
    """The table function of the purchase periods (days, or calendar weeks): per customer the number of
    purchase periods, the first and the last (their first day) and the value of those after the first.

    Purchase periods are lines of amount >= 0 summed per customer and period, in exact units (Int128, or Int64
    in a pass that proves no such sum can leave it, as the built-in sums: the same value whatever the order of the
    rows). The purchase lines of integer customer ids within +-2^31 are collected from the pass (id, period,
    units: 20 bytes a line) and read per customer by position when the ids are dense (:func:`_by_lines`: NumPy
    arrays indexed by id, no grouping of the lines by customer and period); otherwise they are grouped by a packed
    Int64 key (id * 2^32 + period + 2^31, exact and reversible; about twice as fast as the pair of columns) and
    the periods read per customer by position (:func:`_by_position`) or by sorting (:func:`_by_sorting`). The
    other customers (text ids, larger integers) are grouped by the pair in the pass, then by customer. A customer
    is wholly in one part.
    """
    names = _names(weeks, suffix)

    def by_pair(purchases: pl.LazyFrame, int64_safe: bool) -> pl.LazyFrame:
        period, value = pl.col("_period"), pl.col("_value")
        return purchases.group_by("customer_id", "_period").agg(_units_sum(int64_safe)).group_by("customer_id").agg(
            pl.len().cast(pl.Int64).alias(names["count"]),
            _period_start(period.min(), weeks).alias(names["first"]),
            _period_start(period.max(), weeks).alias(names["last"]),
            to_amount(value.sum() - value.sort_by(period).first()).alias(names["repeat"]),
        )

    def by_lines(rows: pl.LazyFrame, id_type: pl.DataType, int64_safe: bool) -> pl.LazyFrame:
        # every line (not only the purchases) and the day (not the period): column for column the rows' own buffers,
        # no copy; the NumPy step takes the purchases and their periods in its one copy (_purchase_lines)
        lines = rows.select(pl.col("customer_id").cast(pl.Int64, strict=False),
                            pl.col("order_date").cast(pl.Int32).alias("_day"), "amount_units")
        schema = {"customer_id": id_type, names["count"]: pl.Int64, names["first"]: pl.Date, names["last"]: pl.Date,
                  names["repeat"]: pl.Float64}
        return lines.map_batches(lambda frame: _per_customer_from_lines(_loading_the_fit_libraries(frame), id_type,
                                                                        weeks, names, int64_safe), schema=schema)

    def table(rows: pl.LazyFrame, *, int64_safe: bool = False) -> pl.LazyFrame:
        purchases = rows.filter(pl.col("amount_units") >= 0).with_columns(_period(weeks).alias("_period"))
        id_type = rows.collect_schema()["customer_id"]
        if id_type not in _INTEGER_IDS:  # the fit's libraries loaded once the table is computed (as it is)
            return by_pair(purchases, int64_safe).map_batches(_loading_the_fit_libraries)
        packs = pl.col("customer_id").is_between(-(1 << 31), (1 << 31) - 1)
        return pl.concat([by_lines(rows.filter(packs), id_type, int64_safe),
                          by_pair(purchases.filter(~packs), int64_safe)])

    return table


_loading: list[threading.Thread] = []


def _loading_the_fit_libraries(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as it is, once the import of what the fit needs is started (:func:`_load_fit_libraries_in_background`).

    The summary's queries call it when they run (in a ``map_batches``: on the purchase lines before their NumPy step,
    or on the table grouped by Polars), not when the table function builds them: loading a playbook builds every
    plugin's table query to know its columns (``collect_schema``, nothing run), with clv or without, and a run
    without the summary must never import SciPy."""
    _load_fit_libraries_in_background()
    return frame


def _load_fit_libraries_in_background() -> None:
    """Start importing what the fit needs (NumPy, SciPy's special functions, threadpoolctl) in a thread of its own,
    once per process: a run computes the BTYD summary when it fits (the clv classifier) or a rule reads it, and
    the imports (about 0.2 s, SciPy's most) then run beside the summary's own step (:func:`_per_customer_from_lines`,
    which needs NumPy only) and what follows it before the fit, instead of after them. The fit imports them before
    it limits BLAS to one thread (:func:`fit`): it waits for this import if it is still running (Python's import
    lock), so nothing runs twice. A failed import is left to the fit, which imports again and reports it. Not a
    daemon thread: a process that ends meanwhile waits for the import rather than stopping it midway."""
    if _loading:
        return
    thread = threading.Thread(target=_import_fit_libraries, name="clv-imports")
    _loading.append(thread)
    thread.start()


def _import_fit_libraries() -> None:
    try:
        import threadpoolctl  # noqa: F401

        from . import models  # noqa: F401  (NumPy and SciPy)
    except Exception:  # noqa: BLE001 - the fit's own import says what is wrong
        pass


def _packed_key() -> pl.Expr:
    """Integer customer id (within +-2^31) and period number in one Int64: id * 2^32 + period + 2^31."""
    return pl.col("customer_id").cast(pl.Int64, strict=False) * (1 << 32) + pl.col("_period").cast(pl.Int64) + (1 << 31)


#: The lines in period order are read in blocks of one period (:func:`_in_blocks`) while there are at least this
#: many lines a period on average; fewer, and the loop over the periods (a few NumPy calls each) would cost more
#: than a sort.
_LINES_PER_BLOCK = 1024
#: Lines in period order are taken in chunks of whole periods of about this many lines (:func:`_in_blocks`).
_CHUNK_LINES = 1 << 20
#: From this many purchase lines on, the summary's NumPy step copies them (:func:`_purchase_lines`) and reads their
#: blocks (:func:`_in_blocks`) in two halves on two threads.
_PARALLEL_LINES = 1 << 21


def _per_customer_from_lines(lines: pl.DataFrame, id_type: pl.DataType, weeks: bool, names: Mapping[str, str],
                             int64_safe: bool) -> pl.DataFrame:
    """Per customer from the lines (``customer_id`` as Int64, ``_day`` as Int32, ``amount_units``) in any order: the
    purchases among them (:func:`_purchase_lines`), then by position when the ids are dense and their total fits an
    Int64 (:func:`_dense_range`: NumPy arrays indexed by ``id - lowest id``, :func:`_by_lines`, without grouping
    the lines by customer and period); any other ids group the lines by the packed (customer, period) key, as the
    pass did before, then per customer (:func:`_per_customer`). Both give the same table, sorted by id."""
    ids, period, value = _purchase_lines(lines, weeks)
    dense = _dense_range(ids, value)
    if dense is not None:
        return _by_lines(ids, period, value, id_type, weeks, names, *dense)
    purchases = pl.DataFrame({"customer_id": ids, "_period": period, "amount_units": value})
    periods = purchases.lazy().group_by(_packed_key().alias("_key")).agg(_units_sum(int64_safe)).collect()
    return _per_customer(periods, id_type, weeks, names)


def _purchase_lines(lines: pl.DataFrame, weeks: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The purchase lines (``amount_units`` >= 0) of ``lines`` as NumPy arrays, in their order: ids (Int64), periods
    (Int32: the day, or its calendar week as :func:`_period` numbers it) and units (Int64).

    One copy: each column's chunks are read as they are (NumPy views of the rows' buffers) and their purchases
    written into arrays of the purchases' length (a Polars filter and a single-chunk copy would write the lines
    twice: at 10M lines about 400 MB of fresh memory, its page faults included, against 200 MB). From
    :data:`_PARALLEL_LINES` lines on, the chunks are written in two halves on two threads (NumPy lets go of the
    GIL while it copies; the page faults of fresh memory are taken on both cores), each half at the place its
    purchases' count before it gives."""
    import numpy as np

    columns = [lines[c] for c in ("customer_id", "_day", "amount_units")]
    if any(c.null_count() for c in columns):  # never for the pass's usable rows; nulls are no position
        raise ValueError("the BTYD summary's lines have a null customer, day or amount")
    if len({tuple(len(part) for part in c.get_chunks()) for c in columns}) > 1:  # chunks of other lengths
        columns = [c.rechunk() for c in columns]
    chunks = [tuple(part.to_numpy() for part in chunk) for chunk in zip(*(c.get_chunks() for c in columns))]
    kept = [int(np.count_nonzero(u >= 0)) for _, _, u in chunks]
    at = np.cumsum([0, *kept]).tolist()  # where each chunk's purchases go
    ids = np.empty(at[-1], dtype=np.int64)
    period = np.empty(at[-1], dtype=np.int32)
    value = np.empty(at[-1], dtype=np.int64)

    def write(first: int, stop: int) -> None:
        for (i, d, u), n, k in zip(chunks[first:stop], at[first:stop], kept[first:stop]):
            if k < u.size:
                keep = u >= 0
                i, d, u = i[keep], d[keep], u[keep]
            ids[n:n + k] = i
            value[n:n + k] = u
            if weeks:  # as _period: (day + 3) // 7, weeks since Monday 1969-12-29 (in Int64: no wrap near the end)
                period[n:n + k] = (d.astype(np.int64) + 3) // 7
            else:
                period[n:n + k] = d

    # the second half from the first chunk with half the purchases before it (the last chunk when it holds more)
    middle = min(int(np.searchsorted(at, at[-1] // 2)), len(chunks) - 1) if at[-1] >= _PARALLEL_LINES else 0
    if middle > 0:
        with ThreadPoolExecutor(1) as pool:
            later = pool.submit(write, middle, len(chunks))
            write(0, middle)
            later.result()
    else:
        write(0, len(chunks))
    return ids, period, value


def _dense_range(ids: np.ndarray, value: np.ndarray) -> tuple[int, int] | None:
    """The lowest id and the ids' range when the purchase lines can be read by position (:func:`_by_lines`): ids
    dense (their range no larger than the number of lines) and a total of units within an Int64; else None."""
    import numpy as np

    if not ids.size:
        return None
    low, high = int(ids.min()), int(ids.max())
    # purchases: units >= 0, so the total bounds every customer's sum, and no Int64 sum of them wraps when it is
    # below 2^63: so is the lines times the largest (exact), else the float total (within a relative 1e-6 of the
    # exact one) below 2^62
    fits = int(value.max()) * ids.size < 1 << 63 or float(value.sum(dtype=np.float64)) < 2.0**62
    return (low, high - low + 1) if high - low < ids.size and fits else None


def _by_lines(ids: np.ndarray, period: np.ndarray, value: np.ndarray, id_type: pl.DataType, weeks: bool,
              names: Mapping[str, str], low: int, span: int) -> pl.DataFrame:
    """The table of :func:`_per_customer` from the purchase lines themselves, by position (``id - low``, arrays of
    ``span``): per customer the distinct periods counted, the first and the last, and the value of the lines after
    the first period (Int64: the caller checked the total); in blocks of one period when the lines come in period
    order (:func:`_in_blocks`: a transaction log written by date), else by sorting (:func:`_by_sorted_keys`)."""
    edges = _period_edges(period)
    if edges is not None:
        count, first, last, repeat = _in_blocks(ids, period, value, low, span, edges)
    else:
        count, first, last, repeat = _by_sorted_keys(ids - low, period, value, span)
    return _customers_from_arrays(count, first, last, repeat, low, id_type, weeks, names)


def _in_blocks(ids: np.ndarray, period: np.ndarray, value: np.ndarray, low: int, span: int, edges: np.ndarray):
    """Per position (``id - low``) the distinct periods, the first, the last and the value after the first, from
    lines in period order (``edges``: where each period after the first starts), by :func:`_blocks_part`; from
    :data:`_PARALLEL_LINES` lines on in two parts on two threads, split at the edge nearest the middle, so each
    period is wholly in one part and every period of the second part is later than every one of the first.

    The parts' arrays then add up exactly: the counts add; the first period is the first part's where it has one
    (the smaller), the last the second part's where it has one (its line indices are the larger); the value after
    the first period adds the second part's value after its own first period, and for the customers the first part
    has seen the second part's opening period too (``opened``: its value per position)."""
    import numpy as np

    bounds = [0, *edges.tolist(), ids.size]
    m = int(np.searchsorted(edges, ids.size // 2)) if ids.size >= _PARALLEL_LINES and edges.size else -1
    if m < 0:
        count, first, repeat, owner, _ = _blocks_part(ids, period, value, low, span, bounds, False)
    else:
        m = min(m, edges.size - 1)  # bounds[m + 1] is edges[m]: the second part starts there
        with ThreadPoolExecutor(1) as pool:
            later = pool.submit(_blocks_part, ids, period, value, low, span, bounds[m + 1:], True)
            count, first, repeat, owner, _ = _blocks_part(ids, period, value, low, span, bounds[:m + 2], False)
            count2, first2, repeat2, owner2, opened2 = later.result()
        repeat += repeat2
        repeat[count > 0] += opened2[count > 0]
        count += count2
        np.minimum(first, first2, out=first)
        np.maximum(owner, owner2, out=owner)
    seen = owner >= 0
    last = np.full(span, np.iinfo(np.int32).min, dtype=np.int32)
    last[seen] = period[owner[seen]]
    return count, first, last, repeat


def _blocks_part(ids: np.ndarray, period: np.ndarray, value: np.ndarray, low: int, span: int, bounds: list[int],
                 opened: bool):
    """:func:`_in_blocks`' arrays from the lines ``bounds[0]`` to ``bounds[-1]`` (each bound a period's start), in
    chunks of whole periods of about :data:`_CHUNK_LINES` lines (the temporaries stay small: memory touched once
    costs page faults): per position the distinct periods, the first, the value after the first, the index of
    one of the customer's lines in their last period (``owner``, -1 for none) and with ``opened`` the value of
    their first period (else None).

    Within a chunk, consecutive lines of one customer in one period (an order's lines) are taken as one *run*, their
    values summed (Int64: the caller checked the total). The distinct (customer, period) pairs are counted from one
    run of each, flagged within each period's block: every customer's position in ``owner`` is given the line index
    of one of their runs in the block (an assignment: with repeated positions one of the values is kept,
    whichever), and the runs whose index was kept are flagged, one a customer; the indices of earlier blocks are
    all smaller, so what they left is never taken for this block's. What a run's position held before its block
    tells whether the period is the customer's first (nothing yet: ``-1``): the first period is put there, and the
    runs of later periods are summed into the value after the first."""
    import numpy as np

    count = np.zeros(span, dtype=np.int64)
    first = np.full(span, np.iinfo(np.int32).max, dtype=np.int32)
    repeat = np.zeros(span, dtype=np.int64)
    owner = np.full(span, -1, dtype=np.int64)
    opening_value = np.zeros(span, dtype=np.int64) if opened else None
    block = 0  # the chunk's first block: bounds[block] .. bounds[i]
    for i in range(1, len(bounds)):
        start, end = bounds[block], bounds[i]
        if end - start < _CHUNK_LINES and i < len(bounds) - 1:
            continue
        at = ids[start:end] - low
        runs = np.empty(at.size, dtype=bool)  # where a run starts: another customer, or a block's first line
        runs[0] = True
        np.not_equal(at[1:], at[:-1], out=runs[1:])
        inner = [b - start for b in bounds[block + 1:i]]
        runs[inner] = True
        where = np.flatnonzero(runs)
        at, p, v, index = at[where], period[start:end][where], np.add.reduceat(value[start:end], where), where + start
        blocks = [0, *np.searchsorted(where, inner).tolist(), where.size]  # the blocks' runs
        opening = np.empty(where.size, dtype=bool)  # a run of the customer's first period
        kept = np.empty(where.size, dtype=bool)  # the run counted for its (customer, period)
        for s, e in zip(blocks[:-1], blocks[1:]):
            w = at[s:e]
            np.less(owner[w], 0, out=opening[s:e])
            owner[w] = index[s:e]
            np.equal(owner[w], index[s:e], out=kept[s:e])
        np.add.at(count, at[kept], 1)
        first[at[opening]] = p[opening]  # one period a customer: the same value at a repeated position
        if opening_value is not None:
            np.add.at(opening_value, at[opening], v[opening])
        np.logical_not(opening, out=opening)
        np.add.at(repeat, at[opening], v[opening])
        block = i
    return count, first, repeat, owner, opening_value


def _by_sorted_keys(at: np.ndarray, period: np.ndarray, value: np.ndarray, span: int):
    """:func:`_in_blocks`' arrays from lines in any order: the packed (position, period) keys sorted, the distinct
    ones counted per position, their first and last period a minimum and a maximum at the position."""
    import numpy as np

    low = int(period.min())
    periods = int(period.max()) - low + 1
    key = np.sort(at * periods + (period - low))  # < span * periods <= lines * 2^32: an Int64
    distinct = np.ones(key.size, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=distinct[1:])
    key = key[distinct]
    at_p, period_p = key // periods, (key % periods + low).astype(period.dtype)
    count = np.bincount(at_p, minlength=span)
    first = np.full(span, np.iinfo(np.int32).max, dtype=np.int32)
    np.minimum.at(first, at_p, period_p)
    last = np.zeros(span, dtype=np.int32)
    np.maximum.at(last, at_p, period_p)
    later = period != first[at]  # lines after their customer's first period
    repeat = np.zeros(span, dtype=np.int64)
    np.add.at(repeat, at[later], value[later])
    return count, first, last, repeat


def _period_edges(period: np.ndarray) -> np.ndarray | None:
    """Where each period after the first starts, if the lines are in period order (checked on every line) with
    at least :data:`_LINES_PER_BLOCK` lines a period on average; else None."""
    import numpy as np

    if not bool(np.all(period[1:] >= period[:-1])):
        return None
    edges = np.flatnonzero(period[1:] != period[:-1]) + 1
    return edges if (edges.size + 1) * _LINES_PER_BLOCK <= period.size else None


def _per_customer(periods: pl.DataFrame, id_type: pl.DataType, weeks: bool, names: Mapping[str, str]) -> pl.DataFrame:
    """Per customer from the (packed ``_key``, ``_value``) periods in any order: by position when the ids are dense
    (their range no larger than the number of periods) and every customer's total fits an Int64 (the values are
    purchases, >= 0: their sum bounds each customer's), else by sorting. Both give the same table, sorted by id."""
    values = periods["_value"]
    if periods.height and values.min() >= 0 and values.sum() < 1 << 63:
        customer = periods["_key"] // (1 << 32)
        low, high = customer.min(), customer.max()
        if high - low < periods.height:
            return _by_position(periods, id_type, weeks, names, low, high - low + 1)
    return _by_sorting(periods.lazy(), id_type, weeks, names).collect()


def _by_position(periods: pl.DataFrame, id_type: pl.DataType, weeks: bool, names: Mapping[str, str], low: int,
                 span: int) -> pl.DataFrame:
    """The table of :func:`_by_sorting` without sorting the periods: each customer's figures at the position
    ``id - low`` of NumPy arrays of ``span`` (the ids' range): the periods counted, the first and the last (a
    minimum and a maximum), the values summed (Int64: the caller checked their total) and the first period's value
    put at its customer's position (each customer has one period equal to their first). At 1M customers' 5.2M
    purchase days about 0.2 CPU-s instead of the sort's 0.55 (measured under load)."""
    import numpy as np

    key = periods["_key"].to_numpy()
    at = (key >> 32) - low  # the packed id (id * 2^32 + period + 2^31, period + 2^31 in [0, 2^32)), from 0
    period = ((key & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)
    value = periods["_value"].cast(pl.Int64).to_numpy()
    count = np.bincount(at, minlength=span)
    first = np.full(span, np.iinfo(np.int32).max, dtype=np.int32)
    np.minimum.at(first, at, period)
    last = np.full(span, np.iinfo(np.int32).min, dtype=np.int32)
    np.maximum.at(last, at, period)
    total = np.zeros(span, dtype=np.int64)
    np.add.at(total, at, value)
    opening = period == first[at]
    total[at[opening]] -= value[opening]  # the periods after the first
    return _customers_from_arrays(count, first, last, total, low, id_type, weeks, names)


def _customers_from_arrays(count, first, last, repeat, low: int, id_type: pl.DataType, weeks: bool,
                           names: Mapping[str, str]) -> pl.DataFrame:
    """The per-customer table from arrays indexed by ``id - low``: the customers with a purchase period, in id
    order, their period count, first and last period (as dates) and the value of the periods after the first."""
    import numpy as np

    has = np.flatnonzero(count)
    return pl.DataFrame({"_c": has + low, "_n": count[has], "_p0": first[has], "_p1": last[has],
                         "_repeat": repeat[has]}).select(
        pl.col("_c").cast(id_type).set_sorted().alias("customer_id"), pl.col("_n").cast(pl.Int64).alias(names["count"]),
        _period_start(pl.col("_p0"), weeks).alias(names["first"]),
        _period_start(pl.col("_p1"), weeks).alias(names["last"]),
        to_amount(pl.col("_repeat")).alias(names["repeat"]))


def _by_sorting(periods: pl.LazyFrame, id_type: pl.DataType, weeks: bool, names: Mapping[str, str]) -> pl.LazyFrame:
    """Per customer from the (packed ``_key``, ``_value``) periods: sorted by key, each customer's periods are
    consecutive and in time order, so the figures are read at the boundaries (first and last row of each customer,
    a running sum) without a second hash grouping."""
    k = pl.col("_key")
    periods = periods.sort("_key").with_columns(
        (k // (1 << 32)).alias("_c"), pl.col("_value").cast(pl.Int128).cum_sum().alias("_cum"),
        pl.int_range(pl.len()).alias("_i"))
    c = pl.col("_c")
    period = (k % (1 << 32) - (1 << 31)).cast(pl.Int32)
    first = periods.filter((c != c.shift(1)).fill_null(True)).select(
        c.cast(id_type).alias("customer_id"), period.alias("_p0"), "_cum", "_i")
    last = periods.filter((c != c.shift(-1)).fill_null(True)).select(
        period.alias("_p1"), pl.col("_cum").alias("_cum1"), pl.col("_i").alias("_i1"))
    return pl.concat([first, last], how="horizontal").select(
        "customer_id",
        (pl.col("_i1") - pl.col("_i") + 1).cast(pl.Int64).alias(names["count"]),
        _period_start(pl.col("_p0"), weeks).alias(names["first"]),
        _period_start(pl.col("_p1"), weeks).alias(names["last"]),
        # the running sum after the last period less the one after the first: the periods after the first
        to_amount(pl.col("_cum1") - pl.col("_cum")).alias(names["repeat"]),
    )


def _units_sum(int64_safe: bool) -> pl.Expr:
    # amount_units (engine.features.PLUGIN_ROW_COLUMNS): exact, so the sums do not depend on the order the
    # lines arrive in (the streaming engine's order varies from run to run, the Spark engine's differs again).
    # In Int128, or in Int64 where the engine says the result is used only if no such sum can leave Int64
    # (``int64_safe``: the Polars pass, which runs again otherwise; 0.15-0.2 CPU-s less at 10M lines).
    units = pl.col("amount_units")
    return (units if int64_safe else units.cast(pl.Int128)).sum().alias("_value")


_per_day_then_customer = _per_period_then_customer(False, "days")
_per_week_then_customer = _per_period_then_customer(True, "weeks")


def _monetary(frequency: pl.Expr, repeat_value: str) -> pl.Expr:
    return pl.when(frequency > 0).then(pl.col(repeat_value) / frequency).otherwise(pl.when(frequency == 0).then(0.0))


def _features() -> list[Feature]:
    table = _per_day_then_customer
    frequency = pl.col("btyd_purchase_days") - 1
    first = pl.col("btyd_first_purchase")
    weekly = _per_week_then_customer
    frequency_w = pl.col("btyd_purchase_weeks") - 1
    first_w = pl.col("btyd_first_purchase_week")
    last_observed_week = (_AS_OF - pl.duration(days=1)).dt.truncate("1w")  # the Monday of as_of - 1's week
    return [
        Feature("btyd_purchase_days", "days with a purchase (a line of amount >= 0)", table=table, on_demand=True),
        Feature("btyd_first_purchase", "the first purchase day", table=table, on_demand=True),
        Feature("btyd_last_purchase", "the last purchase day", table=table, on_demand=True),
        Feature("btyd_repeat_value", "value of the purchase days after the first", table=table, on_demand=True),
        Feature("btyd_frequency", "repeat purchase days (lifetimes' frequency)", derive=frequency, on_demand=True),
        Feature("btyd_recency", "days from the first purchase day to the last (lifetimes' recency)",
                derive=(pl.col("btyd_last_purchase") - first).dt.total_days(), on_demand=True),
        # T ends on the last observed day, as_of - 1. as_of is first_order + tenure_days of any customer with
        # a purchase line (amount > 0); a BTYD purchase day may be a zero amount only, whose customer has no
        # first_order, so as_of is taken over the whole table rather than from the customer's own row.
        Feature("btyd_T", "days from the first purchase day to as_of - 1 (lifetimes' T)",
                derive=(_AS_OF - first).dt.total_days() - 1, on_demand=True),
        Feature("btyd_monetary_value", "mean value of the repeat purchase days (lifetimes' monetary_value)",
                derive=_monetary(frequency, "btyd_repeat_value"), on_demand=True),
        # Calendar weeks (Monday to Sunday): lifetimes' freq="W", pymc-marketing's time_unit="W".
        Feature("btyd_purchase_weeks", "calendar weeks with a purchase", table=weekly, on_demand=True),
        Feature("btyd_first_purchase_week", "the Monday of the first purchase week", table=weekly, on_demand=True),
        Feature("btyd_last_purchase_week", "the Monday of the last purchase week", table=weekly, on_demand=True),
        Feature("btyd_repeat_week_value", "value of the purchase weeks after the first", table=weekly,
                on_demand=True),
        Feature("btyd_frequency_weeks", "repeat purchase weeks (lifetimes' frequency with freq='W')",
                derive=frequency_w, on_demand=True),
        Feature("btyd_recency_weeks", "weeks from the first purchase week to the last (freq='W')",
                derive=(pl.col("btyd_last_purchase_week") - first_w).dt.total_days() // 7, on_demand=True),
        Feature("btyd_T_weeks", "weeks from the first purchase week to the week of as_of - 1 (freq='W')",
                derive=(last_observed_week - first_w).dt.total_days() // 7, on_demand=True),
        Feature("btyd_monetary_value_weeks", "mean value of the repeat purchase weeks (freq='W')",
                derive=_monetary(frequency_w, "btyd_repeat_week_value"), on_demand=True),
    ]


@hookimpl
def register_features(register) -> None:
    for feature in _features():
        register(feature)


def btyd_summary(customers: pl.DataFrame, time_unit: str = "days") -> pl.DataFrame:
    """The BTYD summary in lifetimes' column names, one row per customer with a purchase.

    ``customers`` is a customer table computed with this plugin's features (e.g.
    ``engine.prepare(..., needs=SUMMARY_COLUMNS).customers``); ``time_unit`` is ``days``,
    ``weeks`` (days / 7: lifetimes' ``freq="D", freq_multiplier=7``) or ``W`` (calendar weeks as the
    purchase periods: lifetimes' ``freq="W"``, pymc-marketing's ``time_unit="W"``; needs
    ``WEEKLY_COLUMNS``).
    """
    if time_unit == "W":
        x, tx, T, m = (pl.col(c) for c in WEEKLY_COLUMNS)
    else:
        scale = _UNIT_DAYS[time_unit]
        x, tx, T, m = (pl.col(c) for c in SUMMARY_COLUMNS)
        tx, T = tx / scale, T / scale
    return customers.filter(x.is_not_null()).select(
        "customer_id", x.alias("frequency"), tx.cast(pl.Float64).alias("recency"), T.cast(pl.Float64).alias("T"),
        m.alias("monetary_value"))


def _check(p: Mapping[str, Any]) -> None:
    if p["medium_share"] < p["high_share"]:
        raise ValueError(f"medium_share ({p['medium_share']}) is below high_share ({p['high_share']}); "
                         f"it is the cumulative share of high and medium customers")


def fit(customers: pl.DataFrame, p: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Fit BG/NBD and Gamma-Gamma on the customer table; raise DataError when the data cannot be fitted.

    BLAS runs on one thread during the fits (its other threads would spin beside the two fits' own). A limit
    applies to the libraries loaded when it is set, so NumPy and SciPy (the models) are imported first: imported
    inside it, as they were when the plugin stopped importing NumPy at load, their BLAS kept two threads and the
    fit of the 1M-customer bench set took 1.5 CPU-s instead of 0.5 (measured under load).
    """
    from threadpoolctl import threadpool_limits  # as NumPy (models), imported by the runs that fit

    from . import models  # noqa: F401  (NumPy, SciPy and their BLAS loaded before the limit is set)

    with threadpool_limits(1, user_api="blas"):
        return _fit(customers, p, ctx)


def _unit(p: Mapping[str, Any]) -> str:
    """The time unit of the fit: ``time_unit`` for purchase days, weeks for calendar weeks."""
    return "weeks" if p["period"] == "week" else p["time_unit"]


def _scale(p: Mapping[str, Any]) -> float:
    """Days (or weeks, for calendar weeks) of the summary columns per unit of the fit's time."""
    return 1.0 if p["period"] == "week" else _UNIT_DAYS[p["time_unit"]]


def _requires(p: Mapping[str, Any]) -> tuple[str, ...]:
    return PERIOD_COLUMNS[p["period"]]


def _distinct_histories(s: pl.DataFrame, scale: float, columns: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Distinct (frequency, recency, T) of the customers with a purchase (``s``: integer days or weeks) and how
    many customers have each, in the order of the packed key (the same on every run, whatever the row order)."""
    import numpy as np

    x, tx, T = (np.asarray(s[c].to_numpy(), dtype=np.int64) for c in columns[:3])  # no copy
    span = int(T.max()) + 1
    if (int(x.max()) + 1) * span * span < 1 << 62:  # one Int64 key: a sort, no hashing of three columns
        # Polars' sort (on both cores) and its run lengths: about a third of np.unique's time at 1M customers
        runs = pl.Series((x * span + T) * span + tx).sort().rle().struct.unnest()
        keys, counts = runs["value"].to_numpy(), runs["len"].to_numpy()
        x, T, tx = keys // (span * span), keys // span % span, keys % span
    else:
        t = s.group_by(*columns[:3]).len().sort(*columns[:3])
        x, tx, T, counts = (t[c].to_numpy() for c in (*columns[:3], "len"))
    return x.astype(float), tx / scale, T / scale, counts.astype(float)


def _fit(customers: pl.DataFrame, p: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    import numpy as np

    from . import models  # SciPy, as NumPy: imported by the runs that fit, not by every command loading the plugin
    scale, unit, columns = _scale(p), _unit(p), _requires(p)
    frequency, monetary = columns[0], columns[3]
    period = "day" if p["period"] == "day" else "calendar week"
    s = customers.select(*columns).filter(pl.col(frequency).is_not_null())
    buyers = s.height
    if buyers == 0:
        raise DataError("clv: no customer has a purchase (a line with an amount >= 0) before as_of; "
                        "there is nothing to fit")
    repeat = s.filter(pl.col(frequency) > 0)
    if repeat.height == 0:
        raise DataError(f"clv: all {buyers:,} customers with a purchase bought {'on' if period == 'day' else 'in'} "
                        f"one {period} only; BG/NBD and "
                        f"Gamma-Gamma need repeat purchases (a longer period of data, or an earlier as_of for a "
                        f"holdout, may help)")
    if repeat.height < p["min_repeat_customers"]:
        raise DataError(f"clv: only {repeat.height:,} of {buyers:,} customers bought {'on' if period == 'day' else 'in'} "
                        f"more than one {period}, fewer "
                        f"than min_repeat_customers ({p['min_repeat_customers']}); too few repeat buyers to fit "
                        f"BG/NBD and Gamma-Gamma")
    x, tx, T, w = _distinct_histories(s, scale, columns)
    # Gamma-Gamma on the repeat buyers with a positive spend, one by one, in the customer table's order:
    # their (frequency, mean spend) are nearly all distinct, finding the distinct ones would cost more than
    # it saves.
    paying = repeat.filter(pl.col(monetary) > 0)
    if paying.height < 2:
        raise DataError(f"clv: only {paying.height} repeat buyer(s) with a positive repeat spend; the Gamma-Gamma "
                        f"model of spend cannot be fitted")
    # The two fits are independent: Gamma-Gamma in a second thread while BG/NBD runs in this one (NumPy
    # releases the GIL in its array operations, so they overlap on two cores; each on one BLAS thread).
    with ThreadPoolExecutor(1) as pool:
        spend = pool.submit(models.fit_gamma_gamma, paying[frequency].to_numpy().astype(float),
                            paying[monetary].to_numpy(), np.ones(paying.height), penalizer=p["penalizer"])
        try:
            bg = models.fit_bgnbd(x, tx, T, w, penalizer=p["penalizer"])
            gg = spend.result()
        except models.FitError as exc:
            raise DataError(f"clv: {exc}") from None
    if gg.params["q"] <= 1:
        raise DataError(f"clv: the Gamma-Gamma fit gives q = {gg.params['q']:.4g} <= 1, so the expected spend "
                        f"(p v / (q - 1)) is not finite; a penalizer (e.g. clv.penalizer=0.001) may help")
    # The predictions on the distinct histories: non-finite values stop the run here, never reach a column.
    # E[Y(t)] = P(alive) G(x, T, t) with P(alive) in [0, 1], and G grows with t: G finite at the horizon on
    # every distinct (x, T) pair means finite predictions at every month before it.
    h = models.Histories(x, tx, T, T_key=np.rint(T * scale))
    check = models.growth(bg.params, p["horizon_months"] * models.MONTH[unit], h)
    alive = models.p_alive(bg.params, x, tx, T)
    if not (np.all(np.isfinite(check)) and np.all(np.isfinite(alive))):
        raise DataError(f"clv: the fitted BG/NBD ({_fmt(bg.params)}) gives non-finite predictions for some "
                        f"customers; a penalizer (e.g. clv.penalizer=0.001) may help")
    corr = repeat.select(pl.corr(frequency, monetary)).item()
    return {
        "time_unit": unit,
        "period": p["period"],
        "observation_end": str(ctx.as_of - dt.timedelta(days=1)),
        "customers_fitted": buyers,
        "repeat_customers": repeat.height,
        "repeat_customers_without_spend": repeat.height - paying.height,
        "customers_without_purchase": customers.height - buyers,
        "bgnbd": bg.to_dict(),
        "gamma_gamma": gg.to_dict(),
        # Gamma-Gamma assumes spend independent of frequency: a correlation far from 0 says it does not hold.
        "frequency_monetary_correlation": None if corr is None or not np.isfinite(corr) else float(corr),
    }


def _fmt(params: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in params.items())


def _outputs(p: Mapping[str, Any]) -> tuple[Output, ...]:
    return (
        Output("clv_p_alive", "probability the customer is still active (BG/NBD)", dtype=pl.Float64),
        Output("clv_expected_purchases", "expected purchase days over the horizon (BG/NBD)", dtype=pl.Float64),
        Output("clv_expected_value", "expected mean value of a future purchase (Gamma-Gamma)", dtype=pl.Float64),
        Output("clv", "customer lifetime value over the horizon, discounted", dtype=pl.Float64),
        Output("clv_tier", "value tier by CLV: high, medium, low", labels=TIERS),
    )


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    import numpy as np

    from . import models
    fitted = ctx.fit or {}
    bg, gg = fitted["bgnbd"]["params"], fitted["gamma_gamma"]["params"]
    scale, unit, columns = _scale(p), _unit(p), _requires(p)
    months, rate = p["horizon_months"], p["discount_rate"]
    x, tx, T, m = (pl.col(c) for c in columns)
    tx, T = tx / scale, T / scale
    has = x.is_not_null()

    # P(alive) and E[M] in closed form, as Polars expressions.
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    log_div = (r + x) * ((alpha + T) / (alpha + tx)).log() + (a / (b + x.clip(lower_bound=1) - 1)).log()
    alive = pl.when(x == 0).then(1.0).when(has).then(1 / (1 + log_div.exp()))
    pp, q, v = gg["p"], gg["q"], gg["v"]
    weight = pp * x / (pp * x + q - 1)
    value = (1 - weight) * (v * pp / (q - 1)) + weight * m

    # The purchases need the hypergeometric function: E[Y(t)] = P(alive) * G(x, T, t), G computed in
    # NumPy/SciPy once per distinct (x, T) pair (T keyed by its whole days) and gathered back. Both outputs
    # get the same (x, T): the distinct pairs, G at the horizon and the discount factors are computed once,
    # by whichever output's function runs first (Polars may run the two at once), and found by the other
    # (0.09 s instead of 0.16 for the classifier's columns at 1M customers, measured under load).
    lock, last = threading.Lock(), {}

    def per_pair(x: np.ndarray, days: np.ndarray):
        with lock:
            hit = last.get("histories")
            if hit is None or not (np.array_equal(hit[0], x) and np.array_equal(hit[1], days)):
                h = models.Histories(x, np.zeros(days.size), days / scale, T_key=days)
                hit = last["histories"] = (x, days, h, *models.horizon_and_discount_factors(bg, months, rate, unit, h))
            return hit[2:]

    def predictions(which: str):
        def run(batch: pl.Series) -> pl.Series:
            frame = batch.struct.unnest()
            keep = frame["x"].is_not_null().to_numpy()
            out = np.full(frame.height, np.nan)
            h, at_horizon, factors = per_pair(frame["x"].to_numpy()[keep], frame["T_days"].to_numpy()[keep])
            alive = frame["alive"].to_numpy()[keep]
            if which == "purchases":
                out[keep] = alive * at_horizon[h.inverse]
            else:
                out[keep] = frame["value"].to_numpy()[keep] * alive * factors[h.inverse]
            return pl.Series(out).fill_nan(None)
        return run

    history = [x.alias("x"), pl.col(columns[2]).alias("T_days"), pl.col("clv_p_alive").alias("alive")]
    inputs = pl.struct(*history, pl.col("clv_expected_value").alias("value"))
    clv = pl.col("clv")
    n = clv.count()

    def top(share: float) -> pl.Expr:
        """The customers ranked (``min`` ranks, highest CLV first) within ``ceil(n share)``: those with a CLV at
        least the ``ceil(n share)``-th largest (a selection, not a sort of every customer; none for 0)."""
        k = (n * share).ceil().cast(pl.Int64)
        return clv >= clv.drop_nulls().top_k(k).min()

    labels = pl.Enum(list(TIERS))
    tier = (pl.when(clv.is_null()).then(pl.lit(None, labels))
            .when(top(p["high_share"])).then(pl.lit("high", labels))
            .when(top(p["medium_share"])).then(pl.lit("medium", labels))
            .otherwise(pl.lit("low", labels)))
    return {
        "clv_p_alive": alive,
        "clv_expected_purchases": pl.struct(*history).map_batches(predictions("purchases"), return_dtype=pl.Float64),
        "clv_expected_value": pl.when(has).then(value),
        "clv": inputs.map_batches(predictions("clv"), return_dtype=pl.Float64),
        "clv_tier": tier,
    }


CLV = Classifier(
    name="clv",
    description="Customer lifetime value: BG/NBD purchases, Gamma-Gamma spend, CLV and tiers by CLV",
    outputs=_outputs,
    params=(
        ParamSpec("horizon_months", "int", 12, "CLV and expected purchases over this many months.",
                  min=1, max=600, step=1),
        ParamSpec("discount_rate", "float", 0.01, "Monthly discount rate of the CLV's cash flows.",
                  min=0, max=1, step=0.001),
        ParamSpec("period", "str", "day", "Purchase period: day (purchase days, lifetimes' freq='D') or week "
                  "(calendar weeks, Monday to Sunday, lifetimes' freq='W'; the fit is then in weeks).",
                  choices=("day", "week")),
        ParamSpec("time_unit", "str", "days", "Time unit of the fit on purchase days: days, or weeks (days / 7).",
                  choices=("days", "weeks")),
        ParamSpec("penalizer", "float", 0.0, "L2 penalty on the parameters (lifetimes' penalizer_coef).",
                  min=0, max=100, step=0.001),
        ParamSpec("min_repeat_customers", "int", 10, "Fewer customers with a repeat purchase than this: no fit.",
                  min=2, max=1_000_000, step=1),
        ParamSpec("high_share", "float", 0.2, "Share of customers (by CLV, highest first) in the high tier.",
                  min=0, max=1, step=0.01),
        ParamSpec("medium_share", "float", 0.5, "Cumulative share of customers in the high and medium tiers.",
                  min=0, max=1, step=0.01),
    ),
    requires=_requires,
    expressions=_expressions,
    check=_check,
    fit=fit,
    by_default=False,
)


@hookimpl
def register_classifiers(register) -> None:
    register(CLV)
