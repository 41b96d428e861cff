"""The feature pass on Apache Spark (``engine: spark`` in a playbook, ``--engine spark`` on the command line).

Spark reads the transactions from Parquet (a file, a directory of files, a
glob, a partitioned dataset), computes every built-in feature of
:data:`engine.feature_table.FEATURES` and the bookkeeping of every row (why a
row is not used, the default ``as_of``, the reconciliation figures) in one
grouped aggregation, and hands one row per customer to the driver through
Arrow. From there :mod:`engine.features` finishes the customer table exactly
as for the Polars pass (the derived features, the customer table, the report),
and the classifiers, rules and outputs run as always. See
docs/decisions/0010-spark-feature-pass.md.

A plugin's own features (``Feature(agg=...)``, ``Feature(table=...)``: Polars
code) and the snapshot pass (:class:`SparkSource`) run on the executors as
they are, with Polars, on the rows of each customer gathered in one partition
(:func:`_per_customer`); :func:`rejected_rows_spark` gives the rows not used
(``--rejects``) as :func:`engine.features.rejected_rows` does.

Limits: the input is Parquet with numeric amounts (text amounts are refused
with a hint); ``order_date`` is a date, a timestamp or text, text read as the
Polars reader reads it (the same formats decided the same way, the same
errors; see :class:`_TextDates`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import glob
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .classifier import Feature
from .data import _MAX_AMOUNT, AMOUNT_SCALE, Transactions, _resolve_columns, header_note, parse_mapping
from .errors import DataError
from .feature_table import FEATURES, Agg
from .features import PLUGIN_ROW_COLUMNS, owners_of, plugin_table_queries, to_amount

__all__ = ["SparkSettings", "check_available", "compute_features_spark", "empty_frame", "parquet_files",
           "rejected_rows_spark", "spark_session", "spark_source", "SparkSource"]

INSTALL_PYSPARK = "pip install 'tierbook[spark]'"
INSTALL_JAVA = "apt-get install openjdk-17-jre-headless (Debian/Ubuntu), or set JAVA_HOME to a Java 17+ runtime"
#: Settings tierbook gives every session it starts (a playbook's ``spark.config`` may override them):
#: timestamps become days in UTC, as Polars reads them; no web UI.
DEFAULT_CONFIG = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
                  "spark.ui.showConsoleProgress": "false"}


@dataclass(frozen=True)
class SparkSettings:
    """Where the Spark pass runs: the master URL and extra session configuration."""

    master: str = "local[*]"
    config: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any] | None) -> SparkSettings:
        value = dict(value or {})
        config = {str(k): str(v) for k, v in dict(value.get("config") or {}).items()}
        return cls(master=str(value.get("master") or "local[*]"), config=config)


@functools.lru_cache(maxsize=4)
def _java_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major   # "1.8.0" is Java 8


def check_available(settings: SparkSettings) -> None:
    """Refuse at once, in one line, when pyspark, Java or the master is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise DataError(f"the spark engine needs pyspark, which is not installed: {INSTALL_PYSPARK}") from None
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(f"the spark engine needs pyarrow, which is not installed: {INSTALL_PYSPARK}") from None
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        where = f"JAVA_HOME={home} has no bin/java" if home else "no java on PATH and no JAVA_HOME"
        raise DataError(f"the spark engine needs a Java runtime (17 or later) and found none ({where}): "
                        f"{INSTALL_JAVA}")
    version = _java_version(java)
    if version is None or version < 17:
        shown = "an unknown version" if version is None else f"Java {version}"
        raise DataError(f"the spark engine needs Java 17 or later; {java} is {shown}: {INSTALL_JAVA}")
    master = settings.master
    if master.startswith("spark://"):
        for host_port in master.removeprefix("spark://").split(","):
            host, _, port = host_port.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as exc:
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise DataError(f"spark master {master} cannot be reached ({host_port}: {why}); start it or give "
                                f"another spark.master (local[2] runs Spark in this process)") from None
    elif not (master.startswith("local") or master.startswith(("yarn", "k8s://", "mesos://"))):
        raise DataError(f"spark master {master!r} is not a master URL: use local[N], spark://HOST:PORT, yarn or "
                        f"k8s://...")


def spark_session(settings: SparkSettings):
    """The active SparkSession, or a new one for ``settings`` (tierbook's defaults under the given config)."""
    check_available(settings)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master).appName("tierbook")
    if settings.master.startswith("local") and "spark.pyspark.python" not in settings.config:
        # plugin features run in Python workers: in this process's Python (its Polars and plugins), not the
        # first python3 on PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**DEFAULT_CONFIG, **settings.config}.items():
        builder = builder.config(key, value)
    try:
        with _quiet_pandas_note():
            session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start, or the master refused the application
        raise DataError(f"spark session for master {settings.master} could not start: {_first_line(exc)}") from None
    session.sparkContext.setLogLevel("ERROR")
    return session


