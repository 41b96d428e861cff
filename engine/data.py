"""Loading transactions and customer tables.

Transactions are mapped onto the canonical schema:

=============  ==========================================================
customer_id    who bought (any type; kept as it is in the source)
order_id       optional; without it, one order per customer and day
order_date     date or datetime (only the day is used)
amount         net line value, negative for returns; or ``quantity`` and
               ``unit_price``, from which ``amount = quantity * unit_price``
=============  ==========================================================

CSV, Parquet and NDJSON are scanned lazily; Excel (``.xlsx``) is read eagerly
(Polars cannot scan it). Nothing is collected here: :mod:`engine.features`
runs the one pass over the result.

Values that cannot be parsed (``"yesterday"`` as a date, ``"12,5x"`` as an
amount, NaN or infinity) are *errors*: the run stops and names the column, the
row and the value. Values that are *missing* (a null customer id, date or
amount) make the row unusable: it is counted per reason, reported, and can be
written to a rejects file; it is never dropped silently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .errors import DataError, mapping_hint, option, option_hint, suggest

__all__ = [
    "CANONICAL",
    "AMOUNT_SCALE",
    "Transactions",
    "read_transactions",
    "read_customers",
    "parse_mapping",
    "scan_file",
]

CANONICAL = ("customer_id", "order_id", "order_date", "amount", "quantity", "unit_price")
#: Amounts are summed exactly as integers in units of 1/AMOUNT_SCALE (each line
#: rounded once), so totals reconcile to the cent and do not depend on the
#: order of rows or the number of threads.
AMOUNT_SCALE = 10_000

FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".ndjson": "ndjson", ".jsonl": "ndjson", ".xlsx": "xlsx"}


def parse_mapping(items: list[str] | Mapping[str, str] | None, *, allowed=CANONICAL,
                  where: str | None = None) -> dict[str, str]:
    """Turn ``["customer_id=CustomerID", ...]`` into ``{"customer_id": "CustomerID"}``.

    Errors name the mapping as the caller gave it (``where``, default ``mapping``
    from Python, ``--map`` on the command line: :func:`~engine.errors.option`).

    >>> parse_mapping(["customer_id=CustomerID"])
    {'customer_id': 'CustomerID'}
    >>> parse_mapping(["custmer_id=X"])
    Traceback (most recent call last):
    ...
    engine.errors.DataError: mapping custmer_id=X: 'custmer_id' is not a canonical column (did you mean 'customer_id'?); canonical columns: customer_id, order_id, order_date, amount, quantity, unit_price
    """
    where = where or option("mapping")
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
        texts = [f"{k}={v}" for k, v in pairs]
    else:
        pairs, texts = [], []
        for item in items:
            if "=" not in item:
                raise DataError(f"{where} {item}: expected canonical=source, e.g. customer_id=CustomerID")
            key, _, value = item.partition("=")
            pairs.append((key.strip(), value.strip()))
            texts.append(item)
    out: dict[str, str] = {}
    for (key, value), text in zip(pairs, texts):
        if key not in allowed:
            raise DataError(
                f"{where} {text}: {key!r} is not a canonical column{suggest(key, allowed)}; "
                f"canonical columns: {', '.join(allowed)}"
            )
        if not value:
            raise DataError(f"{where} {text}: the source column name is empty")
        if key in out and out[key] != value:
            raise DataError(f"{where} {key}={out[key]} and {where} {text}: {key} is mapped twice, to two "
                            f"columns; give it once")
        out[key] = value
    return out


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))}"
        )
    return fmt


def scan_file(
    path: str | Path, *, sheet: str | None = None, all_strings: bool = True, text_columns: tuple[str, ...] = (),
    delimiter: str | None = None,
) -> pl.LazyFrame:
    """Scan a data file lazily (Excel is read eagerly) with clear errors for missing or empty files.

    CSV columns are read as text (``all_strings``) and parsed by the caller, so
    that a bad value is reported with its row instead of failing type inference.
    ``text_columns`` are read as text even when the other CSV columns are
    inferred (ids such as ``007`` must not become the number 7). ``delimiter``
    separates CSV fields; without it, see :func:`_separator`.
    """
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise DataError(f"{str(path)[:80]}...: cannot use this path: {exc.strerror}") from None
    if not exists:
        raise DataError(f"{path}: no such file")
    if is_dir:
        raise DataError(f"{path}: is a directory, expected a data file")
    fmt = _format_of(path)
    if path.stat().st_size == 0 or (path.stat().st_size == 3 and path.read_bytes() == b"\xef\xbb\xbf"):
        raise DataError(f"{path}: the file is empty")
    if delimiter is not None and fmt != "csv":
        raise DataError(f"{path}: {option('delimiter')} {delimiter!r} applies to CSV files only", file=str(path),
                        value=delimiter)
    if sheet is not None and fmt != "xlsx":
        raise DataError(f"{path}: {option('sheet')} {sheet!r} applies to Excel workbooks (.xlsx) only",
                        file=str(path), value=sheet)
    if fmt in ("csv", "ndjson"):
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError(f"{path}: the file is UTF-16 text; tierbook reads UTF-8: save it as UTF-8 "
                            f"(in a spreadsheet: CSV UTF-8)")
    try:
        if fmt == "csv":
            sep = _separator(path, delimiter)
            overrides = {c: pl.String for c in text_columns} if not all_strings else None
            return pl.scan_csv(path, separator=sep, infer_schema=not all_strings, try_parse_dates=not all_strings,
                               schema_overrides=overrides)
        if fmt == "parquet":
            return pl.scan_parquet(path)
        if fmt == "ndjson":
            return pl.scan_ndjson(path)
        return _read_excel(path, sheet, all_strings=all_strings).lazy()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read as {fmt}: {_first_line(exc)}") from None


def _separator(path: Path, delimiter: str | None = None) -> str:
    """The CSV delimiter: the one given, a tab for ``.tsv``, else the header's.

    A header line without a comma but with semicolons (as spreadsheets in much of
    Europe export CSV) is read with ``;``, one with tabs and no comma with a tab
    (:func:`sniffed_delimiter`); otherwise a comma.
    """
    if delimiter is not None:
        return delimiter
    if path.suffix.lower() == ".tsv":
        return "\t"
    return sniffed_delimiter(path) or ","


def sniffed_delimiter(path: Path) -> str | None:
    """``;`` or a tab when the header line has no comma but has that character; else None."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            first = fh.readline(1 << 20)
    except OSError:
        return None
    if "," in first:
        return None
    for candidate in (";", "\t"):
        if candidate in first:
            return candidate
    return None


