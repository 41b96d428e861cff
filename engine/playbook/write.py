"""Writing a run's outputs (customers, actions, cut, summary) as one set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from .evaluate import check_reconciliation, reconcile
from .spec import SNAPSHOT_OUTPUTS, Result

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


def write_outputs(pb: Playbook, result: Result) -> dict[str, Path]:
    """Write every output as one set: all of them change together, or (on any failure) none does.

    See :func:`engine.io.write_output_set`: the files are written into a new
    generation inside the output directory and switched in by one rename.
    """
    from ..io import write_output_set

    paths = pb.output_paths()
    control = result.control if result.control is not None else _no_control(result.actions)
    frames = {"customers": result.customers, "actions": result.actions, "cut": result.cut, "control": control}
    writers = {}
    for key, path in paths.items():
        if key != "summary":
            writers[path.name] = lambda tmp, frame=frames[key]: _write_frame(frame, tmp)
    customers_name = paths["customers"].name

    def write_summary(tmp: Path) -> None:
        # The reconciliation again, now against the customers file as written (read back from disk).
        written = _read_back(tmp.parent / customers_name)
        rec = reconcile(result.report, written, f"the written {customers_name}")
        check_reconciliation(rec)
        summary = {**result.summary, "reconciliation": rec}
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")

    writers[paths["summary"].name] = write_summary
    if result.snapshots is not None:
        for name, frame in snapshot_frames(result.snapshots).items():
            writers[name] = lambda tmp, frame=frame: _write_frame(frame, tmp)
            paths[Path(name).stem] = pb.output_dir / name
    retire = [name for name in SNAPSHOT_OUTPUTS.values() if name not in writers]  # an earlier run's snapshot files
    write_output_set(pb.output_dir, writers, retire=retire,
                     manifest={"playbook": str(pb.path), "name": pb.name, "as_of": str(result.as_of)})
    return paths


def snapshot_frames(snaps) -> dict[str, pl.DataFrame]:
    """The files a run with snapshots adds (:data:`~engine.playbook.spec.SNAPSHOT_OUTPUTS`), by file name.

    ``snapshots.parquet`` is long: one row per snapshot and customer (``as_of``,
    ``customer_id``, ``monetary`` and every label column); ``kpis.csv`` has one
    figure a row with its definition beside it.
    """
    from ..kpi import kpi_long
    from ..migration import label_outputs

    labels = [o.column for _, o in label_outputs(snaps.selections)]
    long = pl.concat([t.select(pl.lit(d).alias("as_of"), "customer_id", "monetary", *labels)
                      for d, t in zip(snaps.as_of, snaps.customers)])
    frames = {"snapshots": long, "migration": snaps.migration, "flows": snaps.flows, "kpis": kpi_long(snaps.kpis),
              "cohorts": snaps.cohorts, "values": snaps.values}
    return {SNAPSHOT_OUTPUTS[k]: v for k, v in frames.items()}


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

    if path.suffix.lower() == ".parquet":
        # Snappy: half zstd's time on the customer table (1M rows x 18 columns), ~1.4x its size.
        frame.write_parquet(path, compression="snappy")
    else:
        write_frame(frame, path)