@contextlib.contextmanager
def _quiet_pandas_note():
    """pyspark warns that it does not fully support pandas 3 when it checks for pandas; tierbook's Spark
    path uses Arrow, not pandas, so the note only confuses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        yield


def _read(data: str | Path | Sequence[str | Path], settings: SparkSettings):
    """``(where, files, df)``: the Parquet transactions opened on Spark, after the checks every Spark route
    makes first (pyspark, pyarrow, Java and the master; files that match; the same columns in each)."""
    where = str(data) if isinstance(data, (str, Path)) else ", ".join(map(str, data))
    check_available(settings)  # before anything else
    paths, files = parquet_files(data)
    _check_same_columns(files, where)
    session = spark_session(settings)
    try:
        df = session.read.parquet(*paths)
    except Exception as exc:
        raise DataError(f"{where}: spark cannot read the Parquet data: {_first_line(exc)}") from None
    return where, files, df


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def parquet_files(data: str | Path | Sequence[str | Path]) -> tuple[list[str], list[Path]]:
    """The paths to give Spark, and the local Parquet files they hold (checked: each path matches files).

    A directory is passed as it is (Spark discovers ``key=value`` partition
    directories in it); a glob is expanded here, so a pattern matching nothing
    is named. Remote paths (``s3a://`` ...) are passed to Spark unchecked.
    """
    items = [data] if isinstance(data, (str, Path)) else list(data)
    if not items:
        raise DataError("no transaction paths given")
    paths, files = [], []
    for item in items:
        text = str(item)
        if _is_remote(text):
            paths.append(text)
            continue
        text = text.removeprefix("file://")
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise DataError(f"{text}: no file matches this pattern")
            for match in matches:
                paths.append(match)
                files.extend(_files_in(Path(match), text))
            continue
        path = Path(text)
        if not path.exists():
            raise DataError(f"{text}: no such file or directory")
        paths.append(text)
        files.extend(_files_in(path, text))
    return paths, files


def _files_in(path: Path, shown: str) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.parquet")
                       if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts))
        if not found:
            raise DataError(f"{shown}: the directory holds no Parquet files (*.parquet)")
        return found
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise DataError(f"{shown}: the spark engine reads Parquet (.parquet); convert the file, or use the polars "
                        f"engine")
    return [path]


def empty_frame(data: str | Path | Sequence[str | Path]) -> pl.LazyFrame:
    """An empty frame with the columns of the first Parquet file (validation reads no row).

    ``key=value`` directories between a given directory and that file are
    partition columns (text here; Spark infers their type).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"the spark engine needs pyarrow, which is not installed: {INSTALL_PYSPARK}") from None

    paths, files = parquet_files(data)
    if not files:  # remote paths: nothing to look at before Spark
        return pl.LazyFrame()
    try:
        schema = pl.from_arrow(pq.read_schema(files[0]).empty_table()).schema
    except Exception as exc:
        raise DataError(f"{files[0]}: cannot read as Parquet: {_first_line(exc)}") from None
    partitions = {}
    for given in paths:
        root = Path(given)
        if root.is_dir() and root in files[0].parents:
            partitions = {part.split("=", 1)[0]: pl.String() for part in files[0].relative_to(root).parts[:-1]
                          if "=" in part}
            break
    return pl.LazyFrame(schema={**schema, **{k: v for k, v in partitions.items() if k not in schema}})


def _zones(files: list[Path]) -> dict[str, str]:
    """The time zone of each zoned timestamp column of the first file (Arrow metadata Spark does not keep)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files:
        return {}
    schema = pq.read_schema(files[0])
    return {name: schema.field(name).type.tz for name in schema.names
            if pa.types.is_timestamp(schema.field(name).type) and schema.field(name).type.tz}


def _check_same_columns(files: list[Path], where: str) -> None:
    """Every file must have the first file's columns and types (partition columns are in the paths)."""
    import pyarrow.parquet as pq

    first = None
    for path in files:
        try:
            schema = pq.read_schema(path)
        except Exception as exc:
            raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None
        fields = {name: str(schema.field(name).type) for name in schema.names}
        if first is None:
            first = (path, fields)
            continue
        base_path, base = first
        missing = [c for c in base if c not in fields]
        extra = [c for c in fields if c not in base]
        retyped = [f"{c} ({base[c]} / {fields[c]})" for c in base if c in fields and base[c] != fields[c]]
        if missing or extra or retyped:
            parts = ([f"without {', '.join(missing)}"] if missing else []) + (
                [f"with {', '.join(extra)} as well"] if extra else []) + (
                [f"with other types: {', '.join(retyped)}"] if retyped else [])
            raise DataError(f"{where}: the Parquet files do not have the same columns: {path} differs from "
                            f"{base_path} ({'; '.join(parts)}); give files of one schema")


def _kind(dtype) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, T.DateType):
        return "date"
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return "timestamp"
    if isinstance(dtype, (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                          T.DecimalType)):
        return "number"
    return dtype.simpleString()


def _id_value(df, source: str):
    """An id column as the Polars reader takes it (engine.data: ``value_of``, ``_float_id``): an empty text is
    a missing id; a float id is one value per id (-0.0 is 0.0) and NaN is a missing id."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    col, dtype = F.col(f"`{source}`"), df.schema[source].dataType
    if isinstance(dtype, T.StringType):
        return F.when(F.length(col) > 0, col)
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        return F.when(~F.isnan(col), F.when(col == 0, F.lit(0.0).cast(dtype)).otherwise(col))
    return col


def _notes(cols: Mapping[str, str], mapping: Mapping[str, str], where: str, dates) -> list[str]:
    """The reader's notes: the columns taken by their headers, then how text dates are read."""
    return [n for n in (header_note(cols, mapping, where), dates.note if dates is not None else None) if n]