def check_delimiter(value: str | None) -> str | None:
    """A delimiter as given (``;``, ``|``, ``tab`` or ``\\t`` for a tab): one character.

    >>> check_delimiter("tab"), check_delimiter(";")
    ('\\t', ';')
    """
    if value is None:
        return None
    text = {"tab": "\t", "\\t": "\t"}.get(value.lower() if isinstance(value, str) else value, value)
    if not isinstance(text, str) or len(text) != 1 or text in "\r\n\"" or not text.isascii():
        raise DataError(f"{option('delimiter')} {value!r}: give one character, e.g. ';' or tab (not a quote or a "
                        f"line break)", value=value)
    return text


def explain_read_error(path: Path | None, fmt: str, exc: BaseException, delimiter: str | None = None) -> str:
    """Why ``path`` could not be read, naming the line (error path only: reads the file again in Python).

    Polars' own message names neither the line nor the value; this finds the
    first line that is not UTF-8, has an unclosed quote or too many fields (CSV),
    or is not JSON (NDJSON), and falls back to Polars' first line.
    """
    found = None
    try:
        if path is not None and fmt == "csv":
            found = _csv_problem(path, _separator(path, delimiter))
        elif path is not None and fmt == "ndjson":
            found = _ndjson_problem(path)
    except OSError:
        found = None
    return found or f"cannot read the data: {_first_line(exc)}"


