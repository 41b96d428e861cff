"""Writing outputs atomically: one file, or a set of files that changes as one.

A single file (``classify -o``, ``--rejects``, a saved playbook) is written to a
temporary file in the target's directory, flushed to disk (``fsync``) and renamed
over the target with ``os.replace``: a reader, or a crash, sees the complete
previous file or the complete new one.

A run's outputs (customers, actions, cut, summary) must change *together*: a
summary describing one run beside an actions list of another is as wrong as a
half-written file. :func:`write_output_set` therefore writes every file of the
set into a fresh *generation* directory inside the output directory's state
directory ``.tierbook/``, flushes each file and the directory to disk, writes a
``manifest.json`` last, and then switches all files at once by replacing one
symbolic link, ``.tierbook/current``, with ``os.replace``. The files a user sees
(``out/actions.csv`` ...) are symbolic links into ``.tierbook/current/``, so that
one rename changes all of them. A crash at any moment leaves either the old set
or the new one; what a killed run leaves behind (its unfinished generation) is
removed by the next write into the same directory. See
``docs/decisions/0011-output-sets.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from .errors import DataError, TierbookError

__all__ = ["atomic_path", "atomic_write_frame", "write_frame", "atomic_write_text", "write_output_set", "leftovers",
           "OUTPUT_FORMATS", "STATE_DIR", "MANIFEST"]

OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".xlsx": "xlsx"}
#: Rows an Excel sheet holds, the header included.
XLSX_MAX_ROWS = 1_048_576
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: The state directory inside an output directory: generations, and ``current`` pointing at one.
STATE_DIR = ".tierbook"
CURRENT = "current"
MANIFEST = "manifest.json"
_GEN_PREFIX = "gen-"

#: Called with every temporary path this module hands to a writer (tests check that no output
#: is written anywhere else).
_on_temporary: Callable[[Path], None] | None = None


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


def _issued(path: Path) -> Path:
    if _on_temporary is not None:
        _on_temporary(path)
    return path


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # every caller's path is a directory it made or checked
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(previous: Path) -> int:
    """The mode of the file an output replaces, or the mode a plain open() would give it (0666 less the umask)."""
    try:
        return stat.S_IMODE(previous.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success flush it to disk and rename it over ``target``."""
    target = Path(target)
    if target.is_dir():
        raise DataError(f"{target}: is a directory, expected an output file")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{target}: the directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    tmp_path = Path(tmp)
    try:
        try:
            # mkstemp makes the file private (0600); an output gets the mode of the file it replaces, or the
            # mode a plain open() would give it.
            os.fchmod(fd, _mode_for(target))
        finally:
            os.close(fd)
        yield _issued(tmp_path)
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# ------------------------------------------------------------------ output sets
def _is_generation(name: str) -> bool:
    return name.startswith(_GEN_PREFIX)


def _current(state: Path) -> Path | None:
    """The generation directory ``current`` points at, if any."""
    link = state / CURRENT
    try:
        target = os.readlink(link)
    except OSError:
        return None
    gen = state / target
    return gen if _is_generation(target) and "/" not in target and gen.is_dir() else None


def _link_text(name: str) -> str:
    return f"{STATE_DIR}/{CURRENT}/{name}"


def _is_our_link(path: Path, name: str) -> bool:
    try:
        return os.readlink(path) == _link_text(name)
    except OSError:
        return False