def _canonical(df, mapping: dict[str, str], where: str, files: list[Path], *, date_format: str | None = None,
               keep: Mapping[str, Any] | None = None):
    """``(frame, cols, dates)``: the canonical columns as Spark columns (customer_id, order_key, order_date,
    amount_units, the checks, ``_file`` and ``_index`` where each row is; the columns of ``keep``, name ->
    Spark column, carried along unchanged), the source columns, and how text dates are read (a
    :class:`_TextDates`; None for typed dates)."""
    from pyspark.sql import functions as F

    names = [n for n in df.schema.fieldNames() if not n.startswith("_metadata")]
    cols = _resolve_columns(pl.Schema({n: pl.String() for n in names}), mapping, where)
    kinds = {n: _kind(df.schema[n].dataType) for n in names}
    zones = _zones(files)

    date_src = cols["order_date"]
    dates = None
    if kinds[date_src] == "string":
        # read as the Polars reader reads text dates, by its own code (see _TextDates)
        dates = _text_dates(df, date_src, where, files, date_format)
        df = df.withColumn("_dates", _date_udf(dates, where)(F.col(f"`{date_src}`")))
        date = F.col("_dates.order_date")
    elif kinds[date_src] == "date":
        date = F.col(date_src)
    elif kinds[date_src] == "timestamp":
        # The day where the time was written, as Polars takes it: a zoned timestamp is shifted from UTC (the
        # session's zone) to its own zone first; a timestamp without a zone is a wall-clock time already.
        zone = (zones or {}).get(date_src)
        date = F.to_date(F.from_utc_timestamp(F.col(date_src), zone) if zone else F.col(date_src))
    else:
        raise DataError(f"{where}: column {date_src!r} (order_date) has type {kinds[date_src]}, expected dates "
                        f"(Parquet dates, timestamps or text)")

    def number(canonical: str):
        source = cols[canonical]
        if kinds[source] != "number":
            raise DataError(f"{where}: column {source!r} ({canonical}) has type {kinds[source]}, expected numbers "
                            f"(the spark engine reads typed Parquet columns)")
        return F.col(source).cast("double")

    if "amount" in cols:
        amount, raw = number("amount"), F.col(cols["amount"]).cast("string")
    else:
        amount = number("quantity") * number("unit_price")
        raw = F.format_string("%s x %s", F.col(cols["quantity"]), F.col(cols["unit_price"]))
    # NaN and the infinities compare above every number in Spark as in Polars: one flag for all three
    bad = F.coalesce(F.abs(amount) > F.lit(_MAX_AMOUNT), F.lit(False))
    # half to even, as Polars rounds; never cast a flagged amount (ANSI mode would stop on NaN)
    units = F.when(~bad, F.bround(amount * F.lit(AMOUNT_SCALE), 0).cast("long"))
    key = _id_value(df, cols["order_id"]) if "order_id" in cols else date
    checks = []
    if dates is not None:
        checks = [F.col(f"_dates.{flag}").alias(flag) for flag in _DATE_FLAGS] + [
            _id_value(df, date_src).cast("string").alias("_raw_order_date")]
    frame = df.select(_id_value(df, cols["customer_id"]).alias("customer_id"), key.alias("order_key"),
                      date.alias("order_date"), units.alias("amount_units"), bad.alias("_bad_amount"),
                      raw.alias("_raw_amount"), amount.alias("_amount_f"), *checks,
                      F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_index"),
                      *[column.alias(name) for name, column in (keep or {}).items()])
    return frame, cols, dates


# ----------------------------------------------------------------------------------------------- text dates
#
# A text order date is read on Spark as the Polars reader reads it, by the reader's own code (engine.data),
# not by a translation to Spark's date patterns: the column's format is decided once from the same evidence
# (the order of 01/02/2011-like dates from every value: ``date_evidence`` on each partition, the first of
# each by row over the partitions, then ``decide_date_order``), and each batch of the column is parsed by
# ``date_columns`` with Polars in the Python workers (an Arrow UDF). Where Polars infers the format itself,
# it takes it from the first value it knows a format for: that value of the whole column is put before each
# batch (and dropped after), so every batch reads the dates with the format the whole column would.

#: The flags the parse gives besides the date: a text that is no date, times with and without an offset.
_DATE_FLAGS = ("_bad_date", "_tz_aware", "_tz_naive")


@dataclass(frozen=True)
class _TextDates:
    """How a text order date column is read: the reader's decision, taken once for the whole column."""

    source: str
    date_format: str | None                 # given (--date-format / data.date_format)
    order: str | None                       # decided: "day-first" or "month-first" (engine.data.date_evidence)
    formats: tuple[str, ...]                # the formats of that order
    lead: str | None                        # format inferred by Polars: the value it infers it from
    note: str | None                        # what the reader tells the user (the order and why)
    tallies: tuple[str, ...]                # flags counted, not located (times with and without an offset)


