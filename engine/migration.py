"""Migration between two snapshots of any label column: matrices, flows per class, ``<label>_prev``.

A label column is a classifier :class:`~engine.classifier.Output` with labels,
ordered best first: moving to a label earlier in that order is *up*, later is
*down*; the plugin defines the order, the core only reads it.

Between the snapshots at ``t-1`` and ``t`` every customer of either snapshot is
counted once: ``from`` is their label at ``t-1``, or ``entered`` when they had
none (not yet a customer, or no label); ``to`` is their label at ``t``, or
``left`` when they have none. The matrix therefore adds up to the customers of
both snapshots together (``tests/engine/test_migration.py`` checks the
accounting identities).

Revenue is the customers' ``monetary`` (net revenue, all history up to each
``as_of``), summed exactly in integer units: ``revenue_from`` at ``t-1``,
``revenue_to`` at ``t``, and ``period_revenue`` their net revenue between the
two (``revenue_to - revenue_from``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from .classifier import Output
from .features import NET_REVENUE, to_amount, to_units

__all__ = ["ENTERED", "LEFT", "CHANGES", "label_outputs", "migration_table", "flows_table", "with_previous",
           "migration_cells", "cell_side", "pair_cells", "label_combos",
           "PREV_SUFFIX", "CHANGE_SUFFIX", "previous_columns", "MIGRATION_SCHEMA", "FLOWS_SCHEMA"]

ENTERED = "entered"
LEFT = "left"
PREV_SUFFIX = "_prev"
CHANGE_SUFFIX = "_change"
#: The values of ``<label>_change``: the direction of a customer's move since the previous snapshot.
CHANGES = ("up", "same", "down", ENTERED, LEFT)


def label_outputs(selections: Sequence[Any]) -> list[tuple[str, Output]]:
    """``(classifier name, output)`` for every label column of the selected classifiers, in order."""
    return [(s.classifier.name, o) for s in selections for o in s.outputs if o.labels is not None]


def previous_columns(selections: Sequence[Any]) -> dict[str, tuple[str, ...]]:
    """The columns a rule may read when there is a previous snapshot, with their labels:
    ``<label>_prev`` (the label at the previous snapshot) and ``<label>_change`` (:data:`CHANGES`)."""
    out: dict[str, tuple[str, ...]] = {}
    for _, o in label_outputs(selections):
        out[o.column + PREV_SUFFIX] = tuple(o.labels)
        out[o.column + CHANGE_SUFFIX] = CHANGES
    return out


def _labels(table: pl.DataFrame, output: Output) -> list[str]:
    dtype = table.schema[output.column]
    return dtype.categories.to_list() if isinstance(dtype, pl.Enum) else list(output.labels)


MIGRATION_SCHEMA = {"classifier": pl.String, "column": pl.String, "from_as_of": pl.Date, "to_as_of": pl.Date,
                    "from": pl.String, "to": pl.String, "from_rank": pl.Int64, "to_rank": pl.Int64,
                    "customers": pl.Int64, "row_share": pl.Float64, "revenue_from": pl.Float64,
                    "revenue_to": pl.Float64, "period_revenue": pl.Float64}


def _aligned(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """The two sides side by side, one row per customer of either.

    Snapshots of all history are sorted by customer and a later one holds every customer of an earlier one:
    then the earlier side is joined to the later one (left, on sorted ids: merged, not hashed), checked to
    have found a row for every earlier customer, and nothing else. Otherwise a full join."""
    ids_b, ids_a = before["customer_id"], after["customer_id"]
    if ids_a.is_sorted() and ids_b.is_sorted() and ids_a.dtype == ids_b.dtype and ids_b.len() <= ids_a.len():
        found = "_found_before"
        joined = after.join(before.with_columns(pl.lit(True).alias(found)), on="customer_id", how="left",
                            maintain_order="left")
        # one row per later customer, and every earlier one among them (ids are unique in each snapshot)
        if joined.height == after.height and joined[found].null_count() == after.height - before.height:
            return joined.drop(found)
    return before.join(after, on="customer_id", how="full", coalesce=True)


#: Every column's (from, to) code packed into one Int64 key while the product of their ranges stays below this.
_PACK_LIMIT = 2**62


def _packing(sizes: Sequence[int]) -> tuple[list[int], int] | None:
    """How one snapshot's label ranks are packed into one code (:func:`cell_side`): each column's stride, and the
    number of codes (label counts ``sizes``, plus one each for no label); None when a pair of codes does not fit
    below :data:`_PACK_LIMIT` (or there is no label column)."""
    strides, size = [], 1
    for n in sizes:
        strides.append(size)
        size *= n + 1
    return (strides, size) if sizes and size * size < _PACK_LIMIT else None


def migration_cells(tables: Sequence[pl.DataFrame],
                    outputs: Sequence[tuple[str, Output]]) -> dict[tuple[int, str], tuple[list[str], pl.DataFrame]]:
    """For each pair of consecutive snapshots ``(i-1, i)`` and label column: its labels and every cell of the
    matrix (zeros included): ranks (null: entered / left), customers and revenue units (``_uf`` as of the
    earlier snapshot, ``_ut`` as of the later one). One join of the two tables per pair serves every column
    (:func:`pair_cells`)."""
    out = {}
    later = cell_side(tables[0], outputs) if len(tables) > 1 else None
    for i in range(1, len(tables)):
        # each table's side once: the later side of one pair is the earlier side of the next
        earlier, later = later, cell_side(tables[i], outputs)
        for column, cells in pair_cells(earlier, later, tables[i], outputs).items():
            out[(i, column)] = cells
    return out


def cell_side(table: pl.DataFrame, outputs: Sequence[tuple[str, Output]]) -> pl.DataFrame:
    """What :func:`pair_cells` reads of one snapshot's table: ids, revenue units (``_u``) and every label's rank,
    packed into one code ``_c`` (each column's rank, or its label count for no label, times its stride:
    :func:`_packing`), or, with too many combinations to pack, one column ``_r_<column>`` each."""
    units = to_units(pl.col(NET_REVENUE)).cast(pl.Int128).alias("_u")
    ranks = [pl.col(o.column).to_physical().cast(pl.Int64) for _, o in outputs]
    sizes = [len(_labels(table, o)) for _, o in outputs]
    packing = _packing(sizes)
    if packing is None:
        side = table.select("customer_id", units, *[r.alias(f"_r_{o.column}") for r, (_, o) in zip(ranks, outputs)])
    else:
        code = pl.sum_horizontal([r.fill_null(n) * st for r, n, st in zip(ranks, sizes, packing[0])])
        side = table.select("customer_id", units, code.alias("_c"))
    return _narrow_units(side)


#: The revenue units of a side are summed in Int64 when no sum of them can reach this in absolute value (and no
#: difference of two such sums can leave Int64).
_NARROW_LIMIT = 2**62


def _narrow_units(side: pl.DataFrame) -> pl.DataFrame:
    """``side`` with its units (``_u``) as Int64 when its customers times its largest absolute units stay below
    :data:`_NARROW_LIMIT`: then every sum of them (a cell's, a class's, the total) and every difference of two
    such sums fits an Int64, and summing Int64 costs about half of Int128 (the cells, the combinations)."""
    if not side.height:
        return side
    low, high = side["_u"].min(), side["_u"].max()
    if low is None or max(-low, high) * side.height >= _NARROW_LIMIT:
        return side
    return side.with_columns(pl.col("_u").cast(pl.Int64))


def label_combos(side: pl.DataFrame, outputs: Sequence[tuple[str, Output]],
                 table: pl.DataFrame) -> pl.DataFrame | None:
    """One snapshot's customers and revenue units per combination of labels, from its :func:`cell_side` (``table``:
    the snapshot's table, for its labels): ``_rank_<k>`` (output ``k``'s label code, null: none), ``customers``
    and ``_u``, what :func:`engine.kpi.values_from_combos` and the class summary read (None without a label
    column)."""
    if not outputs:
        return None
    sums = [pl.len().cast(pl.Int64).alias("customers"), pl.col("_u").sum()]
    sizes = [len(_labels(table, o)) for _, o in outputs]
    if "_c" not in side.columns:
        return side.group_by([f"_r_{o.column}" for _, o in outputs]).agg(sums).rename(
            {f"_r_{o.column}": f"_rank_{k}" for k, (_, o) in enumerate(outputs)})
    strides, _ = _packing(sizes)
    combos = side.group_by("_c").agg(sums)
    ranks = [((pl.col("_c") // st) % (n + 1)) for n, st in zip(sizes, strides)]
    return combos.select(*[pl.when(r < n).then(r).alias(f"_rank_{k}") for k, (r, n) in enumerate(zip(ranks, sizes))],
                         "customers", "_u")


def pair_cells(earlier: pl.DataFrame, later: pl.DataFrame, later_table: pl.DataFrame,
               outputs: Sequence[tuple[str, Output]]) -> dict[str, tuple[list[str], pl.DataFrame]]:
    """The cells of every label column's matrix between two snapshots, from their :func:`cell_side`
    (``later_table``: the later snapshot's table, for its labels), by column."""
    columns = [o.column for _, o in outputs]
    packed = "_c" in later.columns
    if packed != ("_c" in earlier.columns):
        raise ValueError("pair_cells: the two sides are not packed alike")

    def tagged(frame: pl.DataFrame, tag: str) -> pl.DataFrame:
        return frame.rename({"_u": f"_u_{tag}", **({"_c": f"_c_{tag}"} if packed else
                                                   {f"_r_{c}": f"_r_{tag}_{c}" for c in columns})})

    out = {}
    pair = _aligned(tagged(earlier, "from"), tagged(later, "to"))
    columns_ = [(output.column, _labels(later_table, output)) for _, output in outputs]
    sums = [pl.len().cast(pl.Int64).alias("customers"), pl.col("_u_from").sum().alias("_uf"),
            pl.col("_u_to").sum().alias("_ut")]
    combos = strides = None
    if packed:
        # both snapshots' codes as one key (a customer missing on one side has no label there): one group_by
        # over the customers per pair of snapshots, then each column from the combinations seen
        strides, size = _packing([len(labels) for _, labels in columns_])
        none = size - 1  # every rank at its label count: no label in any column
        combos = pair.group_by((pl.col("_c_from").fill_null(none) * size + pl.col("_c_to").fill_null(none))
                               .alias("_key")).agg(sums)
    for k, (c, labels) in enumerate(columns_):
        n = len(labels)
        if combos is not None:
            rank_from = (pl.col("_key") // size // strides[k]) % (n + 1)
            rank_to = (pl.col("_key") % size // strides[k]) % (n + 1)
            counted = combos.group_by((rank_from * (n + 1) + rank_to).alias("_code")).agg(
                pl.col("customers").sum(), pl.col("_uf").sum(), pl.col("_ut").sum())
        else:  # too many combinations to pack: one group_by per column
            code = (pl.col(f"_r_from_{c}").fill_null(n) * (n + 1) + pl.col(f"_r_to_{c}").fill_null(n))
            counted = pair.group_by(code.alias("_code")).agg(sums)
        cells = counted.select(
            pl.when(pl.col("_code") // (n + 1) < n).then(pl.col("_code") // (n + 1)).alias("_rank_from"),
            pl.when(pl.col("_code") % (n + 1) < n).then(pl.col("_code") % (n + 1)).alias("_rank_to"),
            "customers", "_uf", "_ut")
        grid = pl.DataFrame({"_rank_from": [r for r in [*range(n), None] for _ in range(n + 1)],
                             "_rank_to": [t for _ in range(n + 1) for t in [*range(n), None]]},
                            schema={"_rank_from": pl.Int64, "_rank_to": pl.Int64})
        full = grid.join(cells, on=["_rank_from", "_rank_to"], how="left", nulls_equal=True,
                         maintain_order="left")
        out[c] = (labels, full.with_columns(pl.col("customers").fill_null(0), pl.col("_uf").fill_null(0),
                                            pl.col("_ut").fill_null(0)))
    return out


def migration_table(tables: Sequence[pl.DataFrame], dates: Sequence[dt.date],
                    outputs: Sequence[tuple[str, Output]], *, cells: Mapping | None = None) -> pl.DataFrame:
    """The transition matrix of each label column between consecutive snapshots, as a long table.

    One row per (column, pair of snapshots, ``from``, ``to``), every cell
    present (zeros included): ``from`` is a label or ``entered``, ``to`` a
    label or ``left``; ``from_rank`` / ``to_rank`` the labels' positions (0 =
    best; null for entered / left). ``customers`` counts them, ``row_share`` is
    their share of the ``from`` row, ``revenue_from`` / ``revenue_to`` their
    net revenue as of each snapshot, ``period_revenue`` the difference.

    >>> import polars as pl, datetime as dt
    >>> from engine import Output
    >>> out = Output("tier", "t", labels=("hi", "lo"))
    >>> e = pl.Enum(["hi", "lo"])
    >>> t0 = pl.DataFrame({"customer_id": [1, 2], "tier": pl.Series(["hi", "lo"], dtype=e), "monetary": [9.0, 1.0]})
    >>> t1 = pl.DataFrame({"customer_id": [1, 2, 3], "tier": pl.Series(["lo", "lo", "hi"], dtype=e),
    ...                    "monetary": [9.0, 2.0, 5.0]})
    >>> m = migration_table([t0, t1], [dt.date(2024, 1, 1), dt.date(2024, 4, 1)], [("x", out)])
    >>> m.filter(pl.col("customers") > 0).select("from", "to", "customers").rows()
    [('hi', 'lo', 1), ('lo', 'lo', 1), ('entered', 'hi', 1)]
    """
    cells = cells if cells is not None else migration_cells(tables, outputs)
    frames = []
    for i in range(1, len(tables)):
        for name, output in outputs:
            labels, full = cells[(i, output.column)]
            n = len(labels)
            names = pl.Series(labels, dtype=pl.String)
            share = pl.col("customers") / pl.col("customers").sum().over("_rank_from")
            frames.append(full.select(
                pl.lit(name).alias("classifier"), pl.lit(output.column).alias("column"),
                pl.lit(dates[i - 1]).alias("from_as_of"), pl.lit(dates[i]).alias("to_as_of"),
                pl.when(pl.col("_rank_from").is_null()).then(pl.lit(ENTERED))
                .otherwise(pl.col("_rank_from").replace_strict(range(n), names, default=None)).alias("from"),
                pl.when(pl.col("_rank_to").is_null()).then(pl.lit(LEFT))
                .otherwise(pl.col("_rank_to").replace_strict(range(n), names, default=None)).alias("to"),
                pl.col("_rank_from").alias("from_rank"), pl.col("_rank_to").alias("to_rank"),
                "customers", share.fill_nan(None).alias("row_share"),
                to_amount(pl.col("_uf")).alias("revenue_from"), to_amount(pl.col("_ut")).alias("revenue_to"),
                to_amount(pl.col("_ut") - pl.col("_uf")).alias("period_revenue"),
            ).cast(MIGRATION_SCHEMA))
    return pl.concat(frames) if frames else pl.DataFrame(schema=MIGRATION_SCHEMA)


FLOWS_SCHEMA = {"classifier": pl.String, "column": pl.String, "from_as_of": pl.Date, "to_as_of": pl.Date,
                "label": pl.String, "rank": pl.Int64, "customers_from": pl.Int64, "customers_to": pl.Int64,
                "stayed": pl.Int64, "moved_up": pl.Int64, "moved_down": pl.Int64, "left": pl.Int64,
                "came_down": pl.Int64, "came_up": pl.Int64, "entered": pl.Int64, "net_flow": pl.Int64,
                "revenue_moved_down": pl.Float64, "period_revenue_moved_down": pl.Float64}


def flows_table(tables: Sequence[pl.DataFrame], dates: Sequence[dt.date],
                outputs: Sequence[tuple[str, Output]], *, cells: Mapping | None = None) -> pl.DataFrame:
    """Per label column, pair of consecutive snapshots and class: where its customers went and came from.

    ``customers_from`` (in the class at ``t-1``) = ``stayed`` + ``moved_up`` +
    ``moved_down`` + ``left``; ``customers_to`` (in it at ``t``) = ``stayed`` +
    ``came_down`` (from a better class) + ``came_up`` (from a worse one) +
    ``entered``; ``net_flow`` = ``customers_to - customers_from``.
    ``revenue_moved_down`` is the net revenue, as of ``t-1``, of the customers
    who moved down out of the class; ``period_revenue_moved_down`` what they
    brought between the two snapshots. Computed from the matrix's cells.
    """
    cells = cells if cells is not None else migration_cells(tables, outputs)
    frames = []
    for i in range(1, len(tables)):
        for name, output in outputs:
            labels, full = cells[(i, output.column)]
            cells_ = full.select("_rank_from", "_rank_to", "customers", "_uf", "_ut").rows()
            rows = []
            for r, label in enumerate(labels):  # a few dozen cells: plain Python, no query per class
                c = dict.fromkeys(("customers_from", "customers_to", "stayed", "moved_up", "moved_down", "left",
                                   "came_down", "came_up", "entered", "_ud", "_pd"), 0)
                for f, t, n, uf, ut in cells_:
                    if f == r:
                        c["customers_from"] += n
                        key = "stayed" if t == r else "left" if t is None else "moved_up" if t < r else "moved_down"
                        c[key] += n
                        if key == "moved_down":
                            c["_ud"] += uf
                            c["_pd"] += ut - uf
                    if t == r:
                        c["customers_to"] += n
                        if f != r:
                            c["entered" if f is None else "came_down" if f < r else "came_up"] += n
                rows.append({"classifier": name, "column": output.column, "from_as_of": dates[i - 1],
                             "to_as_of": dates[i], "label": label, "rank": r,
                             **{k: v for k, v in c.items() if not k.startswith("_")},
                             "net_flow": c["customers_to"] - c["customers_from"], "_ud": c["_ud"], "_pd": c["_pd"]})
            frame = pl.DataFrame(rows, schema_overrides={"_ud": pl.Int128, "_pd": pl.Int128})
            frames.append(frame.with_columns(to_amount(pl.col("_ud")).alias("revenue_moved_down"),
                                             to_amount(pl.col("_pd")).alias("period_revenue_moved_down"))
                          .select(list(FLOWS_SCHEMA)).cast(FLOWS_SCHEMA))
    return pl.concat(frames) if frames else pl.DataFrame(schema=FLOWS_SCHEMA)


def with_previous(current: pl.DataFrame, previous: pl.DataFrame, selections: Sequence[Any]) -> pl.DataFrame:
    """``current`` with ``<label>_prev`` and ``<label>_change`` for every label column (rules read them).

    ``<label>_prev`` is the customer's label in ``previous`` (null when they
    were not in it, or had no label), with the same labels; ``<label>_change``
    is ``up``, ``same`` or ``down`` (by the labels' order, best first),
    ``entered`` (no label before, one now), ``left`` (a label before, none now)
    or null (no label either time).
    """
    outputs = label_outputs(selections)
    if not outputs:
        return current
    prev = previous.select("customer_id", *[pl.col(o.column).alias(o.column + PREV_SUFFIX) for _, o in outputs])
    # the earlier labels lined up with ``current``'s rows, then added beside its columns (a join of the whole table
    # would copy every column of it)
    aligned = current.select("customer_id").join(prev, on="customer_id", how="left", maintain_order="left")
    joined = current.with_columns(aligned.drop("customer_id"))
    change = pl.Enum(list(CHANGES))
    exprs = []
    for _, o in outputs:
        now, before = pl.col(o.column).to_physical(), pl.col(o.column + PREV_SUFFIX).to_physical()
        exprs.append(
            pl.when(now.is_null() & before.is_null()).then(pl.lit(None, change))
            .when(before.is_null()).then(pl.lit(ENTERED, change))
            .when(now.is_null()).then(pl.lit(LEFT, change))
            .when(now < before).then(pl.lit("up", change))
            .when(now > before).then(pl.lit("down", change))
            .otherwise(pl.lit("same", change)).alias(o.column + CHANGE_SUFFIX))
    return joined.with_columns(exprs)
