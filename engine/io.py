"""Writing outputs atomically.

Every file tierbook writes is first written to a temporary file in the same
directory, flushed to disk, then renamed over the target with ``os.replace``.
A reader (or a crash) sees either the complete previous file or the complete
new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from .errors import DataError

__all__ = ["atomic_path", "atomic_write_frame", "atomic_write_text", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".xlsx": "xlsx"}
#: Rows an Excel sheet holds, the header included.
XLSX_MAX_ROWS = 1_048_576
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _read_umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``."""
    target = Path(target)
    if target.is_dir():
        raise DataError(f"{target}: is a directory, expected an output file")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{target}: the directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file private (0600); an output gets the mode of the file it replaces, or the
        # mode a plain open() would give it (0666 less the umask).
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_UMASK
        os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp_path.exists():
            tmp_path.unlink()


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown output format {Path(path).suffix or '(none)'!r}; "
                        f"use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def neutralise_formulas(df: pl.DataFrame) -> pl.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with ``'``.

    >>> neutralise_formulas(pl.DataFrame({"x": ["=1+1", "ok", "-2"]}))["x"].to_list()
    ["'=1+1", 'ok', "'-2"]
    >>> neutralise_formulas(pl.DataFrame({"x": pl.Series(["ok", "=A1"], dtype=pl.Enum(["ok", "=A1"]))}))["x"].to_list()
    ['ok', "'=A1"]
    """
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Enum) and not any(c.startswith(_FORMULA_START) for c in dtype.categories):
            continue  # every value is one of the categories, none risky: nothing to check per row
        if dtype == pl.String or isinstance(dtype, (pl.Enum, pl.Categorical)):
            col = pl.col(name).cast(pl.String)
            risky = pl.any_horizontal([col.str.starts_with(p) for p in _FORMULA_START])
            exprs.append(pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(name))
    return df.with_columns(exprs) if exprs else df


def check_output(path: Path) -> str:
    """Fail early (before any data is read) when ``path`` cannot be written; return its format."""
    path = Path(path)
    try:
        if path.is_dir():
            raise DataError(f"{path}: is a directory, expected an output file")
        fmt = output_format(path)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise DataError(f"{path}: the directory {parent} does not exist")
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise DataError(f"{str(path)[:80]}...: cannot write here: {exc.strerror}") from None
    return fmt


def flatten_nested(df: pl.DataFrame) -> pl.DataFrame:
    """Turn list, array and struct columns (which CSV cannot hold) into JSON text.

    >>> flatten_nested(pl.DataFrame({"x": [["a", "b"], None]}))["x"].to_list()
    ['["a","b"]', None]
    """
    nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return df
    return df.with_columns(
        pl.when(pl.col(c).is_null()).then(None).otherwise(
            pl.struct(pl.col(c).alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
        ).alias(c)
        for c in nested
    )


def atomic_write_frame(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` as Parquet, CSV, JSON, NDJSON or Excel (by suffix), atomically."""
    fmt = output_format(path)
    if fmt == "xlsx" and df.height >= XLSX_MAX_ROWS:
        raise DataError(f"{path}: {df.height:,} rows do not fit an Excel sheet (at most {XLSX_MAX_ROWS - 1:,} "
                        f"below the header); write .parquet or .csv")
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.write_parquet(tmp)
        elif fmt == "csv":
            neutralise_formulas(flatten_nested(df)).write_csv(tmp)
        elif fmt == "json":
            df.write_json(tmp)
        elif fmt == "xlsx":
            write_xlsx(df, tmp, sheet=Path(path).stem)
        else:
            df.write_ndjson(tmp)


def write_xlsx(df: pl.DataFrame, path: Path, *, sheet: str = "Sheet1") -> None:
    """Write ``df`` as one Excel sheet with xlsxwriter: dates as dates, numbers as numbers, text as text.

    Text is never turned into a formula, a link or a number (a cell ``=1+1``
    stays the text ``=1+1``); labels are written as text; lists and structs as
    JSON text; whole numbers beyond 2^53, which an Excel number (a double) would
    round, as text.
    """
    import xlsxwriter

    out = flatten_nested(df)
    exact = 2**53
    casts = []
    for name, dtype in out.schema.items():
        if isinstance(dtype, (pl.Enum, pl.Categorical)):
            casts.append(pl.col(name).cast(pl.String))
        elif dtype.is_integer() and out.height and (out[name].cast(pl.Float64).abs().max() or 0) > exact:
            casts.append(pl.col(name).cast(pl.String))
        elif dtype == pl.Binary:
            raise DataError(f"{path}: column {name!r} holds bytes, which a spreadsheet cannot; write .parquet")
    if casts:
        out = out.with_columns(casts)
    # Excel sheet names: at most 31 characters, none of []:*?/\
    name = "".join("_" if c in "[]:*?/\\" else c for c in sheet)[:31] or "Sheet1"
    book = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_urls": False,
                                           "strings_to_numbers": False})
    try:
        out.write_excel(book, worksheet=name, autofit=False)
    finally:
        book.close()


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