def _text_dates(df, source: str, where: str, files: list[Path], date_format: str | None) -> _TextDates:
    """Decide how ``source`` (text) is read, from the evidence of every partition (one Spark job)."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from .data import DATE_EVIDENCE, date_columns, decide_date_order

    tallies = date_columns(pl.col("d"), pl.String(), date_format=date_format, where=where, source=source)[1]
    if date_format is not None:
        return _TextDates(source, date_format, None, (), None, None, tallies)
    names = (*DATE_EVIDENCE, "lead")
    schema = pa.schema([f for n in names for f in (pa.field(n, pa.string()), pa.field(n + "_row", pa.int64()))])
    task = functools.partial(_evidence_task, _offsets(files), schema)
    rows = df.select(F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_index"),
                     F.col(f"`{source}`").cast("string").alias("d"))
    ddl = ", ".join(f"{n} string, {n}_row long" for n in names)
    try:
        with _quiet_pandas_note():
            parts = pl.from_arrow(rows.mapInArrow(task, ddl).toArrow())
    except Exception as exc:
        raise DataError(f"{where}: the spark pass over the dates failed: {_plugin_error(exc)}") from None
    found: dict[str, Any] = {}
    for name in names:   # the first of each over the partitions, by row
        known = parts.filter(pl.col(name + "_row").is_not_null()).sort(name + "_row")
        found[name], found[name + "_row"] = (known[name][0], known[name + "_row"][0]) if known.height else (None, None)
    order, note, formats = decide_date_order(found, source, where=where, fmt="parquet", sheet=None)
    tallies = date_columns(pl.col("d"), pl.String(), date_format=None, where=where, source=source,
                           formats=formats)[1]
    return _TextDates(source, None, order, formats, None if formats else found["lead"], note, tallies)


def _offsets(files: list[Path]) -> dict[str, int]:
    """The 0-based row each local file starts at, rows numbered through the files in their listed order."""
    offsets, start = {}, 0
    for path in files:
        offsets[_file_key(str(path))] = start
        start += _row_count(path)
    return offsets


def _evidence_task(offsets: Mapping[str, int], schema, batches):
    """One partition's evidence (``_file``, ``_index``, ``d``: the raw text): :func:`engine.data.date_evidence`
    on its rows by row number, and ``lead``: its first value Polars infers a date format from (raw)."""
    import pyarrow as pa

    from .data import _text_dates as stripped
    from .data import date_evidence, inference_text, source_value

    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    frame = pl.from_arrow(pa.Table.from_batches(batches))
    start = {p: offsets.get(_file_key(p), 0) for p in frame["_file"].unique().to_list()}
    frame = frame.with_columns((pl.col("_file").replace_strict(start, return_dtype=pl.Int64)
                                + pl.col("_index").cast(pl.Int64)).alias("r")).sort("r")
    found = date_evidence(frame.lazy().select(stripped(pl.col("d")).alias("t"), "r")).collect().row(0, named=True)
    lead = _first_inferable(frame.select(inference_text(source_value(pl.col("d"), pl.String(), "order_date")))
                            .to_series())
    found["lead"], found["lead_row"] = (frame["d"][lead], frame["r"][lead]) if lead is not None else (None, None)
    yield pa.RecordBatch.from_pylist([found], schema=schema)


def _first_inferable(texts: pl.Series) -> int | None:
    """The position of the first text Polars infers a date format from (None: no such text).

    Polars reads a column without a format by the format of its first value that has a known one (others
    before it are no dates); a part of a column that holds such a value parses, one that holds only other
    values raises. Found by doubling, then halving, the part looked at: a few parses, not one per value.
    """
    def holds(n: int) -> bool:
        part = texts.head(n)
        if part.null_count() == part.len():
            return False
        try:
            part.str.to_datetime(strict=False, time_unit="us")
        except pl.exceptions.PolarsError:
            return False
        return True

    if not texts.len() or not holds(texts.len()):
        return None
    high = 1
    while not holds(high):
        high = min(2 * high, texts.len())
    low = high // 2   # holds(low) is False (or low is 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if holds(mid) else (mid, high)
    return high - 1


def _date_udf(dates: _TextDates, where: str):
    """The Arrow UDF that parses a batch of the text column: a struct of ``order_date`` and the flags."""
    from pyspark.sql.functions import arrow_udf

    fields = ", ".join(["order_date date", *[f"{flag} boolean" for flag in _DATE_FLAGS]])
    return arrow_udf(functools.partial(_parse_dates, dates, where), fields)


def _parse_dates(dates: _TextDates, where: str, values):
    """A batch of text dates parsed by the Polars reader's :func:`engine.data.date_columns`."""
    from .data import BAD_DATE, date_columns, source_value

    frame = pl.DataFrame({"d": pl.Series(pl.from_arrow(values)).cast(pl.String)})
    if dates.lead is not None:
        frame = pl.concat([pl.DataFrame({"d": [dates.lead]}, schema={"d": pl.String}), frame])
    exprs, _ = date_columns(source_value(pl.col("d"), pl.String(), "order_date"), pl.String(),
                            date_format=dates.date_format, where=where, source=dates.source, formats=dates.formats)
    out = frame.select(exprs).with_columns(BAD_DATE)
    out = out.select("order_date", *[pl.col(f) if f in out.columns else pl.lit(False).alias(f) for f in _DATE_FLAGS])
    return out.slice(1 if dates.lead is not None else 0).to_struct("dates").to_arrow()


@dataclass
class _SparkRows(Transactions):
    """The Polars reader's errors about dates (:meth:`Transactions.locate`, :meth:`Transactions.tally_error`)
    on the Spark rows: the same words; the row counted through the files in their listed order."""

    spark_frame: Any = None
    offsets: Mapping[str, int] = field(default_factory=dict)
    where: str = ""

    def describe(self) -> str:
        return self.where

    def _first_row(self, flag: str, canonical: str) -> tuple[int, Any]:
        from pyspark.sql import functions as F

        rows = self.spark_frame.filter(F.col(flag)).groupBy("_file").agg(
            F.min("_index").alias("i"), F.min_by(f"_raw_{canonical}", "_index").alias("v")).collect()
        return min((self.offsets.get(_file_key(r["_file"]), 0) + r["i"], r["v"]) for r in rows)