def _clean(directory: Path, state: Path, names: list[str]) -> None:
    """Remove what killed or failed writes left: other generations, temporary links and files."""
    link = state / CURRENT
    if link.is_dir() and not link.is_symlink():  # the directory was copied following links (cp -L): a copy
        shutil.rmtree(link)
    keep = _current(state)
    for entry in os.listdir(state):
        path = state / entry
        if entry == CURRENT or (keep is not None and entry == keep.name):
            continue
        if _is_generation(entry) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif entry.startswith(".") and entry.endswith(".tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
    for entry in os.listdir(directory):
        # temporary links of this module and temporary files of single-file writes, for these outputs only
        if entry.endswith(".tmp") and any(entry.startswith(f".{name}.") for name in names):
            with contextlib.suppress(OSError):
                (directory / entry).unlink()


def _new_generation(state: Path) -> Path:
    gen = Path(tempfile.mkdtemp(prefix=_GEN_PREFIX, dir=state))
    try:
        os.chmod(gen, 0o777 & ~_UMASK)  # readable as a plain mkdir would make it, not mkdtemp's 0700
    except BaseException:
        os.rmdir(gen)
        raise
    return gen


def _point_current(state: Path, gen: Path) -> None:
    """Make ``current`` point at ``gen`` in one rename."""
    _replace_by_link(gen.name, state / CURRENT)


def _replace_by_link(text: str, target: Path) -> None:
    """Make ``target`` a symbolic link to ``text`` in one rename (a new link, renamed over it)."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    os.symlink(text, tmp)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _adopt(directory: Path, state: Path, names: list[str]) -> None:
    """Turn the visible outputs into links into ``current``, each showing the same content throughout.

    A visible output that is a plain file (written by hand, or by an older tierbook) is first
    linked into the current generation (created for it if there is none), so that replacing it
    by a link changes nothing a reader sees; a name with no file yet gets a link that shows
    nothing until the new generation is switched in.
    """
    foreign = [n for n in names if not _is_our_link(directory / n, n)]
    if not foreign:
        return
    present = [n for n in foreign if (directory / n).is_file()]
    current = _current(state)
    if present and current is None:
        current = _new_generation(state)
        _fsync_dir(current)
        _point_current(state, current)
        _fsync_dir(state)
    for name in present:
        tmp = current / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            try:
                # the file a user's symbolic link points at, resolved here: os.link does not follow a link on
                # Linux (whatever follow_symlinks says), and a relative one would dangle inside .tierbook/
                os.link((directory / name).resolve(), tmp)
            except OSError:
                shutil.copy2(directory / name, tmp)
            _fsync_file(tmp)
            os.replace(tmp, current / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    if present:
        _fsync_dir(current)
    for name in foreign:
        _replace_by_link(_link_text(name), directory / name)
    _fsync_dir(directory)


def _failure(exc: BaseException, directory: Path, name: str | None, *, single: bool = False) -> DataError:
    where = directory / name if name else directory
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if single:
        return DataError(f"{where}: cannot write it: {why}; the previous file is unchanged")
    return DataError(f"{where}: cannot write the outputs: {why}; the previous outputs are unchanged")


def write_output_set(
    directory: Path,
    writers: Mapping[str, Callable[[Path], None]],
    *,
    verify: Callable[[Path], None] | None = None,
    manifest: Mapping[str, object] | None = None,
    retire: Iterable[str] = (),
    owner: str | None = None,
    before: Callable[[], None] | None = None,
) -> dict[str, Path]:
    """Write a set of files into ``directory`` so that they change together or not at all.

    ``writers`` maps each file name to a function that writes the file at the
    path it is given. ``before`` is called once this write holds the directory's
    lock, before anything is written (it may raise to refuse the write: the
    directory stays as it was). ``verify`` is called with the new generation's directory
    once every file is written and flushed (it may read them back and raise to
    keep the previous set). Any failure before the switch leaves the previous
    set exactly as it was and raises a :class:`DataError`; afterwards the new
    set is in place. Returns the visible path of each file.

    ``owner`` names the writer (a playbook's path); the set's ``manifest.json``
    records which writer wrote each file (``owners``). ``retire`` names files
    this writer may have written before but does not produce this time (a run
    without snapshots after one with them): those the previous set says this
    same owner wrote are not carried over, and their visible links go, so no
    file of an older run sits beside the new set as if it belonged to it. Files
    of other writers into the same directory are carried over unchanged.
    """
    directory = Path(directory)
    names = list(writers)
    retired = {str(n) for n in retire} - set(names)
    state = directory / STATE_DIR
    created = None  # the outermost directory this write created, removed again if it fails
    for d in (directory, *directory.parents):
        if d.is_dir():
            break
        created = d
    if created is None and not state.is_dir():
        created = state
    lock = -1
    gen = current = writing = syncs = None
    try:
        state.mkdir(parents=True, exist_ok=True)
        lock = os.open(state, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time per output directory
        with contextlib.suppress(OSError):  # what is left now is removed next time
            _clean(directory, state, names)
        if before is not None:
            before()
        current = _current(state)
        gen = _new_generation(state)
        syncs = _Syncs()
        for name in names:
            writing = name
            path = gen / name
            writers[name](_issued(path))
            previous = current / name if current is not None and (current / name).exists() else directory / name
            os.chmod(path, _mode_for(previous))
            syncs.add(name, path)  # flushed to disk on a thread of its own while the next file is written
        for name, flushed in syncs.pending():
            writing = name
            flushed.result()
        syncs.close()
        writing = None
        if verify is not None:
            verify(gen)
        owners = {name: owner for name in names}
        previous_owners = _owners(current) if current is not None else {}
        retired = {n for n in retired if owner is not None and previous_owners.get(n) == owner}
        if current is not None:  # files of this directory's other outputs stay in the set
            for entry in os.listdir(current):
                if entry not in writers and entry not in retired and entry != MANIFEST and not entry.startswith("."):
                    owners[entry] = previous_owners.get(entry)
                    try:
                        os.link(current / entry, gen / entry)
                    except OSError:
                        shutil.copy2(current / entry, gen / entry)
        listing = {n: (gen / n).stat().st_size for n in sorted(os.listdir(gen))}
        known = {n: w for n, w in sorted(owners.items()) if w is not None}
        text = json.dumps({**(manifest or {}), "files": listing, "owners": known}, indent=2, default=str) + "\n"
        with open(_issued(gen / MANIFEST), "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(gen)
        _adopt(directory, state, names)
        _point_current(state, gen)  # the switch: one rename
    except BaseException as exc:
        if syncs is not None:
            syncs.close()  # no flush still running on the generation _undo removes
        _undo(directory, state, names, gen, created)
        if lock >= 0:
            os.close(lock)
        if isinstance(exc, TierbookError) or not isinstance(exc, Exception):
            raise
        raise _failure(exc, directory, writing) from None
    try:  # the new set is in place: what follows is best effort, and repeated by the next write
        _fsync_dir(state)
        for name in sorted(retired):  # links into the new set that it does not hold
            if _is_our_link(directory / name, name) and not (gen / name).exists():
                os.unlink(directory / name)
        _fsync_dir(directory)
        _clean(directory, state, names)
    except OSError:
        pass
    finally:
        os.close(lock)
    return {name: directory / name for name in names}


class _Syncs:
    """The ``fsync`` of each file of a generation, one after the other on a thread of their own, while the files
    after it are written: the disk flushes one file while the next is encoded (about 0.08 s of a run's wall time
    at 1M customers, bench/RESULTS-notes.md). :func:`write_output_set` waits for every one (and raises the first
    failure, naming its file) before it writes the manifest; on a failure it waits for the rest (:meth:`close`)
    before the generation is removed."""

    def __init__(self) -> None:
        self._pool: Any = None
        self._flushes: list[tuple[str, Any]] = []

    def add(self, name: str, path: Path) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierbook-fsync")
        self._flushes.append((name, self._pool.submit(_fsync_file, path)))

    def pending(self) -> list[tuple[str, Any]]:
        """(file name, future of its flush), in the order the files were written."""
        return list(self._flushes)

    def close(self) -> None:
        """Wait for every flush started (whatever its outcome) and end the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _owners(generation: Path) -> dict[str, str]:
    """Which writer wrote each file of a generation, from its ``manifest.json`` (empty when unknown)."""
    try:
        owners = json.loads((generation / MANIFEST).read_text(encoding="utf-8")).get("owners", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in owners.items()} if isinstance(owners, dict) else {}


def leftovers(directory: Path) -> list[Path]:
    """What killed or failed writes left in an output directory (the next write into it removes them).

    Temporary files beside the outputs, generations other than the current one,
    temporary links, and temporary files inside the current generation.
    """
    directory = Path(directory)
    state = directory / STATE_DIR
    out = [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    if state.is_dir():
        keep = _current(state)
        out += [p for p in state.iterdir() if p.name != CURRENT and p != keep]
        if keep is not None:
            out += [p for p in keep.iterdir() if p.name.startswith(".")]
    return sorted(out)


def _undo(directory: Path, state: Path, names: list[str], gen: Path | None, created: Path | None) -> None:
    """After a failure before the switch: remove the new generation, and whatever this write created."""
    current = _current(state) if state.is_dir() else None
    if gen is not None and current != gen:
        shutil.rmtree(gen, ignore_errors=True)
    if current is None:  # there was no set before: leave nothing behind
        for name in names:
            if _is_our_link(directory / name, name):
                with contextlib.suppress(OSError):
                    (directory / name).unlink()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # only if empty (and still there): rmdir refuses anything else
                state.rmdir()


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown output format {Path(path).suffix or '(none)'!r}; "
                        f"use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def neutralise_formulas(df: pl.DataFrame) -> pl.DataFrame:
    """Prefix text cells, and header cells, that a spreadsheet would run as a formula with ``'``.

    >>> neutralise_formulas(pl.DataFrame({"x": ["=1+1", "ok", "-2"]}))["x"].to_list()
    ["'=1+1", 'ok', "'-2"]
    >>> neutralise_formulas(pl.DataFrame({"x": pl.Series(["ok", "=A1"], dtype=pl.Enum(["ok", "=A1"]))}))["x"].to_list()
    ['ok', "'=A1"]
    """
    df = _neutralise_header(df)
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Enum) and not any(c.startswith(_FORMULA_START) for c in dtype.categories):
            continue  # every value is one of the categories, none risky: nothing to check per row
        if dtype == pl.String or isinstance(dtype, (pl.Enum, pl.Categorical)):
            col = pl.col(name).cast(pl.String)
            risky = pl.any_horizontal([col.str.starts_with(p) for p in _FORMULA_START])
            exprs.append(pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(name))
    return df.with_columns(exprs) if exprs else df


def _neutralise_header(df: pl.DataFrame) -> pl.DataFrame:
    """Column names (the CSV header's cells) that a spreadsheet would run as a formula, prefixed with ``'``.

    >>> _neutralise_header(pl.DataFrame({"=cmd": [1], "ok": [2]})).columns
    ["'=cmd", 'ok']
    """
    taken = set(df.columns)
    renames = {}
    for name in df.columns:
        if name.startswith(_FORMULA_START):
            new = "'" + name
            while new in taken:  # a column already called that: another quote, never a clash
                new = "'" + new
            taken.add(new)
            renames[name] = new
    return df.rename(renames) if renames else df


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


def write_frame(df: pl.DataFrame, path: Path, fmt: str | None = None, *, sheet: str | None = None) -> None:
    """Write ``df`` as Parquet, CSV, JSON, NDJSON or Excel at ``path`` (a temporary path of this module).

    ``sheet`` names an Excel sheet (default: the file's stem).
    """
    fmt = fmt or output_format(path)
    if fmt == "xlsx" and df.height >= XLSX_MAX_ROWS:
        raise DataError(f"{path}: {df.height:,} rows do not fit an Excel sheet (at most {XLSX_MAX_ROWS - 1:,} "
                        f"below the header); write .parquet or .csv")
    if fmt == "parquet":
        # Snappy: 0.33 CPU-s for a run's customer table (1M rows, 21 columns) against Polars' default zstd's 0.44,
        # at 28 MB instead of 20.5 (bench/RESULTS.md); statistics kept, a reader skips row groups by them.
        df.write_parquet(path, compression="snappy")
    elif fmt == "csv":
        neutralise_formulas(flatten_nested(df)).write_csv(path)
    elif fmt == "json":
        df.write_json(path)
    elif fmt == "xlsx":
        write_xlsx(df, path, sheet=sheet or Path(path).stem)
    else:
        df.write_ndjson(path)


def atomic_write_frame(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` as Parquet, CSV, JSON, NDJSON or Excel (by suffix), atomically; a failure is one
    :class:`DataError`."""
    fmt = output_format(path)
    try:
        with atomic_path(path) as tmp:
            write_frame(df, tmp, fmt, sheet=Path(path).stem)
    except TierbookError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise _failure(exc, Path(path), None, single=True) from None


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
        elif dtype.is_integer() and not -exact <= (out[name].min() or 0) <= (out[name].max() or 0) <= exact:
            # compared as integers: cast to a double first, 2^53 + 1 would round to 2^53 and pass for exact
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
