"""Writing a run's outputs (customers, actions, cut, summary) as one set."""

from __future__ import annotations

import contextvars
import io
import json
import time
from collections.abc import Callable, Container
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .evaluate import check_reconciliation, reconcile
from .spec import SNAPSHOT_OUTPUTS, Result

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


#: The columns the customers file gains: the action each customer got and the rule that gave it (null: none).
ACTION_COLUMNS = ("action", "action_rule")
#: Under ``hit_policy: all`` a customer's actions (and rules), in the order of actions.csv, joined by this.
JOIN = "; "


def with_actions(customers: pl.DataFrame, actions: pl.DataFrame, *, one_per_customer: bool = False) -> pl.DataFrame:
    """``customers`` with the action each got and its rule (null for a customer without one: no rule and no
    fallback, or cut by capacity). Several actions (``hit_policy: all``) are joined by ``"; "`` in the order of
    actions.csv (priority, then rule); actions.csv keeps one row per action.

    ``one_per_customer`` (``hit_policy: first``: a customer has at most one action) joins the actions as they
    are: the same columns, without grouping a million customers to join one text each (about 1.5 s of CPU
    at 1M customers, against 0.2 s)."""
    if one_per_customer:
        placed = _by_position(customers, actions)
        if placed is not None:
            return placed
        per_customer = actions.select("customer_id", pl.col("action").cast(pl.String).alias(ACTION_COLUMNS[0]),
                                      pl.col("rule").cast(pl.String).alias(ACTION_COLUMNS[1]))
    else:
        per_customer = actions.group_by("customer_id").agg(  # in any order: the join keeps the customers'
            pl.col("action").cast(pl.String).str.join(JOIN).alias(ACTION_COLUMNS[0]),
            pl.col("rule").cast(pl.String).str.join(JOIN).alias(ACTION_COLUMNS[1]))
    return customers.join(per_customer, on="customer_id", how="left", maintain_order="left", nulls_equal=True,
                          validate="1:1" if one_per_customer else "m:m")