def _date_rows(frame, cols: Mapping[str, str], dates: _TextDates, data, where: str,
               files: list[Path]) -> _SparkRows:
    return _SparkRows(frame=pl.LazyFrame(), path=Path(where) if isinstance(data, (str, Path)) else None,
                      mapping=dict(cols), fmt="parquet", has_order_id="order_id" in cols,
                      checks={"_bad_date": "order_date"}, date_format=dates.date_format, tallies=dates.tallies,
                      date_order=dates.order, date_formats=dates.formats, spark_frame=frame,
                      offsets=_offsets(files), where=where)


def _check_dates(rows: _SparkRows | None, any_flag: Mapping[str, Any]) -> None:
    """The reader's error when a text date is no date (first) or times mix offsets (after the amounts)."""
    if rows is not None and any_flag.get("_bad_date"):
        raise rows.locate("_bad_date")


def _check_tallies(rows: _SparkRows | None, any_flag: Mapping[str, Any]) -> None:
    if rows is not None:
        error = rows.tally_error({flag: int(bool(any_flag.get(flag))) for flag in rows.tallies})
        if error is not None:
            raise error


def _aggregations(usable, u, date, key) -> list:
    """The table's :class:`Agg` features as Spark aggregations (sums in units, ``_<name>_units``)."""
    from pyspark.sql import functions as F

    rows = {"all": usable, "purchases": usable & (u > 0), "returns": usable & (u < 0)}
    source = {"amount": u, "order_date": date, "order_key": key}
    out = []
    for f in FEATURES:
        if not isinstance(f.compute, Agg):
            continue
        a = f.compute
        cond = rows[a.rows]
        if a.op == "count":
            out.append(F.count(F.when(cond, F.lit(1))).alias(f.name))
        elif a.op == "n_unique":
            # distinct keys, and a purchase without an order id counts as one order (as in Polars)
            missing = F.max(F.when(cond & key.isNull(), F.lit(1)).otherwise(F.lit(0))).cast("long")
            out.append((F.countDistinct(F.when(cond, source[a.column])) + missing).alias(f.name))
        elif a.op == "sum":
            out.append(F.sum(F.when(cond, source[a.column])).alias(f"_{f.name}_units"))
        else:
            out.append(getattr(F, a.op)(F.when(cond, source[a.column])).alias(f.name))
    return out


def compute_features_spark(
    data: str | Path | Sequence[str | Path],
    mapping: Mapping[str, str] | list[str] | None = None,
    *,
    as_of: dt.date | None = None,
    customers: pl.DataFrame | None = None,
    plugin_features: Mapping[str, Feature] | None = None,
    feature_owners: Mapping[str, str] | None = None,
    settings: SparkSettings | None = None,
    date_format: str | None = None,
):
    """The feature pass on Spark; the same :class:`~engine.features.FeatureResult` as the Polars pass.

    A text ``order_date`` is read as the Polars reader reads it (``date_format``: as given; see
    :class:`_TextDates`)."""
    from .features import LoadReport, complete_features, finish_aggregated

    plugin_features = dict(plugin_features or {})
    where, files, df = _read(data, settings or SparkSettings())
    from pyspark.sql import functions as F

    mapping = parse_mapping(mapping)
    frame, cols, dates = _canonical(df, mapping, where, files, date_format=date_format)
    # Plugin features (an aggregation or a query, Polars code): checked on no rows before any Spark job
    row_schema = _row_schema(frame, "order_id" in cols)
    queries = _plugin_queries(plugin_features, row_schema, feature_owners or {})

    c, date, u, key = F.col("customer_id"), F.col("order_date"), F.col("amount_units"), F.col("order_key")
    priced = c.isNotNull() & date.isNotNull() & u.isNotNull()
    usable = priced & (date < F.lit(as_of)) if as_of is not None else priced
    book = [
        F.count(F.lit(1)).alias("_rows"),
        F.count(F.when(usable, F.lit(1))).alias("_usable"),
        F.count(F.when(date.isNull(), F.lit(1))).alias("_null_date"),
        F.count(F.when(date.isNotNull() & u.isNull() & ~F.col("_bad_amount"), F.lit(1))).alias("_null_amount"),
        F.max(F.when(date.isNotNull() & u.isNotNull(), date)).alias("_last_day"),
        F.max(F.col("_bad_amount").cast("int")).alias("_bad"),
        # the scan's own revenue, apart from the features' sums: the reconciliation compares them
        F.sum(F.when(usable, u).cast("decimal(38,0)")).alias("_usable_units"),
    ]
    if as_of is not None:
        book.append(F.count(F.when(date.isNotNull() & u.isNotNull() & (date >= F.lit(as_of)), F.lit(1)))
                    .alias("_after_as_of"))
    if dates is not None:
        book += [F.max(F.col(flag).cast("int")).alias(flag) for flag in _DATE_FLAGS]
    grouped = frame.groupBy("customer_id").agg(*_aggregations(usable, u, date, key), *book)
    try:
        with _quiet_pandas_note():
            table = pl.from_arrow(grouped.toArrow())
    except Exception as exc:
        raise DataError(f"{where}: the spark feature pass failed: {_first_line(exc)}") from None

    rows = _date_rows(frame, cols, dates, data, where, files) if dates is not None else None
    flags = {flag: table[flag].max() for flag in _DATE_FLAGS if flag in table.columns} if table.height else {}
    _check_dates(rows, flags)   # the reader's order: a date that is no date, an amount, then the tallies
    if table.height and table["_bad"].max():
        raise _locate_bad_amount(frame, cols, where)
    _check_tallies(rows, flags)
    report = LoadReport(source=where, notes=_notes(cols, mapping, where, dates))
    report.rows = int(table["_rows"].sum()) if table.height else 0
    if report.rows == 0:
        raise DataError(f"{where}: no transactions (the data has no rows)")
    report.scanned_units = sum(int(v) for v in table["_usable_units"].drop_nulls())
    no_id = table.filter(pl.col("customer_id").is_null())
    known = table.filter(pl.col("customer_id").is_not_null())
    report.rejected["null_customer"] = int(no_id["_rows"].sum())
    report.rejected["null_date"] = int(known["_null_date"].sum())
    report.rejected["null_amount"] = int(known["_null_amount"].sum())
    if as_of is not None:
        report.rejected["after_as_of"] = int(known["_after_as_of"].sum())
    report.rows_used = report.rows - sum(report.rejected.values())
    unusable = known.filter(pl.col("_usable") == 0).select("customer_id")
    grouped_customers = finish_aggregated(known.filter(pl.col("_usable") > 0), as_of)
    tables: list[pl.DataFrame] = []
    if queries:
        aggregated, tables = _run_plugin_queries(frame.filter(usable), queries, row_schema, where,
                                                 "order_id" in cols)
        if aggregated is not None:
            grouped_customers = grouped_customers.join(aggregated, on="customer_id", how="left")
    return complete_features(grouped_customers, no_id["_last_day"].max(), unusable, as_of=as_of,
                             customers=customers, plugin_features=plugin_features, report=report,
                             describe=where, tables=tables, feature_owners=feature_owners)