def _not_utf8(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return (f"line {line}, byte {column}: byte 0x{raw[exc.start]:02x} is not UTF-8 (is the file Latin-1 or "
                f"Windows-1252?); tierbook reads UTF-8: save the file as UTF-8")
    return None


def _csv_problem(path: Path, sep: str) -> str | None:
    import csv
    import io

    raw = path.read_bytes()
    bad = _not_utf8(raw)
    if bad:
        return bad
    text = raw.decode("utf-8").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    header: list[str] | None = None
    start = 1
    stray_quote = None
    try:
        for row in reader:
            if header is None:
                header = row
            elif len(row) > len(header):
                shown = sep.join(row)
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                return f"line {start}: {len(row)} fields, but the header has {len(header)}: {shown!r}"
            if stray_quote is None and any('"' in f for f in row):
                stray_quote = start
            start = reader.line_num + 1
    except csv.Error as exc:
        return f"line {start}: {exc} (a quote that is never closed?)"
    if stray_quote is not None:
        return (f"line {stray_quote}: a quote (\") inside a value; put the whole value in quotes and double "
                f"the quotes inside it")
    return None


def _ndjson_problem(path: Path) -> str | None:
    import json

    raw = path.read_bytes()
    bad = _not_utf8(raw)
    if bad:
        return bad
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            shown = line if len(line) <= 60 else line[:57] + "..."
            return f"line {number}: not a JSON record ({exc.msg} at column {exc.colno}): {shown!r}"
        if not isinstance(value, dict):
            return f"line {number}: expected a JSON object, got {type(value).__name__}"
    return None


def _csv_header(path: Path, delimiter: str | None = None) -> list[str]:
    """The header fields of a CSV file as written (Polars renames duplicates)."""
    import csv

    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        first = fh.readline().removeprefix("\ufeff")
    return next(csv.reader([first], delimiter=_separator(path, delimiter)), [])


def _read_excel(path: Path, sheet: str | None, *, all_strings: bool = False) -> pl.DataFrame:
    import fastexcel

    reader = fastexcel.read_excel(str(path))
    names = reader.sheet_names
    if sheet is None:
        if len(names) > 1:
            raise DataError(f"{path}: the workbook has {len(names)} sheets ({', '.join(names)}); "
                            f"choose one with {option('sheet')}", file=str(path))
        sheet = names[0]
    elif sheet not in names:
        raise DataError(f"{path}: no sheet {sheet!r}{suggest(sheet, names)}; sheets: {', '.join(names)}")
    # As text, like CSV: type inference would turn a cell "n/a" in a number column into an empty cell.
    return pl.read_excel(path, sheet_name=sheet, engine="calamine", infer_schema_length=0 if all_strings else 100)


def _schema(lf: pl.LazyFrame, path: Path, fmt: str = "", delimiter: str | None = None) -> pl.Schema:
    try:
        return lf.collect_schema()
    except Exception as exc:
        if fmt in ("csv", "ndjson"):
            raise DataError(f"{path}: {explain_read_error(path, fmt, exc, delimiter)}") from None
        raise DataError(f"{path}: cannot read the header: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class Transactions:
    """A lazily scanned transaction source mapped onto the canonical columns.

    ``frame`` has ``customer_id``, ``order_key`` (the order id, or the order
    day when there is none), ``order_date`` (``Date``) and ``amount_units``
    (``Int64``, see :data:`AMOUNT_SCALE`), plus ``_bad_date`` / ``_bad_amount``
    flags where a text column had to be parsed.
    """

    frame: pl.LazyFrame
    path: Path | None
    mapping: dict[str, str]
    fmt: str
    has_order_id: bool
    checks: dict[str, str] = field(default_factory=dict)  # flag column -> canonical column
    raw: pl.LazyFrame | None = None
    date_format: str | None = None
    sheet: str | None = None
    #: Boolean columns that are only counted (summed in the feature pass) and
    #: checked together by :meth:`tally_error`.
    tallies: tuple[str, ...] = ()
    #: ``"day-first"`` or ``"month-first"`` when text dates such as ``01/02/2011`` were read in the
    #: order the whole column proves (see :func:`_date_order`), else None.
    date_order: str | None = None
    #: The formats those dates are parsed with (see :func:`_formats_like`).
    date_formats: tuple[str, ...] = ()
    #: What the reader decided that the user should know (the date order and why), one line each.
    notes: list[str] = field(default_factory=list)
    #: The CSV delimiter (None: the default for the file, see :func:`_separator`).
    delimiter: str | None = None
    #: Text amounts were read with a decimal comma.
    decimal_comma: bool = False

    def describe(self) -> str:
        return str(self.path) if self.path else "(in-memory frame)"

    def _where(self, index: int) -> str:
        return _row_where(self.fmt, index, self.sheet)

    def _first_row(self, flag: str, canonical: str) -> tuple[int, Any]:
        query = self.frame.with_row_index("_row").filter(pl.col(flag)).select("_row", "_raw_" + canonical).head(1)
        return self.collect(query).row(0)

    def _is_finite_at(self, index: int) -> bool:
        query = self.frame.with_row_index("_row").filter(pl.col("_row") == index).select(pl.col("_amount_f").is_finite())
        return bool(self.collect(query).item())

    def collect(self, query: pl.LazyFrame) -> pl.DataFrame:
        """Collect a query over this source; a read error becomes a :class:`DataError` naming the line."""
        try:
            return query.collect()
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{self.describe()}: {explain_read_error(self.path, self.fmt, exc, self.delimiter)}"
                            ) from None

    def tally_error(self, totals: Mapping[str, int]) -> DataError | None:
        """The error the counted flags add up to, if any (dates with and without a time zone)."""
        if totals.get("_tz_aware") and totals.get("_tz_naive"):
            source_col = self.mapping.get("order_date", "order_date")
            a_index, a_value = self._first_row("_tz_aware", "order_date")
            n_index, n_value = self._first_row("_tz_naive", "order_date")
            return DataError(
                f"{self.describe()}: column {source_col!r} (order_date) mixes times with a time-zone offset "
                f"({self._where(a_index)}: {a_value!r}) and without one ({self._where(n_index)}: {n_value!r}); "
                f"give every time with an offset, or none",
                **self._facts(n_index, source_col, n_value),
            )
        return None

    def _date_hint(self, value: Any) -> str:
        """What to give as the date format: the formats that read ``value``, when there are any."""
        fits = " or ".join(map(repr, _formats_that_read(value)))
        word = option("date_format")
        if self.date_order is not None and not fits:
            return f" (the column is read {self.date_order}, like its other dates)"
        if self.date_format is not None:
            if fits:
                return f" (it does not fit {word} {self.date_format!r}; {fits} would read it)"
            return f" (it does not fit {word} {self.date_format!r})"
        if fits:
            return f" (give the format with {word} {fits})"
        return f" (give the format with {word}, e.g. '%d/%m/%Y')"

    def _number_hint(self, value: Any) -> str:
        """A decimal comma read without the option, or a decimal point read with it."""
        parts = [p.strip() for p in str(value).split(" x ")] if isinstance(value, str) else []
        word = option("decimal_comma")
        if not self.decimal_comma and any(re.match(r"^[+-]?\d{1,3},\d{3}$", p) for p in parts):
            return (f" (1.234 with a decimal comma, or 1234 with a comma between thousands? read the file with {word} "
                    f"for the first; for the second write it without the comma, or as 1,234.00)")
        if not self.decimal_comma and any(re.match(_DECIMAL_COMMA, p) and "," in p for p in parts):
            return f" (a decimal comma? read the file with {word})"
        if self.decimal_comma and any(re.match(r"^[+-]?\d*\.\d+$", p) for p in parts):
            return f" (with {word}, decimals follow a comma: 1,5 and 1.234,5)"
        return ""

    def locate(self, flag: str) -> DataError:
        """Build the error for the first row where ``flag`` is set (error path only: rescans)."""
        canonical = self.checks[flag]
        source_col = self.mapping.get(canonical, canonical)
        if canonical == "amount" and "amount" not in self.mapping and "quantity" in self.mapping:
            source_col = f"{self.mapping['quantity']} x {self.mapping['unit_price']}"
        index, value = self._first_row(flag, canonical)
        where = self._where(index)
        what = "a date" if canonical == "order_date" else "a finite number"
        hint = self._date_hint(value) if canonical == "order_date" else self._number_hint(value)
        if flag == "_bad_amount" and self._is_finite_at(index):
            what = f"a usable amount: it is too large to sum exactly (at most {_MAX_AMOUNT:,.0f})"
            hint = ""
        return DataError(
            f"{self.describe()}: column {source_col!r} ({canonical}), {where}: {value!r} is not {what}{hint}",
            **self._facts(index, source_col, value),
        )

    def _facts(self, index: int, column: str, value: Any) -> dict[str, Any]:
        """The structured attributes of an error at 0-based data row ``index`` (see TierbookError)."""
        line = {"csv": index + 2, "ndjson": index + 1}.get(self.fmt)
        return {"file": str(self.path) if self.path else None, "row": index + 1, "line": line, "column": column,
                "value": value}


def _row_where(fmt: str, index: int, sheet: str | None = None) -> str:
    """How a user finds the 0-based data row ``index``: its row number and its line or spreadsheet row."""
    if fmt == "csv":
        return f"row {index + 1} (line {index + 2})"
    if fmt == "xlsx":
        return f"row {index + 1} (sheet {sheet!r}, spreadsheet row {index + 2})"
    return f"row {index + 1}" + (f" (line {index + 1})" if fmt == "ndjson" else "")


def _mapping_hints(names: list[str]) -> str:
    """How the caller maps all of ``names`` at once (see :func:`~engine.errors.mapping_hint`).

    >>> _mapping_hints(["customer_id", "amount"])
    "mapping={'customer_id': COLUMN, 'amount': COLUMN}"
    """
    word = option("mapping")
    if word.startswith("--"):
        return " ".join(mapping_hint(n) for n in names)
    if word == "mapping":
        return "mapping={" + ", ".join(f"{n!r}: COLUMN" for n in names) + "}"
    return f"{word}: {{" + ", ".join(f"{n}: COLUMN" for n in names) + "}"


def header_key(name: str) -> str:
    """A header as it compares with a canonical column's name: lower case, letters and digits only.

    >>> header_key("Customer ID"), header_key("unit-price"), header_key("OrderDate")
    ('customerid', 'unitprice', 'orderdate')
    """
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def header_note(cols: Mapping[str, str], mapping: Mapping[str, str], where: str) -> str | None:
    """The note for the canonical columns taken from a header written another way, or None.

    >>> header_note({"customer_id": "Customer ID", "amount": "amount", "order_date": "d"}, {"order_date": "d"}, "x.csv")
    "x.csv: columns taken by their headers: customer_id from 'Customer ID'"
    """
    adopted = [f"{c} from {s!r}" for c, s in cols.items() if c not in mapping and s != c]
    return f"{where}: columns taken by their headers: {', '.join(adopted)}" if adopted else None


def _resolve_columns(schema: pl.Schema, mapping: dict[str, str], where: str,
                     notes: list[str] | None = None) -> dict[str, str]:
    """Which source column feeds each canonical column; errors name the closest real column.

    Every missing canonical column is named at once. The amount comes from one
    source: an ``amount`` column (mapped, or named so) together with a mapped
    ``quantity`` or ``unit_price`` is an error naming both; when only columns
    named ``quantity`` and ``unit_price`` are beside it, ``amount`` is used and
    a note says so.
    """
    columns = list(schema.names())
    hint = ""
    if len(columns) == 1 and any(s in columns[0] for s in ";\t|"):
        hint = f" (the file has a single column: is the delimiter not a comma? give it with {option('delimiter')})"
    out: dict[str, str] = {}
    for canonical, source in mapping.items():
        if source not in columns:
            raise DataError(
                f"{where}: no column {source!r} for {canonical}{suggest(source, columns)}{hint}; "
                f"columns: {', '.join(columns)}"
            )
        out[canonical] = source
    taken = set(out.values())
    for canonical in CANONICAL:
        if canonical in out:
            continue
        if canonical in columns:
            out[canonical] = canonical
            continue
        # a header written another way (``Customer ID``, ``OrderDate``, ``UNIT-PRICE``): adopted when it is the
        # only one, with a note; two of them are a question only the user can answer
        alike = [c for c in columns if c not in taken and header_key(c) == header_key(canonical)]
        if len(alike) > 1:
            raise DataError(
                f"{where}: columns {', '.join(repr(c) for c in alike)} could each be {canonical}; map one with "
                f"{mapping_hint(canonical)}", file=where, column=canonical)
        if alike:
            out[canonical] = alike[0]
    priced = [c for c in ("quantity", "unit_price") if c in out]
    if "amount" in out and priced:
        def source(canonical: str) -> str:
            how = "mapped" if canonical in mapping else "named so"
            return f"{canonical} from column {out[canonical]!r} ({how})"

        mapped = [c for c in priced if c in mapping]
        if mapped:
            raise DataError(
                f"{where}: two sources for the amount: {source('amount')}, and "
                f"{', '.join(source(c) for c in priced)} (amount = quantity x unit_price); map amount, or "
                f"quantity and unit_price, not both"
            )
        if notes is not None:
            notes.append(f"{where}: amount from column {out['amount']!r}; the columns "
                         f"{' and '.join(repr(out[c]) for c in priced)} are not used for it")
        for c in priced:
            del out[c]
    if notes is not None and (note := header_note(out, mapping, where)):
        notes.append(note)
    missing = [c for c in ("customer_id", "order_date") if c not in out]
    if "amount" not in out and not ("quantity" in out and "unit_price" in out):
        if "quantity" in out or "unit_price" in out:
            missing.append("unit_price" if "quantity" in out else "quantity")
        else:
            missing.append("amount")
    if missing:
        named = []
        for name in missing:
            close = suggest(name, columns) or suggest(name.replace("_", ""), columns)
            named.append(f"{name}{' (or quantity and unit_price)' if name == 'amount' else ''}{close}")
        alternative = (f" (or {_mapping_hints(['quantity', 'unit_price'])} instead of amount: amount = quantity x "
                       f"unit_price)" if "amount" in missing else "")
        it = "it" if len(missing) == 1 else "them"
        raise DataError(
            f"{where}: no column for {', '.join(named)}{hint}; map {it} with {_mapping_hints(missing)}{alternative} "
            f"(columns: {', '.join(columns)})", file=where, column=missing[0]
        )
    return out


#: A time of day followed by a time-zone offset (``10:00:00+02:00``, ``10:00Z``).
_TIME = r"(\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)"
_TIME_TZ = _TIME + r"\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
#: A line is held as Int64 units of 1/AMOUNT_SCALE (1e14 is 1e18 units, inside 9.2e18); sums are Int128.
_MAX_AMOUNT = 1e14


#: A date written day and month first, in either order, then the year (``01/02/2011``, ``1.2.2011 10:00``,
#: ``01-02-11``): the class of dates whose day and month cannot be told apart by the value alone.
_DM_Y = r"^(\d{1,2})[./-](\d{1,2})[./-](\d{2}|\d{4})(?:$|[\sT])"
_DATE_ORDERS = {"day-first": "%d{0}%m{0}", "month-first": "%m{0}%d{0}"}


def _text_dates(col: pl.Expr) -> pl.Expr:
    return col.cast(pl.String).str.strip_chars()


def _date_order(lf: pl.LazyFrame, source: str, *, where: str, fmt: str, sheet: str | None
                ) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Decide whether a text date column like ``01/02/2011`` is day-first or month-first, from every value.

    Returns ``(order, note, formats)``: ``(None, None, ())`` when the column's first date is
    not of that class (ISO dates and the like: nothing to decide, and only the
    first value is read). Otherwise the whole column is read once
    (:func:`date_evidence`) and :func:`decide_date_order` decides.
    """
    text = _text_dates(pl.col(source))
    try:
        head = lf.select(text.alias("t")).filter(pl.col("t").str.len_bytes() > 0).head(1).collect()
    except pl.exceptions.PolarsError:
        return None, None, ()  # the read error is reported, with its line, by the feature pass
    if head.height == 0 or not re.match(_DM_Y, head.item()):
        return None, None, ()
    try:
        found = date_evidence(lf.select(text.alias("t")).with_row_index("r")).collect(engine="streaming")
    except pl.exceptions.PolarsError:
        return None, None, ()
    return decide_date_order(found.row(0, named=True), source, where=where, fmt=fmt, sheet=sheet)


#: The examples :func:`date_evidence` finds, each the first value (``name``) and its row (``name_row``).
DATE_EVIDENCE = ("head", "day", "month", "either", "short")


def date_evidence(texts: pl.LazyFrame) -> pl.LazyFrame:
    """What decides a text date column's order, in one row: for each of :data:`DATE_EVIDENCE` the first
    value (in the frame's order) and its row ``r``.

    ``texts`` has ``t`` (the stripped text, :func:`_text_dates`) and ``r`` (the 0-based row). ``head`` is
    the first non-empty date, ``day`` the first with a first field above 12 (only day-first reads it),
    ``month`` one with a second field above 12, ``either`` one whose day and month differ, ``short`` one
    with a two-digit year. Any part of a column gives its part of the evidence: the first of each over
    the parts, by row, is the whole column's (the Spark pass reads it that way, partition by partition).
    """
    # One regex pass into three columns, then every question is a cheap aggregation over them.
    fields = texts.select(pl.col("t").str.extract_groups(_DM_Y).alias("g"), "t", "r").unnest("g")
    d1, d2 = pl.col("1").cast(pl.Int32), pl.col("2").cast(pl.Int32)
    conditions = {"head": pl.col("t").str.len_bytes() > 0, "day": d1 > 12, "month": d2 > 12, "either": d1 != d2,
                  "short": pl.col("3").str.len_bytes() == 2}
    return fields.select(*[e for name, cond in conditions.items() for e in (
        pl.col("t").filter(cond).first().alias(name), pl.col("r").filter(cond).first().alias(name + "_row"))])


def decide_date_order(found: Mapping[str, Any], source: str, *, where: str, fmt: str, sheet: str | None
                      ) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The order of a text date column from its :func:`date_evidence`: ``(order, note, formats)``.

    ``(None, None, ())`` when its first date is not like ``01/02/2011`` (ISO dates and the like: nothing to
    decide). A first field above 12 proves day-first, a second field above 12 proves month-first. When no
    value proves either (and some day differs from its month), the order is never guessed:
    :class:`DataError` asks for ``--date-format``. So is a column where values prove both orders, and a
    two-digit year (its century would be a guess too).
    """
    head = found["head"]
    if head is None or not re.match(_DM_Y, head):
        return None, None, ()
    column = f"column {source!r} (order_date)"

    def at(name: str) -> str:
        return f"{found[name]!r} at {_row_where(fmt, found[name + '_row'], sheet)}"

    if found["day"] is not None and found["month"] is not None:
        raise DataError(f"{where}: {column} has dates that can only be day-first, such as {at('day')}, and dates "
                        f"that can only be month-first, such as {at('month')}; no one order reads them all",
                        file=where, column=source, value=found["month"])
    order = "day-first" if found["day"] is not None else "month-first" if found["month"] is not None else None
    if found["short"] is not None:
        value = found["short"]
        orders = [order] if order else list(_DATE_ORDERS)
        formats = " or ".join(repr(_format_for(value, o, year="%y")) for o in orders)
        raise DataError(f"{where}: {column}: {at('short')} has a two-digit year; give the format with "
                        f"{option('date_format')} {formats}", file=where, column=source, value=value)
    if order is None:
        if found["either"] is None:  # every day equals its month: both orders read the same dates
            return "day-first", None, _formats_like(head, "day-first")
        value = found["either"]
        raise DataError(
            f"{where}: {column}: {at('either')} can be day-first or month-first and no date in the column tells "
            f"which (none has a day above 12); give the format with {option('date_format')} "
            f"{_format_for(value, 'day-first')!r} or {_format_for(value, 'month-first')!r}",
            file=where, column=source, value=value
        )
    proof = "day" if order == "day-first" else "month"
    note = (f"{where}: {column} read {order} ({_format_for(found[proof], order)}): {at(proof)} has "
            f"{'a first' if order == 'day-first' else 'a second'} field above 12")
    return order, note, _formats_like(head, order)


def _formats_like(first: str, order: str) -> tuple[str, ...]:
    """The formats a column of ``01/02/2011``-like dates is parsed with, in ``order``.

    The format of its first value, and the same date (its separator) without a time, with
    ``%H:%M`` and with ``%H:%M:%S``: a column may mix days and times. An explicit format parses
    about ten times as fast as Polars' inference, and each value is tried against four at most.
    """
    found = re.match(r"^\d{1,2}([./-])", first.strip())
    date = _DATE_ORDERS[order].format(found.group(1) if found else "/") + "%Y"
    return tuple(dict.fromkeys([_format_for(first, order), date, date + " %H:%M", date + " %H:%M:%S"]))


def _format_for(value: str, order: str, *, year: str = "%Y") -> str:
    """A strftime format that reads ``value`` in ``order`` (its separator and time of day kept), for messages."""
    found = re.match(r"^\d{1,2}([./-])\d{1,2}[./-]\d+(.*)$", value.strip())
    sep, rest = (found.group(1), found.group(2)) if found else ("/", "")
    date = _DATE_ORDERS[order].format(sep) + year
    for time in ("", " %H:%M", " %H:%M:%S", "T%H:%M", "T%H:%M:%S", " %H:%M:%S%.f", "T%H:%M:%S%.f", " %I:%M %p",
                 " %I:%M:%S %p"):
        if _reads(value.strip(), date + time):
            return date + time
    return date + (" %H:%M" if re.match(r"^\s\d{1,2}:\d{2}$", rest) else "")


def _reads(value: str, fmt: str) -> bool:
    try:
        return pl.Series([value]).str.to_datetime(format=fmt, strict=False).null_count() == 0
    except pl.exceptions.PolarsError:
        return False


def _formats_that_read(value: str) -> list[str]:
    """Formats of the common kinds that read ``value`` (for the hint of a date that does not parse)."""
    if not isinstance(value, str) or not re.match(r"^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", value.strip()):
        return []
    out = []
    for order in _DATE_ORDERS:
        for year in ("%Y", "%y"):
            fmt = _format_for(value, order, year=year)
            if _reads(value.strip(), fmt):
                out.append(fmt)
                break
    return out


def inference_text(col: pl.Expr) -> pl.Expr:
    """The text Polars infers a date format from when none is given or decided (a time-zone offset dropped:
    the calendar day as written). Polars takes the format from the column's first value it knows a format
    for, and reads every value with it."""
    return _text_dates(col).str.replace(_TIME_TZ, "${1}")


def _date_expr(col: pl.Expr, dtype: pl.DataType, *, date_format: str | None, where: str, source: str,
               formats: tuple[str, ...] = ()):
    """Return (date expression, needs-parse-check).

    Text with a time-zone offset (``2024-01-02T23:30:00-05:00``) gives the
    calendar day as written (the offset is dropped, not converted); a column
    mixing times with and without an offset is an error (see
    :meth:`Transactions.tally_error`). ``formats`` (tried in turn, the first
    that reads a value wins) read ``01/02/2011``-like text in the order the
    column proves (see :func:`_date_order`).
    """
    if dtype == pl.Date:
        return col, False
    if isinstance(dtype, pl.Datetime):
        return col.dt.date(), False
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = _text_dates(col)
        if date_format is None and formats:
            parsed = pl.coalesce([text.str.to_datetime(format=f, strict=False, time_unit="us") for f in formats])
            return parsed.dt.date(), True
        if date_format is None:
            text = inference_text(col)
        parsed = text.str.to_datetime(format=date_format, strict=False, time_unit="us")
        return parsed.dt.date(), True
    raise DataError(f"{where}: column {source!r} (order_date) has type {dtype}, expected dates")


def date_columns(date_raw: pl.Expr, dtype: pl.DataType, *, date_format: str | None, where: str, source: str,
                 formats: tuple[str, ...] = ()) -> tuple[list[pl.Expr], tuple[str, ...]]:
    """The order date's columns from its source (empty text already null) and the tallies among them.

    ``order_date``; for text also ``_raw_order_date`` (what :data:`BAD_DATE` and an error show) and, when
    the format is inferred, the ``_tz_aware`` / ``_tz_naive`` tallies (:meth:`Transactions.tally_error`).
    The Polars reader and the Spark pass (on each batch of a text column) build the dates with these.
    """
    date_expr, date_check = _date_expr(date_raw, dtype, date_format=date_format, where=where, source=source,
                                       formats=formats)
    exprs = [date_expr.alias("order_date")]
    tallies: tuple[str, ...] = ()
    if date_check:
        exprs.append(date_raw.cast(pl.String).alias("_raw_order_date"))
        if date_format is None and not formats:
            has_tz = date_raw.cast(pl.String).str.strip_chars().str.contains(_TIME_TZ)
            exprs.append(has_tz.fill_null(False).alias("_tz_aware"))
            exprs.append((~has_tz & date_raw.cast(pl.String).str.contains(r"\d:\d")).fill_null(False)
                         .alias("_tz_naive"))
            tallies = ("_tz_aware", "_tz_naive")
    return exprs, tallies


#: A text date that does not parse: its source is there, its date is not (over :func:`date_columns`).
BAD_DATE = (pl.col("_raw_order_date").is_not_null() & pl.col("order_date").is_null()).alias("_bad_date")


#: A number written with a decimal comma, optionally with dots between groups of thousands: 12,50 or 1.234,5.
_DECIMAL_COMMA = r"^[+-]?(?:\d+|\d{1,3}(?:\.\d{3})+)(?:,\d+)?$"


#: A number written with a decimal point and commas between groups of thousands, where the commas cannot be a
#: decimal comma: a decimal point after them (1,234.50) or more than one of them (1,234,567). ``1,234`` alone
#: is 1.234 or 1234 depending on who wrote it, so it is not read (the error names both).
_THOUSANDS_COMMA = r"^[+-]?\d{1,3}(?:,\d{3})+\.\d*$|^[+-]?\d{1,3}(?:,\d{3}){2,}$"


def _number_expr(col: pl.Expr, dtype: pl.DataType, *, where: str, source: str, canonical: str,
                 decimal_comma: bool = False) -> pl.Expr:
    """The column as Float64 (text parsed; what does not parse is null).

    With ``decimal_comma`` text is read as ``1.234,50`` (a comma before the
    decimals, dots between thousands, nothing else): ``1.5`` does not parse then.
    """
    if dtype.is_integer() or dtype.is_float() or isinstance(dtype, pl.Decimal):
        return col.cast(pl.Float64)
    if dtype == pl.String and decimal_comma:
        text = col.str.strip_chars()
        plain = text.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
        return pl.when(text.str.contains(_DECIMAL_COMMA)).then(plain).cast(pl.Float64, strict=False)
    if dtype == pl.String:
        text = col.str.strip_chars()
        grouped = text.str.contains(_THOUSANDS_COMMA)
        return (pl.when(grouped).then(text.str.replace_all(",", "", literal=True)).otherwise(text)
                .cast(pl.Float64, strict=False))
    raise DataError(f"{where}: column {source!r} ({canonical}) has type {dtype}, expected numbers")


def read_transactions(
    data: str | Path | pl.DataFrame | pl.LazyFrame | Any,
    mapping: Mapping[str, str] | list[str] | None = None,
    *,
    date_format: str | None = None,
    sheet: str | None = None,
    keep: tuple[str, ...] = (),
    date_order: tuple[str, tuple[str, ...]] | None = None,
    check_date_order: bool = True,
    delimiter: str | None = None,
    decimal_comma: bool = False,
) -> Transactions:
    """Scan ``data`` (a path, or a Polars / pandas frame) and map it onto the canonical columns.

    ``keep`` names source columns carried into ``frame`` unchanged (the rejects
    file carries a row number taken at the source this way).

    Text dates such as ``01/02/2011`` (day and month first, in an order the
    value cannot tell) are read in the order the whole column proves, which
    reads the date column once here (see :func:`_date_order`); ``date_order``
    gives an order already decided (``(order, formats)``, as
    :attr:`Transactions.date_order` and :attr:`Transactions.date_formats`), and ``check_date_order=False`` skips the
    decision (for checks that need the columns' types only).

    ``delimiter`` separates CSV fields (default: a comma, or what the header
    shows, see :func:`_separator`; a semicolon found that way is noted);
    ``decimal_comma`` reads text amounts, quantities and prices as ``12,50``.

    Raises :class:`~engine.errors.DataError` for a missing file, an unknown
    format, an unreadable header, or a missing or mistyped column.
    """
    mapping = parse_mapping(mapping)
    path: Path | None = None
    if isinstance(data, (str, Path)):
        path = Path(data)
        delimiter = check_delimiter(delimiter)
        lf = scan_file(path, sheet=sheet, delimiter=delimiter)
        fmt = _format_of(path)
        where = str(path)
    else:
        lf, fmt, where = _frame_from_object(data), "frame", "(in-memory frame)"
    notes: list[str] = []
    if fmt == "csv" and delimiter is None and path is not None and path.suffix.lower() != ".tsv":
        delimiter = sniffed_delimiter(path)
        if delimiter is not None:
            shown = "a tab" if delimiter == "\t" else repr(delimiter)
            notes.append(f"{where}: read with {shown} as the delimiter (the header has no comma); "
                         f"give {option('delimiter')} to choose another")
    schema = _schema(lf, path or Path(where), fmt, delimiter)
    if len(schema) == 0:
        raise DataError(f"{where}: the file has no columns")
    cols = _resolve_columns(schema, mapping, where, notes)
    if fmt == "csv" and path is not None:
        header = _csv_header(path, delimiter)
        for canonical, source in cols.items():
            positions = [i + 1 for i, name in enumerate(header) if name == source]
            if len(positions) > 1:
                raise DataError(f"{where}: the header names column {source!r} ({canonical}) {len(positions)} times "
                                f"(columns {', '.join(map(str, positions))}); rename all but one")

    checks: dict[str, str] = {}
    def value_of(canonical: str) -> pl.Expr:
        return source_value(pl.col(cols[canonical]), schema[cols[canonical]], canonical)

    exprs: list[pl.Expr] = [value_of("customer_id").alias("customer_id"), *[pl.col(c) for c in keep]]

    if fmt == "xlsx" and sheet is None and path is not None:
        sheet = _only_sheet(path)
    date_raw = value_of("order_date")
    date_type = schema[cols["order_date"]]
    text_date = date_type in (pl.String, pl.Categorical) or isinstance(date_type, pl.Enum)
    order, formats = date_order or (None, ())
    if text_date and date_format is None and date_order is None and check_date_order:
        order, note, formats = _date_order(lf, cols["order_date"], where=where, fmt=fmt, sheet=sheet)
        notes += [note] if note else []
    date_exprs, tallies = date_columns(date_raw, date_type, date_format=date_format, where=where,
                                       source=cols["order_date"], formats=formats)
    exprs += date_exprs
    date_check = len(date_exprs) > 1
    if date_check:
        checks["_bad_date"] = "order_date"

    if "amount" in cols:
        amount = _number_expr(
            value_of("amount"), schema[cols["amount"]], where=where, source=cols["amount"], canonical="amount",
            decimal_comma=decimal_comma,
        )
        raw_amount = value_of("amount").cast(pl.String)
        text_amount = schema[cols["amount"]] == pl.String
    else:
        q = _number_expr(
            value_of("quantity"), schema[cols["quantity"]], where=where, source=cols["quantity"],
            canonical="quantity", decimal_comma=decimal_comma,
        )
        p = _number_expr(
            value_of("unit_price"), schema[cols["unit_price"]], where=where, source=cols["unit_price"],
            canonical="unit_price", decimal_comma=decimal_comma,
        )
        amount = q * p
        raw_amount = pl.format("{} x {}", value_of("quantity"), value_of("unit_price"))
        text_amount = pl.String in (schema[cols["quantity"]], schema[cols["unit_price"]])
    exprs.append(amount.alias("_amount_f"))
    exprs.append(raw_amount.alias("_raw_amount"))
    checks["_bad_amount"] = "amount"

    has_order_id = "order_id" in cols
    if has_order_id:
        exprs.append(value_of("order_id").alias("order_key"))

    frame = lf.select(exprs)
    flags = []
    if date_check:
        flags.append(BAD_DATE)
    a = pl.col("_amount_f")
    # An amount that is NaN, infinite or too large to sum exactly: ``abs > max`` is all three at once
    # (NaN compares above every number in Polars). Text that does not parse is null after parsing while
    # its source is not (numeric sources never build the text of an amount). Any of them stops the run
    # (:meth:`Transactions.locate` tells which), so the amount itself needs no masking.
    unusual = a.abs() > _MAX_AMOUNT
    if text_amount:
        unusual = unusual | (pl.col("_raw_amount").is_not_null() & a.is_null())
    flags.append(unusual.fill_null(False).alias("_bad_amount"))
    frame = frame.with_columns(
        *flags,
        (a * AMOUNT_SCALE).round(0).cast(pl.Int64, strict=False).alias("amount_units"),
        *([] if has_order_id else [pl.col("order_date").alias("order_key")]),
    )
    return Transactions(frame=frame, path=path, mapping=cols, fmt=fmt, has_order_id=has_order_id, checks=checks,
                        date_format=date_format, raw=lf, sheet=sheet, tallies=tallies,
                        date_order=order if text_date and date_format is None else None,
                        date_formats=formats if text_date and date_format is None else (), notes=notes,
                        delimiter=delimiter, decimal_comma=decimal_comma)


def source_value(col: pl.Expr, dtype: pl.DataType, canonical: str) -> pl.Expr:
    """A source column's value as the reader takes it. An empty text ("", as pandas writes a missing value
    with QUOTE_NONNUMERIC or QUOTE_ALL, and as Polars reads a quoted empty CSV field) is a missing value,
    exactly like an unquoted empty field (null); a float id is one value per id (:func:`_float_id`)."""
    if dtype == pl.String:
        return pl.when(col.str.len_bytes() > 0).then(col)
    if canonical in ("customer_id", "order_id") and dtype.is_float():
        return _float_id(col, dtype)
    return col


def _float_id(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A float id as one value per id: -0.0 is 0.0 (they group as one customer, whose id was written as
    whichever came first, so it changed with row order and threads), and NaN (how pandas marks a missing
    value) is a missing id.

    >>> pl.select(_float_id(pl.Series([-0.0, 0.0, float("nan"), 17850.0]), pl.Float64())).to_series().to_list()
    [0.0, 0.0, None, 17850.0]
    """
    return pl.when(col == 0).then(pl.lit(0.0, dtype)).otherwise(col).fill_nan(None)


def _only_sheet(path: Path) -> str | None:
    try:
        import fastexcel

        return fastexcel.read_excel(str(path)).sheet_names[0]
    except Exception:  # only used to name the sheet in messages
        return None


def _frame_from_object(data: Any) -> pl.LazyFrame:
    if isinstance(data, pl.LazyFrame):
        return data
    if isinstance(data, pl.DataFrame):
        return data.lazy()
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(data).lazy()
    raise DataError(f"cannot read transactions from a {type(data).__name__}; give a path or a DataFrame")


def read_customers(
    data: str | Path | pl.DataFrame | Any,
    id_column: str | None = None,
    *,
    sheet: str | None = None,
    reserved: frozenset[str] = frozenset(),
) -> pl.DataFrame:
    """Read a customer table: ``customer_id`` (or ``id_column``) plus attributes.

    The table is small, so it is read eagerly with type inference (dates in
    ISO form become dates). Every id must be present and unique; attribute
    names may not shadow a feature (``reserved``).
    """
    source = id_column or "customer_id"
    if isinstance(data, (str, Path)):
        path = Path(data)
        lf = scan_file(path, sheet=sheet, all_strings=False, text_columns=(source,))
        where = str(path)
        try:
            df = lf.collect()
        except Exception as exc:
            raise DataError(f"{where}: cannot read the customer table: {_first_line(exc)}") from None
    else:
        df, where = _frame_from_object(data).collect(), "(customer frame)"
    if source not in df.columns:
        raise DataError(
            f"{where}: no column {source!r} for customer_id{suggest(source, df.columns)}; "
            f"columns: {', '.join(df.columns)} (choose it with {option_hint('customers_id', 'COLUMN')})"
        )
    if source != "customer_id":
        if "customer_id" in df.columns:
            df = df.drop("customer_id")
        df = df.rename({source: "customer_id"})
    df = df.select("customer_id", pl.exclude("customer_id"))
    id_type = df.schema["customer_id"]
    if id_type == pl.String:  # a quoted empty id ("") is an empty id, as in the transactions
        df = df.with_columns(pl.when(pl.col("customer_id").str.len_bytes() > 0).then(pl.col("customer_id"))
                             .alias("customer_id"))
    elif id_type.is_float():
        df = df.with_columns(_float_id(pl.col("customer_id"), id_type).alias("customer_id"))
    if df.height == 0:
        raise DataError(f"{where}: the customer table has no rows")
    nulls = df.with_row_index("_row").filter(pl.col("customer_id").is_null())
    if nulls.height:
        raise DataError(f"{where}: column {source!r}, row {nulls['_row'][0] + 1}: the customer id is empty")
    dup = df.with_row_index("_row").filter(pl.col("customer_id").is_duplicated())
    if dup.height:
        raise DataError(
            f"{where}: column {source!r}, row {dup['_row'][1] + 1}: customer id {dup['customer_id'][0]!r} "
            f"appears {dup.height} times; each customer must appear once"
        )
    clash = [c for c in df.columns[1:] if c in reserved]
    if clash:
        raise DataError(f"{where}: column {clash[0]!r} has the name of a feature; rename it in the customer table")
    return df


def as_date(value: str | dt.date | dt.datetime | None, *, where: str | None = None) -> dt.date | None:
    """Parse an ``as_of`` value (``YYYY-MM-DD``); ``where`` names it (default: the caller's word for as_of).

    >>> as_date("2011-12-10")
    datetime.date(2011, 12, 10)
    >>> as_date("10/12/2011")
    Traceback (most recent call last):
    ...
    engine.errors.DataError: as_of: '10/12/2011' is not a date in the form YYYY-MM-DD
    """
    where = where or option("as_of")
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a date in the form YYYY-MM-DD", value=value) from None