def _by_position(customers: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame | None:
    """:func:`with_actions` for one action per customer without a join, when the customers' ids are sorted
    (the feature pass sorts them), each once, none null, and the actions' rule and action are Enums (as
    :func:`~engine.playbook.evaluate.evaluate_rules` builds them): each action's row is found by binary search,
    checked to hold that very id, and its codes are put there. None (the join does it) in every other case, and
    when two actions land on one customer, which the join refuses. At 1M customers 0.07 CPU-s against 0.18
    for the join (bench/RESULTS.md)."""
    ids, wanted = customers["customer_id"], actions["customer_id"]
    kinds = [actions.schema.get(c) for c in ("action", "rule")]
    if (not actions.height or not all(isinstance(k, pl.Enum) for k in kinds) or ids.dtype != wanted.dtype
            or not ids.flags["SORTED_ASC"] or ids.null_count() or wanted.null_count()
            or any(c in customers.columns for c in ACTION_COLUMNS)):
        return None
    if (ids.slice(1) == ids.slice(0, ids.len() - 1)).any():  # sorted: an id twice sits next to itself
        return None
    rows = _rows_of(ids, wanted)
    if rows is None or rows.null_count() or rows.max() >= ids.len() or not (ids.gather(rows) == wanted).all():
        return None
    columns = []
    for name, source in zip(ACTION_COLUMNS, ("action", "rule")):
        codes = pl.repeat(None, customers.height, dtype=pl.UInt32, eager=True)
        codes = codes.scatter(rows, actions[source].to_physical())
        if codes.null_count() != customers.height - actions.height:  # two actions of one customer (or a null)
            return None
        columns.append(actions.schema[source].categories.gather(codes).alias(name))
    return customers.with_columns(columns)


#: Integer ids spread over at most this many times their number (plus a little) are found through a table indexed
#: by the id (4 bytes per id of the span) instead of by binary search.
_SPREAD = 4


def _rows_of(ids: pl.Series, wanted: pl.Series) -> pl.Series | None:
    """The row of each ``wanted`` id among ``ids`` (sorted, distinct, no null): a row, a null or a row holding another
    id where an id is not there, for the caller to check. Integer ids not spread far beyond their number (the feature
    pass's are their range, a file's usually) through a table indexed by the id: at 1M customers 0.01 CPU-s against
    0.05 for the binary search; None when a wanted id lies outside the ids' range."""
    if ids.dtype in _TO_INT64 and ids.len():
        lo, hi = ids[0], ids[-1]
        if hi - lo < _SPREAD * ids.len() + 1024:
            if wanted.len() and (wanted.min() < lo or wanted.max() > hi):
                return None
            table = pl.repeat(None, hi - lo + 1, dtype=pl.UInt32, eager=True)
            table = table.scatter(ids.cast(pl.Int64) - lo, pl.int_range(ids.len(), dtype=pl.UInt32, eager=True))
            return table.gather(wanted.cast(pl.Int64) - lo)
    return ids.search_sorted(wanted, side="left")


_TO_INT64 = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def write_outputs(pb: Playbook, result: Result, *, force: bool) -> dict[str, Path]:
    """Write every output as one set: all of them change together, or (on any failure) none does.

    See :func:`engine.io.write_output_set`: the files are written into a new
    generation inside the output directory and switched in by one rename. The
    summary gets the run's ``manifest`` (:mod:`~engine.playbook.manifest`), with
    the size and SHA-256 of each file written beside it. Unless ``force``, outputs
    of another playbook, or outputs that no longer match their manifest, are not
    replaced (:func:`~engine.playbook.manifest.check_replace`, under the
    directory's lock).
    """
    from ..io import write_output_set
    from .manifest import build_manifest, check_replace, output_hashes

    paths = pb.output_paths()
    control = result.control if result.control is not None else _no_control(result.actions)
    customers = with_actions(result.customers, result.actions, one_per_customer=pb.hit_policy == "first")
    frames = {"customers": customers, "actions": result.actions,
              "cut": result.cut, "control": control}
    writers = {}
    started = time.perf_counter()
    rr = result.rule_result
    positions = rr.action_positions if rr is not None and rr.actions is result.actions else None
    for key, path in paths.items():
        if key == "actions":
            writers[path.name] = lambda tmp, frame=frames[key]: _write_actions(frame, positions, tmp)
        elif key != "summary":
            writers[path.name] = lambda tmp, frame=frames[key]: _write_frame(frame, tmp)
    if result.snapshots is not None:
        encoded = getattr(result.snapshots, "encoded", None) or {}
        for name, frame in snapshot_frames(result.snapshots, skip=encoded).items():
            if name in encoded:  # encoded while the rules ran (encode_snapshot_files): its bytes
                writers[name] = lambda tmp, done=encoded[name]: tmp.write_bytes(done.result().getbuffer())
            else:
                writers[name] = lambda tmp, frame=frame: _write_frame(frame, tmp)
            paths[Path(name).stem] = pb.output_dir / name
    customers_name = paths["customers"].name
    others = list(writers)  # every file before the summary, which is written last and lists them
    manifest = build_manifest(pb, result)
    # What reads the files back runs on a thread of its own while the main thread writes the next file (reading
    # and hashing let go of the GIL): the check of the previous outputs (SHA-256 of each), each new file's size
    # and SHA-256 once it is written, the read-back of the customers file. The summary, written last, waits for
    # them; write_output_set holds the directory's lock throughout and switches nothing in before the summary.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierbook-check")
    done: dict[str, Future] = {}

    def submit(fn: Callable[..., Any], *args: Any) -> Future:  # in the caller's context: its words for options
        return pool.submit(contextvars.copy_context().run, fn, *args)

    def then_read(name: str, write: Callable[[Path], None]) -> Callable[[Path], None]:
        def run(tmp: Path) -> None:
            write(tmp)
            if name == customers_name:  # the reconciliation again, against the file as written (read from disk)
                done["reconciliation"] = submit(
                    lambda: reconcile(result.report, _read_back(tmp), f"the written {customers_name}"))
            done[name] = submit(output_hashes, tmp.parent, [name])
        return run

    writers = {name: then_read(name, write) for name, write in writers.items()}

    def write_summary(tmp: Path) -> None:
        done["previous"].result()  # outputs that may not be replaced: refused, nothing switched in
        rec = done["reconciliation"].result()
        check_reconciliation(rec)
        manifest["durations_s"]["write_outputs"] = round(time.perf_counter() - started, 3)
        manifest["outputs"] = {name: done[name].result()[name] for name in others}
        summary = {**result.summary, "reconciliation": rec, "manifest": manifest}
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")

    def check_previous() -> None:  # under the directory's lock, before anything is written
        done["previous"] = submit(check_replace, pb, paths["summary"].name, force)

    writers[paths["summary"].name] = write_summary
    retire = [name for name in SNAPSHOT_OUTPUTS.values() if name not in writers]  # an earlier run's snapshot files
    try:
        write_output_set(pb.output_dir, writers, retire=retire,
                         owner=str(Path(pb.path).resolve()) if pb.path else None,
                         manifest={"playbook": str(pb.path), "name": pb.name, "as_of": str(result.as_of)},
                         before=check_previous)
    finally:
        pool.shutdown(wait=True)  # on a failure too: nothing still reads the generation write_output_set removed
    return paths


def encode_snapshot_files(snaps) -> None:
    """Start encoding ``snapshots.parquet`` (every snapshot's labels, the largest file a run with snapshots
    adds: 3.8M rows at 1M customers and eight quarters) on a thread of its own, as :func:`write_outputs`
    would write it; :func:`write_outputs` then writes its bytes (a failure is raised there, as a write's).

    Called as soon as the snapshots are classified, so the encoding runs while the rules are applied to the
    last snapshot, not after them: about 0.3 s of a run's wall time at that size on two cores."""
    from concurrent.futures import ThreadPoolExecutor

    name = SNAPSHOT_OUTPUTS["snapshots"]
    frame = _long_snapshots(snaps)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierbook-encode")
    snaps.encoded = {name: pool.submit(_encoded, frame, Path(name))}
    pool.shutdown(wait=False)  # the thread ends when its one piece of work is done


def _encoded(frame: pl.DataFrame, name: Path) -> io.BytesIO:
    """``frame`` as :func:`_write_frame` writes it to a file called ``name``, in memory."""
    from ..io import output_format, write_frame

    buffer = io.BytesIO()
    write_frame(frame, buffer, output_format(name))
    return buffer


def _long_snapshots(snaps) -> pl.DataFrame:
    """``snapshots.parquet``'s table: one row per snapshot and customer."""
    from ..migration import label_outputs

    labels = [o.column for _, o in label_outputs(snaps.selections)]
    return pl.concat([t.select(pl.lit(d).alias("as_of"), "customer_id", "monetary", *labels)
                      for d, t in zip(snaps.as_of, snaps.customers)])


def snapshot_frames(snaps, skip: Container[str] = ()) -> dict[str, pl.DataFrame | None]:
    """The files a run with snapshots adds (:data:`~engine.playbook.spec.SNAPSHOT_OUTPUTS`), by file name.

    ``snapshots.parquet`` is long: one row per snapshot and customer (``as_of``,
    ``customer_id``, ``monetary`` and every label column); ``kpis.csv`` has one
    figure a row with its definition beside it. A file named in ``skip`` (encoded already) keeps its place,
    with None for its frame: its table is not made again.
    """
    from ..kpi import kpi_long

    frames = {"snapshots": lambda: _long_snapshots(snaps), "migration": lambda: snaps.migration,
              "flows": lambda: snaps.flows, "kpis": lambda: kpi_long(snaps.kpis), "cohorts": lambda: snaps.cohorts,
              "values": lambda: snaps.values}
    return {SNAPSHOT_OUTPUTS[k]: None if SNAPSHOT_OUTPUTS[k] in skip else make() for k, make in frames.items()}


def _no_control(actions: pl.DataFrame) -> pl.DataFrame:
    """control.csv's columns, no row (a result built without holdouts)."""
    return pl.DataFrame(schema={"customer_id": actions.schema["customer_id"], "rule": pl.String, "group": pl.String,
                                "holdout": pl.String, "bucket": pl.UInt64})


def _read_back(path: Path) -> pl.DataFrame:
    """``customer_id`` and ``monetary`` of a written customers file, as the file holds them."""
    fmt = path.suffix.lower()
    if fmt == ".parquet":
        return pl.read_parquet(path, columns=["customer_id", "monetary"])
    if fmt == ".csv":
        return pl.read_csv(path, columns=["customer_id", "monetary"], schema_overrides={"customer_id": pl.String})
    if fmt == ".xlsx":
        return pl.read_excel(path, columns=["customer_id", "monetary"])
    frame = pl.read_json(path) if fmt == ".json" else pl.read_ndjson(path)
    return frame.select("customer_id", "monetary")


def _write_frame(frame: pl.DataFrame, path: Path) -> None:
    """One output frame in the format of its suffix (``path`` is a temporary file of the output set)."""
    from ..io import write_frame

    write_frame(frame, path)  # Parquet with snappy, as every Parquet output (engine.io.write_frame)


#: The dtypes whose equal values are always written as the same text (a float's -0.0 equals 0.0 but is written
#: otherwise), so equal rows are equal lines of a CSV.
_SAME_TEXT = (pl.Enum, pl.String, pl.Date, pl.Boolean)


def _write_actions(actions: pl.DataFrame, positions: pl.Series | None, path: Path) -> None:
    """actions.csv: by :func:`_actions_csv_by_rule` when it applies, otherwise as every output."""
    if not _actions_csv_by_rule(actions, positions, path):
        _write_frame(actions, path)


def _actions_csv_by_rule(actions: pl.DataFrame, positions: pl.Series | None, path: Path) -> bool:
    """Write ``actions`` as CSV at ``path`` byte for byte as :func:`engine.io.write_frame` does, each rule's columns
    rendered once; False (nothing written) where that does not apply.

    Every column but ``customer_id`` of an action is its rule's (``positions``: each action's rule, as
    :func:`~engine.playbook.evaluate.evaluate_rules` gives them): the line of an action is its id and the text
    of its rule's columns, rendered by the same writer for one action of each rule. That every action holds its
    rule's values is checked, not assumed; the ids must be integers (never quoted, never a formula) in the first
    column and the other columns of dtypes whose equal values are equal text. About 0.08 CPU-s against 0.16 for
    actions.csv at 873K actions (bench/RESULTS-notes.md).
    """
    from ..io import flatten_nested, neutralise_formulas, output_format

    rest = [c for c in actions.columns if c != "customer_id"]
    if (output_format(path) != "csv" or positions is None or positions.len() != actions.height
            or not actions.height or positions.null_count() or actions.columns[0] != "customer_id"
            or not actions.schema["customer_id"].is_integer()
            or not all(isinstance(actions.schema[c], _SAME_TEXT) or actions.schema[c].is_integer() for c in rest)):
        return False
    first = positions.arg_unique()  # one action of each rule
    codes = positions.gather(first).cast(pl.Int64).to_list()
    if min(codes) < 0:
        return False
    lookup = [0] * (max(codes) + 1)
    for i, code in enumerate(codes):
        lookup[code] = i
    which = pl.Series(lookup, dtype=pl.UInt32).gather(positions)  # each action's row among the rendered ones
    rendered = actions[first]
    for c in rest:
        if not actions[c].eq_missing(rendered[c].gather(which)).all():
            return False
    texts = []
    for i in range(rendered.height):  # "<id>,<the rule's columns>\n"
        line = neutralise_formulas(flatten_nested(rendered.slice(i, 1))).write_csv(include_header=False)
        texts.append(line[line.index(",") + 1:].removesuffix("\n"))
    kinds = list(dict.fromkeys(texts))
    tail = pl.Series("_rule_text", [kinds.index(t) for t in texts], dtype=pl.UInt32).gather(which)
    tail = pl.Series("_rule_text", kinds, dtype=pl.Enum(kinds)).gather(tail)
    with open(path, "wb") as fh:
        fh.write(neutralise_formulas(flatten_nested(actions.head(0))).write_csv().encode("utf-8"))
        pl.DataFrame([actions["customer_id"], tail]).write_csv(fh, include_header=False, quote_style="never")
    return True