def _locate_bad_amount(frame, cols: Mapping[str, str], where: str) -> DataError:
    """The error for the first flagged amount Spark finds (error path only: a second query)."""
    from pyspark.sql import functions as F

    row = frame.filter(F.col("_bad_amount")).select("_raw_amount", "_amount_f", F.input_file_name().alias("_file")) \
        .limit(1).collect()[0]
    source = cols.get("amount") or f"{cols['quantity']} x {cols['unit_price']}"
    value = row["_raw_amount"]
    what = (f"a usable amount: it is too large to sum exactly (at most {_MAX_AMOUNT:,.0f})"
            if math.isfinite(row["_amount_f"]) else "a finite number")
    return DataError(f"{where}: column {source!r} (amount), in {row['_file']}: {value!r} is not {what}")


# ------------------------------------------------------------------------------------------ plugin features
#
# A plugin's ``agg`` and ``table`` features are Polars code over a customer's usable rows. They run on Spark
# as they are, not translated: the usable rows are repartitioned by customer id (every row of a customer in
# one partition), and each partition runs the plugin's own query with Polars (``mapInArrow``) on its
# customers' rows. A feature of one customer reads that customer's rows only, so the partitions' results,
# put together, are the Polars pass's result, row for row.


def _row_schema(frame, has_order_id: bool) -> dict[str, pl.DataType]:
    """The Polars schema of the rows a plugin query reads (:data:`engine.features.PLUGIN_ROW_COLUMNS`)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    def polars_type(name: str) -> pl.DataType:
        arrow = to_arrow_type(frame.schema[name].dataType)
        return pl.from_arrow(pa.array([], type=arrow)).dtype

    schema = {**PLUGIN_ROW_COLUMNS, "customer_id": polars_type("customer_id")}
    if has_order_id:
        schema["order_id"] = polars_type("order_key")
    else:
        del schema["order_id"]
    return schema


@dataclass(frozen=True)
class _Query:
    """One plugin query: ``kind`` "agg" (the aggregations, together) or "table" (one table function)."""

    kind: str
    names: tuple[str, ...]
    build: Any   # rows (LazyFrame) -> LazyFrame with customer_id and ``names``
    schema: pl.Schema


def _plugin_queries(features: Mapping[str, Feature], row_schema: Mapping[str, pl.DataType],
                    owners: Mapping[str, str]) -> list[_Query]:
    """The plugin features' queries, each checked on an empty frame of the rows' schema (a feature that reads
    a column the rows do not have stops here, naming it, as in the Polars pass)."""
    from .features import _feature_error

    aggs = {name: feat.agg for name, feat in features.items() if feat.agg is not None}
    builds: list[tuple[str, tuple[str, ...], Any]] = []
    if aggs:
        def aggregate(rows: pl.LazyFrame, aggs=aggs) -> pl.LazyFrame:
            return rows.group_by("customer_id").agg([expr.alias(name) for name, expr in aggs.items()])
        builds.append(("agg", tuple(aggs), aggregate))
    empty = pl.LazyFrame(schema=dict(row_schema))
    # the table functions grouped as the Polars pass groups them (one query per distinct function)
    for _, names in plugin_table_queries(empty, features):
        builds.append(("table", tuple(names), functools.partial(_table_query, {n: features[n] for n in names})))
    queries = []
    for kind, names, build in builds:
        try:
            schema = build(empty).collect_schema()
        except pl.exceptions.ColumnNotFoundError as exc:
            raise _feature_error({n: features[n] for n in names}, owners, exc) from None
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"plugin feature(s) {', '.join(names)} ({owners_of(names, owners)}) cannot be "
                            f"computed: {_first_line(exc)}") from None
        queries.append(_Query(kind, names, build, schema))
    return queries


def _table_query(group: Mapping[str, Feature], rows: pl.LazyFrame) -> pl.LazyFrame:
    """The query of one table function's features, built by the Polars pass's own code."""
    return plugin_table_queries(rows, group)[0][0]


def _per_customer(rows, task, where: str, what: str) -> dict[int, list[pl.DataFrame]]:
    """Run ``task`` on the rows of each partition, every customer's rows in one partition; its results by
    position, each a list of the partitions' frames (partitions without rows run nothing).

    ``task(frame) -> list[pl.DataFrame]`` gets a partition's rows as a Polars DataFrame. It is unpickled
    inside the task after the driver's import path is added: a plugin module loaded from a directory
    (``--plugins-dir``) or a test is importable there too (in local mode: the same files).
    """
    import io

    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    payload = cloudpickle.dumps(task)
    paths = [p for p in sys.path if p]

    def run(batches):
        import pyarrow as pa

        sys.path.extend(p for p in paths if p not in sys.path)
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        work = cloudpickle.loads(payload)
        for i, frame in enumerate(work(pl.from_arrow(pa.Table.from_batches(batches)))):
            out = io.BytesIO()
            frame.write_ipc(out)
            yield pa.RecordBatch.from_arrays([pa.array([i], pa.int32()), pa.array([out.getvalue()], pa.binary())],
                                             names=["query", "payload"])

    split = rows.repartition(F.col("customer_id"))
    try:
        with _quiet_pandas_note():
            payloads = pl.from_arrow(split.mapInArrow(run, "query int, payload binary").toArrow())
    except Exception as exc:
        raise DataError(f"{where}: {what} failed on spark: {_plugin_error(exc)}") from None
    out: dict[int, list[pl.DataFrame]] = {}
    for i, data in payloads.iter_rows():
        out.setdefault(i, []).append(pl.read_ipc(io.BytesIO(data)))
    return out


def _plugin_task(builds: Sequence[Any], schema: Mapping[str, pl.DataType], rows: pl.DataFrame) -> list[pl.DataFrame]:
    """The plugin queries over one partition's usable rows (``amount`` from the exact units, as in Polars)."""
    rows = rows.with_columns(to_amount(pl.col("amount_units")).alias("amount")).select(
        [pl.col(name).cast(dtype) for name, dtype in schema.items()])
    return [build(rows.lazy()).collect() for build in builds]


def _run_plugin_queries(usable_rows, queries: list[_Query], row_schema: Mapping[str, pl.DataType], where: str,
                        has_order_id: bool) -> tuple[pl.DataFrame | None, list[pl.DataFrame]]:
    """Run the plugin queries on the executors; returns the aggregations (one frame, or None) and the tables."""
    from pyspark.sql import functions as F

    columns = [F.col("customer_id"), F.col("order_date"), F.col("amount_units")]
    if has_order_id:
        columns.append(F.col("order_key").alias("order_id"))
    task = functools.partial(_plugin_task, [q.build for q in queries], dict(row_schema))
    parts = _per_customer(usable_rows.select(*columns), task, where, "a plugin feature")
    aggregated, tables = None, []
    for i, query in enumerate(queries):
        table = pl.concat(parts[i], how="vertical") if i in parts else pl.DataFrame(schema=query.schema)
        if query.kind == "agg":
            aggregated = table
        else:
            tables.append(table)
    return aggregated, tables


def _plugin_error(exc: BaseException) -> str:
    """The Python error inside a Spark task's failure, in one line (the task's traceback is long)."""
    text = str(exc)
    errors = re.findall(r"^\s*([\w.]*(?:Error|Exception)\b:.*)$", text, flags=re.MULTILINE)
    return errors[-1].strip() if errors else _first_line(exc)


# ----------------------------------------------------------------------------------------------- snapshots
@dataclass
class SparkSource:
    """Transactions on Spark for the snapshot pass (:func:`engine.snapshots.compute_snapshot_features`).

    ``tx`` names the source and has the canonical columns but no row; :meth:`collect` runs the snapshot
    pass's own queries (:func:`engine.snapshots.snapshot_queries`) with Polars on each partition of the
    rows, every customer's rows in one partition; the snapshot pass puts the results together
    (:func:`engine.snapshots.combine_parts`): one definition, run where the data is.
    """

    tx: Any
    frame: Any = field(repr=False)
    where: str
    last_day: dt.date | None

    def default_end(self) -> dt.date:
        """The day after the last dated row with an amount (a run's default ``as_of``)."""
        if self.last_day is None:
            raise DataError(f"{self.where}: no usable transactions (no row has a date and an amount)")
        return self.last_day + dt.timedelta(days=1)

    def collect(self, build) -> dict[int, list[pl.DataFrame]]:
        """Each query's results on the partitions that have rows, by the query's position."""
        schema = dict(self.tx.frame.collect_schema())
        task = functools.partial(_snapshot_task, build, schema, dict(self.tx.mapping), self.tx.has_order_id)
        return _per_customer(self.frame.select(*schema), task, self.where, "the snapshot pass")


def _snapshot_task(build, schema: Mapping[str, pl.DataType], mapping: Mapping[str, str], has_order_id: bool,
                   rows: pl.DataFrame) -> list[pl.DataFrame]:
    """The snapshot pass's queries over one partition's rows."""
    from .data import Transactions

    tx = Transactions(frame=rows.select([pl.col(n).cast(t) for n, t in schema.items()]).lazy(), path=None,
                      mapping=dict(mapping), fmt="parquet", has_order_id=has_order_id)
    return pl.collect_all(build(tx)[0])


def spark_source(data: str | Path | Sequence[str | Path], mapping: Mapping[str, str] | list[str] | None = None,
                 *, settings: SparkSettings | None = None, date_format: str | None = None) -> SparkSource:
    """Parquet transactions on Spark, checked (paths, columns, dates, amounts) for the snapshot pass."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_type

    from .data import Transactions

    where, files, df = _read(data, settings or SparkSettings())
    mapping = parse_mapping(mapping)
    frame, cols, dates = _canonical(df, mapping, where, files, date_format=date_format)
    date, u = F.col("order_date"), F.col("amount_units")
    flagged = [F.max(F.col(flag).cast("int")).alias(flag) for flag in (_DATE_FLAGS if dates is not None else ())]
    try:
        bad, last, *found = frame.agg(F.max(F.col("_bad_amount").cast("int")),
                                      F.max(F.when(date.isNotNull() & u.isNotNull(), date)), *flagged).collect()[0]
    except Exception as exc:
        raise DataError(f"{where}: the spark pass failed: {_first_line(exc)}") from None
    rows = _date_rows(frame, cols, dates, data, where, files) if dates is not None else None
    flags = dict(zip(_DATE_FLAGS, found))
    _check_dates(rows, flags)
    if bad:
        raise _locate_bad_amount(frame, cols, where)
    _check_tallies(rows, flags)

    def polars_type(name: str) -> pl.DataType:
        return pl.from_arrow(pa.array([], type=to_arrow_type(frame.schema[name].dataType))).dtype

    schema = {"customer_id": polars_type("customer_id"), "order_key": polars_type("order_key"),
              "order_date": pl.Date(), "amount_units": pl.Int64()}
    tx = Transactions(frame=pl.LazyFrame(schema=schema), path=Path(where) if isinstance(data, (str, Path)) else None,
                      mapping=cols, fmt="parquet", has_order_id="order_id" in cols,
                      notes=_notes(cols, mapping, where, dates))
    return SparkSource(tx=tx, frame=frame, where=where, last_day=last)


# ------------------------------------------------------------------------------------------------- rejects
def rejected_rows_spark(
    data: str | Path | Sequence[str | Path],
    mapping: Mapping[str, str] | list[str] | None = None,
    *,
    as_of: dt.date | None = None,
    settings: SparkSettings | None = None,
    date_format: str | None = None,
) -> pl.DataFrame:
    """The rows not used, as :func:`engine.features.rejected_rows` gives them: ``row`` (1-based), the source's
    own columns, ``reason`` (the same words, the same order of reasons), ordered by row.

    Rows are numbered through the files in the order :func:`parquet_files` lists them (one file: its own row
    numbers, as the Polars engine's); with more than one file a ``file`` column says which file a row is in.
    """
    from pyspark.sql import functions as F

    from .features import REJECT_REASONS

    where, files, df = _read(data, settings or SparkSettings())
    source = df.columns
    keep = {f"_src_{i}": F.col(f"`{name}`") for i, name in enumerate(source)}
    frame, _, _ = _canonical(df, parse_mapping(mapping), where, files, date_format=date_format, keep=keep)
    c, date, u = F.col("customer_id"), F.col("order_date"), F.col("amount_units")
    reason = (F.when(c.isNull(), F.lit(REJECT_REASONS["null_customer"]))
              .when(date.isNull(), F.lit(REJECT_REASONS["null_date"]))
              .when(u.isNull(), F.lit(REJECT_REASONS["null_amount"])))
    if as_of is not None:
        reason = reason.when(date >= F.lit(as_of), F.lit(REJECT_REASONS["after_as_of"]))
    rejected = frame.select(*keep, "_file", "_index", reason.alias("reason")).filter(F.col("reason").isNotNull())
    try:
        with _quiet_pandas_note():
            rows = pl.from_arrow(rejected.toArrow())
    except Exception as exc:
        raise DataError(f"{where}: the spark pass over the rejected rows failed: {_first_line(exc)}") from None
    if isinstance(rows, pl.Series):
        rows = rows.to_frame()

    # 1-based row numbers through the files, in their listed order
    offsets, start = {}, 0
    for path in files:
        offsets[_file_key(str(path))] = (start, str(path))
        start += _row_count(path)
    seen = rows["_file"].unique().to_list()
    keys = rows["_file"].replace_strict(seen, [_file_key(f) for f in seen], return_dtype=pl.String)
    start_of = keys.replace_strict({k: v[0] for k, v in offsets.items()}, default=0, return_dtype=pl.Int64)
    name_of = keys.replace_strict({k: v[1] for k, v in offsets.items()}, default=None, return_dtype=pl.String)
    row = (start_of + rows["_index"].cast(pl.Int64) + 1).cast(pl.get_index_type())
    schema = empty_frame(data).collect_schema() if files else {}
    columns = [rows[f"_src_{i}"].alias(name) for i, name in enumerate(source)]
    columns = [col.cast(schema[col.name]) if col.name in schema and col.dtype != schema[col.name] else col
               for col in columns]
    out = pl.DataFrame([row.alias("row"), *columns, rows["reason"]])
    if len(files) > 1 or not files:
        out = out.insert_column(1, name_of.fill_null(rows["_file"]).alias("file"))
    return out.with_columns(_order=start_of).sort("_order", "row").drop("_order") if len(files) > 1 else \
        out.sort("row")


def _file_key(path: str) -> str:
    """A file's path as Spark's ``_metadata.file_path`` and the local path compare: absolute, unquoted."""
    from urllib.parse import unquote, urlparse

    if "://" in path or path.startswith("file:"):
        parsed = urlparse(path)
        if parsed.scheme not in ("file", ""):
            return path
        path = unquote(parsed.path)
    return str(Path(path).resolve())


def _row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
