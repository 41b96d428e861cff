"""engine.io: outputs by suffix, written atomically; CSV cells that a spreadsheet would run are neutralised."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import polars as pl
import pytest

from engine import DataError
from engine.io import atomic_path, atomic_write_frame, atomic_write_text, neutralise_formulas

DF = pl.DataFrame({"customer_id": ["a", "b"], "monetary": [1.5, -2.0],
                   "abc": pl.Series(["A", "C"], dtype=pl.Enum(["A", "B", "C"]))})


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json", ".ndjson"])
def test_each_format_round_trips(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    atomic_write_frame(DF, path)
    if suffix == ".parquet":
        assert pl.read_parquet(path).equals(DF)
    elif suffix == ".csv":
        assert path.read_text().splitlines() == ["customer_id,monetary,abc", "a,1.5,A", "b,-2.0,C"]
    elif suffix == ".json":
        assert json.loads(path.read_text()) == [{"customer_id": "a", "monetary": 1.5, "abc": "A"},
                                                {"customer_id": "b", "monetary": -2.0, "abc": "C"}]
    else:
        assert [json.loads(line)["customer_id"] for line in path.read_text().splitlines()] == ["a", "b"]
    assert leftovers(tmp_path) == []


def test_unknown_suffix_and_bad_places(tmp_path):
    with pytest.raises(DataError, match=r"out.xls: unknown output format '.xls'; use one of .parquet, .csv"):
        atomic_write_frame(DF, tmp_path / "out.xls")
    with pytest.raises(DataError, match=r"the directory .*missing does not exist"):
        atomic_write_frame(DF, tmp_path / "missing" / "out.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match=r"dir.csv: is a directory, expected an output file"):
        atomic_write_frame(DF, tmp_path / "dir.csv")


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous\n"
    assert leftovers(tmp_path) == []
    atomic_write_text("new\n", target)
    assert target.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_csv_neutralises_formulas_but_not_numbers(tmp_path):
    df = pl.DataFrame({"customer_id": ["=HYPERLINK(\"x\")", "+1", "@SUM(A1)", "ok", "-x"], "monetary": [-1.0] * 5})
    assert neutralise_formulas(df)["customer_id"].to_list() == ["'=HYPERLINK(\"x\")", "'+1", "'@SUM(A1)", "ok", "'-x"]
    path = tmp_path / "out.csv"
    atomic_write_frame(df, path)
    back = pl.read_csv(path)
    assert back["customer_id"].to_list()[0] == "'=HYPERLINK(\"x\")"
    assert back["monetary"].to_list() == [-1.0] * 5  # numeric columns untouched
    # Parquet keeps values as they are
    atomic_write_frame(df, tmp_path / "out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet")["customer_id"].to_list()[0] == "=HYPERLINK(\"x\")"


def test_csv_flattens_nested_columns(tmp_path):
    df = pl.DataFrame({"customer_id": ["a"], "tags": [["x", "y"]]})
    atomic_write_frame(df, tmp_path / "out.csv")
    back = pl.read_csv(tmp_path / "out.csv")
    assert back.row(0) == ("a", '["x","y"]')


def test_a_new_output_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode(tmp_path):
    # Not the private 0600 of the temporary file it is written as.
    old = os.umask(0o027)
    try:
        code = ("import os, sys; from pathlib import Path; from engine.io import atomic_write_text; "
                "atomic_write_text('x', Path(sys.argv[1]))")
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "new.txt")], check=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
    kept = tmp_path / "kept.csv"
    kept.write_text("old")
    kept.chmod(0o604)
    atomic_write_frame(DF, kept)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    assert kept.read_text().startswith("customer_id,")


def test_enum_columns_are_neutralised_through_their_categories():
    risky = pl.Series(["ok", "=A1", "ok"], dtype=pl.Enum(["ok", "=A1"]))
    assert neutralise_formulas(pl.DataFrame({"x": risky}))["x"].to_list() == ["ok", "'=A1", "ok"]
    safe = pl.DataFrame({"x": pl.Series(["a", "b"], dtype=pl.Enum(["a", "b", "c"]))})
    assert neutralise_formulas(safe).equals(safe)  # untouched, still the Enum


def _xlsx_cells(path) -> tuple[dict[str, tuple[str, str]], str]:
    """Each cell of the first sheet as (kind, text): ``s`` text, ``n`` number, ``f`` formula; and the sheet's XML."""
    import xml.etree.ElementTree as ET
    import zipfile

    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as z:
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        shared = ([si.findtext("m:t", namespaces=ns) for si in ET.fromstring(z.read("xl/sharedStrings.xml"))]
                  if "xl/sharedStrings.xml" in z.namelist() else [])
    cells = {}
    for c in ET.fromstring(sheet).iter(f"{{{ns['m']}}}c"):
        if c.find("m:f", ns) is not None:
            cells[c.get("r")] = ("f", c.findtext("m:f", namespaces=ns))
        elif c.get("t") == "s":
            cells[c.get("r")] = ("s", shared[int(c.findtext("m:v", namespaces=ns))])
        else:
            cells[c.get("r")] = ("n", c.findtext("m:v", namespaces=ns))
    return cells, sheet


def test_xlsx_keeps_text_as_text_and_numbers_exact(tmp_path):
    """engine.io.write_xlsx: text never becomes a number, a formula or a link; whole numbers beyond 2^53 (which
    a double would round) are written as text, numbers up to 2^53 as numbers."""
    path = tmp_path / "out.xlsx"
    df = pl.DataFrame({"id": ["007", "=1+1", "https://example.com"], "big": [2**53 + 1, 5, 6],
                       "edge": [2**53, 1, 2], "n": [1, 2, 3], "low": [-(2**53) - 1, 0, 1], "low_edge": [-(2**53), 0, 1],
                       "none": pl.Series([None, None, None], dtype=pl.Int64)})
    atomic_write_frame(df, path)
    cells, sheet = _xlsx_cells(path)
    assert [cells[f"A{r}"] for r in (2, 3, 4)] == [("s", "007"), ("s", "=1+1"), ("s", "https://example.com")]
    assert [cells[f"B{r}"] for r in (2, 3, 4)] == [("s", str(2**53 + 1)), ("s", "5"), ("s", "6")]
    assert [cells[f"C{r}"] for r in (2, 3, 4)] == [("n", str(2**53)), ("n", "1"), ("n", "2")]
    assert [cells[f"D{r}"] for r in (2, 3, 4)] == [("n", "1"), ("n", "2"), ("n", "3")]
    assert [cells[f"E{r}"] for r in (2, 3, 4)] == [("s", str(-(2**53) - 1)), ("s", "0"), ("s", "1")]
    assert [cells[f"F{r}"] for r in (2, 3, 4)] == [("n", str(-(2**53))), ("n", "0"), ("n", "1")]
    assert all(cells.get(f"G{r}", ("n", None))[1] is None for r in (2, 3, 4))  # null: an empty cell
    assert "hyperlink" not in sheet
    atomic_write_frame(pl.DataFrame({"n": [7], "same": [2**53]}), path)  # one row: its minimum is its maximum
    cells, _ = _xlsx_cells(path)
    assert (cells["A2"], cells["B2"]) == (("n", "7"), ("n", str(2**53)))


def test_xlsx_sheet_is_named_after_the_file(tmp_path):
    """write_frame: the sheet takes the file's stem, without the characters Excel refuses in a sheet name."""
    import zipfile

    for stem, sheet in (("customers", "customers"), ("a[1]:b", "a_1__b"), ("x" * 40, "x" * 31)):
        path = tmp_path / f"{stem}.xlsx"
        atomic_write_frame(pl.DataFrame({"x": [1]}), path)
        with zipfile.ZipFile(path) as z:
            assert f'<sheet name="{sheet}"' in z.read("xl/workbook.xml").decode()


def test_with_actions_gives_each_customer_their_actions_in_the_order_of_actions_csv():
    """engine.playbook.write.with_actions: under hit_policy all a customer's actions and rules are joined by "; "
    in the order of actions.csv; a customer without an action gets nulls; one action each joins as it is."""
    from engine.playbook.write import with_actions

    customers = pl.DataFrame({"customer_id": ["a", "b", "c"], "monetary": [1.0, 2.0, 3.0]})
    actions = pl.DataFrame({"customer_id": ["b", "a", "a"], "rule": ["r1", "r1", "r2"],
                            "action": ["call", "call", "mail"]})
    got = with_actions(customers, actions)
    assert got.columns == ["customer_id", "monetary", "action", "action_rule"]
    assert got.rows() == [("a", 1.0, "call; mail", "r1; r2"), ("b", 2.0, "call", "r1"), ("c", 3.0, None, None)]
    one = with_actions(customers, actions.head(2), one_per_customer=True)
    assert one.rows() == [("a", 1.0, "call", "r1"), ("b", 2.0, "call", "r1"), ("c", 3.0, None, None)]


def test_an_output_set_keeps_other_writers_files_and_retires_only_its_own(tmp_path):
    """engine.io.write_output_set: files of another writer in the same directory are carried over unchanged; a
    file this writer wrote before and ``retire``s is gone, visible link included; one the other writer wrote
    under a retired name stays."""
    from engine.io import MANIFEST, STATE_DIR, write_output_set

    def text(value):
        return lambda path: path.write_text(value)

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": text("a1"), "old.txt": text("old")}, owner="one")
    write_output_set(out, {"b.txt": text("b1"), "shared.txt": text("theirs")}, owner="two")
    write_output_set(out, {"a.txt": text("a2")}, owner="one", retire=["old.txt", "shared.txt"])
    assert sorted(p.name for p in out.iterdir() if p.name != STATE_DIR) == ["a.txt", "b.txt", "shared.txt"]
    assert [(out / n).read_text() for n in ("a.txt", "b.txt", "shared.txt")] == ["a2", "b1", "theirs"]
    manifest = json.loads((out / STATE_DIR / "current" / MANIFEST).read_text())
    assert manifest["owners"] == {"a.txt": "one", "b.txt": "two", "shared.txt": "two"}
    assert sorted(manifest["files"]) == ["a.txt", "b.txt", "shared.txt"]


def test_a_file_that_cannot_be_written_is_one_error_naming_it(tmp_path):
    """atomic_write_frame: a writer's failure is one DataError naming the file, and the previous file stays."""
    path = tmp_path / "out.csv"
    path.write_text("before\n")
    with pytest.raises(DataError) as err:
        atomic_write_frame(pl.DataFrame({"b": [b"x"]}), path)
    assert str(err.value) == (f"{path}: cannot write it: ComputeError: datatype binary cannot be written to CSV; "
                              "the previous file is unchanged")
    assert path.read_text() == "before\n" and leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["../elsewhere", "gen-gone"])
def test_a_current_link_that_points_outside_the_generations_is_ignored(tmp_path, target):
    """engine.io: ``.tierbook/current`` counts only when it names a generation directory beside it. Tampered with
    (pointing out of ``.tierbook/``, or at a generation that is gone), it is no previous set: nothing is carried
    over from where it points, that directory is left alone, and the write succeeds."""
    from engine.io import MANIFEST, STATE_DIR, write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")}, owner="one")
    (out / "elsewhere").mkdir()
    (out / "elsewhere" / "stray.txt").write_text("not an output")
    link = out / STATE_DIR / "current"
    link.unlink()
    link.symlink_to(target)
    write_output_set(out, {"a.txt": lambda p: p.write_text("a2")}, owner="one")
    assert (out / "a.txt").read_text() == "a2"
    assert sorted(json.loads((out / STATE_DIR / "current" / MANIFEST).read_text())["files"]) == ["a.txt"]
    assert (out / "elsewhere" / "stray.txt").read_text() == "not an output"


def test_a_users_relative_link_is_adopted_by_its_content(tmp_path, monkeypatch):
    """engine.io: a visible output that is the user's own relative symbolic link is adopted by its content (the
    file it points at, which is never written to): the write succeeds, and if the switch fails the name still
    shows that content. (``os.link`` does not follow a symbolic link on Linux whatever its ``follow_symlinks``
    says: the link itself was linked into ``.tierbook/``, where its relative target does not exist, and every
    write into such a directory failed with "No such file or directory".)"""
    import engine.io
    from engine.io import write_output_set

    def fail(*args):
        raise OSError(28, "No space left on device")

    (tmp_path / "real.txt").write_text("mine")
    for attempt in ("fails", "succeeds"):
        out = tmp_path / attempt
        write_output_set(out, {"b.txt": lambda p: p.write_text("b1")})  # a previous set: the adoption uses it
        (out / "a.txt").symlink_to("../real.txt")
        if attempt == "fails":
            with monkeypatch.context() as m:
                m.setattr(engine.io, "_point_current", fail)
                with pytest.raises(DataError, match="No space left on device; the previous outputs are unchanged"):
                    write_output_set(out, {"a.txt": lambda p: p.write_text("a2")})
            assert (out / "a.txt").read_text() == "mine"
        else:
            write_output_set(out, {"a.txt": lambda p: p.write_text("a2")})
            assert (out / "a.txt").read_text() == "a2"
        assert (out / "b.txt").read_text() == "b1"
    assert (tmp_path / "real.txt").read_text() == "mine"


def test_a_generation_that_cannot_be_removed_does_not_hide_the_writes_error(tmp_path, monkeypatch):
    """engine.io: after a failed write its new generation is removed as far as it can be; a removal that fails
    (a busy mount, a file held open elsewhere) is left for the next write and never replaces the write's own
    error."""
    import shutil

    import engine.io
    from engine.io import write_output_set

    class Shutil:  # shutil, with a removal that fails
        def __getattr__(self, name):
            return getattr(shutil, name)

        @staticmethod
        def rmtree(path, ignore_errors=False, **kwargs):
            if not ignore_errors:
                raise OSError(16, "Device or resource busy")

    def full(path):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    monkeypatch.setattr(engine.io, "shutil", Shutil())
    with pytest.raises(DataError, match=r"a.txt: cannot write the outputs: No space left on device; the previous"):
        write_output_set(out, {"a.txt": full})
    with pytest.raises(DataError, match=r"out/a.txt: cannot write the outputs: No space left on device; the"):
        write_output_set(tmp_path / "new" / "out", {"a.txt": full})  # a directory the write created
    assert (out / "a.txt").read_text() == "a1"


def test_without_hard_links_the_files_are_copied(tmp_path, monkeypatch):
    """engine.io: on a file system that refuses hard links (some network and FUSE mounts), another writer's files
    are carried into the new set, and a plain file already there is adopted, as copies."""
    from engine.io import STATE_DIR, write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")}, owner="one")
    (out / "c.txt").write_text("by hand")

    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    write_output_set(out, {"b.txt": lambda p: p.write_text("b1"), "c.txt": lambda p: p.write_text("c1")},
                     owner="two")
    assert [(out / n).read_text() for n in ("a.txt", "b.txt", "c.txt")] == ["a1", "b1", "c1"]
    gen = out / STATE_DIR / "current"
    assert (gen / "a.txt").stat().st_nlink == 1  # a copy, not a link to the previous set's file


def test_a_write_removes_only_its_own_leftovers_from_the_state_directory(tmp_path):
    """engine.io: the clean-up before a write removes old generations and temporary files of ``.tierbook/``, never
    a directory there that is not a generation (nor what a link named like one points at)."""
    from engine.io import STATE_DIR, write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    (out / STATE_DIR / "notes").mkdir()
    (out / STATE_DIR / "notes" / "n.txt").write_text("mine")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.txt").write_text("mine too")
    (out / STATE_DIR / "gen-link").symlink_to(tmp_path / "elsewhere")
    write_output_set(out, {"a.txt": lambda p: p.write_text("a2")})
    assert (out / "a.txt").read_text() == "a2"
    assert (out / STATE_DIR / "notes" / "n.txt").read_text() == "mine"
    assert (tmp_path / "elsewhere" / "e.txt").read_text() == "mine too"


def test_parquet_outputs_are_snappy_with_statistics(tmp_path):
    """Every Parquet output (classify -o, a run's files, rejects) is written with snappy, which writes a customer
    table in three quarters of zstd's time (bench/RESULTS.md), and keeps the column statistics readers skip row
    groups by."""
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    atomic_write_frame(pl.DataFrame({"customer_id": [3, 1, 2], "label": ["a", "b", "a"]}), path)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    assert column.compression == "SNAPPY"
    assert column.statistics is not None and (column.statistics.min, column.statistics.max) == (1, 3)


def test_a_generation_is_readable_as_a_plain_mkdir_would_make_it(tmp_path):
    """engine.io: a new generation directory gets the mode ``mkdir`` would give it (0777 less the umask), not
    mkdtemp's private 0700, so whoever may read the output directory may read the outputs through it."""
    from engine.io import STATE_DIR, write_output_set

    mask = os.umask(0o022)
    os.umask(mask)
    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    assert stat.S_IMODE((out / STATE_DIR / "current").stat().st_mode) == 0o777 & ~mask


def test_the_clean_up_spares_what_only_looks_like_a_leftover(tmp_path):
    """engine.io: the clean-up removes a temporary file only when it is one of this module's (``.NAME.*.tmp`` beside
    an output it writes, ``.*.tmp`` in ``.tierbook/``); a user's file that only starts with a dot or only ends in
    ``.tmp`` stays, and a leftover generation that cannot be removed does not stop the rest of the clean-up."""
    import shutil

    import engine.io
    from engine.io import STATE_DIR, write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    state = out / STATE_DIR
    mine = [state / ".keep", state / "notes.tmp", out / "draft.tmp", out / ".a.txt.bak", out / ".b.txt.x.tmp"]
    leftover = [state / ".current.0123456789ab.tmp", out / ".a.txt.0123456789ab.tmp"]
    for p in mine + leftover:
        p.write_text("x")
    (state / "gen-stuck").mkdir()
    real = shutil.rmtree

    def rmtree(path, ignore_errors=False, **kwargs):  # the leftover generation cannot be removed (a busy mount)
        if os.path.basename(path) == "gen-stuck":
            if ignore_errors:
                return
            raise OSError(16, "Device or resource busy")
        real(path, ignore_errors=ignore_errors, **kwargs)

    class Shutil:
        def __getattr__(self, name):
            return rmtree if name == "rmtree" else getattr(shutil, name)

    engine_shutil, engine.io.shutil = engine.io.shutil, Shutil()
    try:
        write_output_set(out, {"a.txt": lambda p: p.write_text("a2")})
    finally:
        engine.io.shutil = engine_shutil
    assert (out / "a.txt").read_text() == "a2"
    assert [p.exists() for p in mine] == [True] * len(mine)
    assert [p.exists() for p in leftover] == [False] * len(leftover)


def test_a_failed_write_into_a_new_directory_leaves_nothing_behind(tmp_path):
    """engine.io: a failed write removes every directory it created (all the missing levels of the output
    directory), and a ``.tierbook/`` that held only a killed run's leftovers is gone afterwards too."""
    from engine.io import STATE_DIR, write_output_set

    def full(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match="No space left on device"):
        write_output_set(tmp_path / "new" / "deeper" / "out", {"a.txt": full})
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "out"
    (out / STATE_DIR / "gen-killed").mkdir(parents=True)
    with pytest.raises(DataError, match="No space left on device"):
        write_output_set(out, {"a.txt": full})
    assert list(out.iterdir()) == []


def _descriptors() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists the process's descriptors in /proc")
def test_a_failed_write_releases_its_lock_and_closes_only_its_own_descriptors(tmp_path):
    """engine.io.write_output_set: a write that fails before it holds the lock closes no descriptor of the process
    (never one it did not open), and one that fails after takes the lock, released, with it, even when the lock
    got descriptor 0 (a process started with its standard input closed, as some schedulers do): the next write
    into the directory must not wait for it forever."""
    import fcntl

    from engine.io import STATE_DIR, write_output_set

    def full(path):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    (out / STATE_DIR).write_text("not a directory")  # the state directory cannot be made
    before = _descriptors()
    with pytest.raises(DataError, match="cannot write the outputs"):
        write_output_set(out, {"a.txt": full})
    assert _descriptors() == before
    (out / STATE_DIR).unlink()
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    stdin = os.dup(0)
    os.close(0)
    try:
        with pytest.raises(DataError, match="No space left on device"):
            write_output_set(out, {"a.txt": full})
        with pytest.raises(OSError):
            os.fstat(0)  # the lock (descriptor 0 while the write ran) is closed again
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
    probe = os.open(out / STATE_DIR, os.O_RDONLY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no descriptor of the failed write holds it
    finally:
        os.close(probe)
    assert _descriptors() == before
    assert (out / "a.txt").read_text() == "a1"


def test_errors_of_the_callers_and_interrupts_pass_through_unchanged(tmp_path):
    """engine.io.write_output_set: a TierbookError raised by ``before``, a writer or ``verify`` (a refusal to
    replace, a reconciliation that fails) reaches the caller as it was raised, and an interrupt (Ctrl-C) stays an
    interrupt; other failures become one DataError. In each case the previous set is unchanged."""
    from engine.io import write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    refused = DataError("out: written by another playbook; --force replaces it")

    def refuse(*args):
        raise refused

    def interrupt(path):
        raise KeyboardInterrupt

    for kwargs in ({"before": refuse}, {"verify": refuse}, {"writers": {"a.txt": refuse}}):
        with pytest.raises(DataError) as err:
            write_output_set(out, **{"writers": {"a.txt": lambda p: p.write_text("a2")}, **kwargs})
        assert err.value is refused
    with pytest.raises(KeyboardInterrupt):
        write_output_set(out, {"a.txt": interrupt})
    assert (out / "a.txt").read_text() == "a1"


def test_an_interrupt_after_the_switch_keeps_the_new_set(tmp_path, monkeypatch):
    """engine.io: once ``current`` points at the new generation the new set is the outputs; an interrupt that
    arrives just after that rename (before the write returns) must not remove the generation it now shows."""
    import engine.io
    from engine.io import write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1")})
    switch = engine.io._point_current

    def switch_then_interrupt(state, gen):
        switch(state, gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.io, "_point_current", switch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_output_set(out, {"a.txt": lambda p: p.write_text("a2")})
    assert (out / "a.txt").read_text() == "a2"


def test_a_users_own_file_under_a_retired_name_stays(tmp_path):
    """engine.io: ``retire`` removes only this module's link under a retired name; a plain file the user put there
    since (the previous set said this writer wrote that name) is theirs and stays."""
    from engine.io import write_output_set

    out = tmp_path / "out"
    write_output_set(out, {"a.txt": lambda p: p.write_text("a1"), "old.txt": lambda p: p.write_text("old")},
                     owner="one")
    (out / "old.txt").unlink()
    (out / "old.txt").write_text("mine")
    write_output_set(out, {"a.txt": lambda p: p.write_text("a2")}, owner="one", retire=["old.txt"])
    assert [(out / n).read_text() for n in ("a.txt", "old.txt")] == ["a2", "mine"]


def test_the_excel_row_limit_applies_to_xlsx_only(tmp_path):
    """engine.io.write_frame: a table of 1,048,576 rows does not fit an Excel sheet below its header and is
    refused as .xlsx (before anything is written), while every other format writes it whole."""
    from engine.io import XLSX_MAX_ROWS, write_frame

    df = pl.DataFrame({"n": pl.repeat(7, XLSX_MAX_ROWS, dtype=pl.Int8, eager=True)})
    with pytest.raises(DataError, match=r"big.xlsx: 1,048,576 rows do not fit an Excel sheet \(at most 1,048,575 "):
        write_frame(df, tmp_path / "big.xlsx")
    assert not (tmp_path / "big.xlsx").exists()
    write_frame(df, tmp_path / "big.parquet")
    assert pl.read_parquet(tmp_path / "big.parquet").height == XLSX_MAX_ROWS


def test_xlsx_styles_a_whole_number_column_alike_with_or_without_values(tmp_path):
    """engine.io.write_xlsx: a whole-number column whose every cell is null is written as a number column, with the
    number format of one that has values, not as text."""
    import zipfile

    def styles(values):
        path = tmp_path / "s.xlsx"
        atomic_write_frame(pl.DataFrame({"n": pl.Series(values, dtype=pl.Int64)}), path)
        with zipfile.ZipFile(path) as z:
            return z.read("xl/styles.xml")

    assert styles([None, None]) == styles([1, 2])
    assert b"#,##0" in styles([None])


def test_each_file_is_flushed_on_a_thread_of_its_own_and_every_flush_ends_before_the_manifest(tmp_path, monkeypatch):
    """engine.io.write_output_set flushes a file (fsync) while it writes the next one; the manifest is written,
    and the set switched in, only once every file's flush has ended. A flush that fails is the write's error,
    naming its file, with the previous set unchanged and no flush left running."""
    import threading
    import time

    import engine.io
    from engine.io import MANIFEST, write_output_set

    real = engine.io._fsync_file
    log: list[str] = []

    def slow(path):  # a slow disk: the flush of a.txt ends after b.txt and c.txt are written
        log.append(f"flush {path.name} on {threading.current_thread().name.split('_')[0]}")
        time.sleep(0.3 if path.name == "a.txt" else 0)
        real(path)
        log.append(f"flushed {path.name}")

    def writer(name):
        def write(path):
            log.append(f"write {name}")
            path.write_text(name)
        return write

    out = tmp_path / "out"
    monkeypatch.setattr(engine.io, "_fsync_file", slow)
    real_fsync = os.fsync
    monkeypatch.setattr(engine.io.os, "fsync", lambda fd: (log.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}"),
                                                             real_fsync(fd))[1])
    write_output_set(out, {n: writer(n) for n in ("a.txt", "b.txt", "c.txt")})
    assert log.index("write c.txt") < log.index("flushed a.txt")  # written while a.txt was flushed
    assert all(entry.endswith("on tierbook-fsync") for entry in log if entry.startswith("flush "))
    manifest = next(i for i, entry in enumerate(log) if entry.endswith(MANIFEST))
    assert all(log.index(f"flushed {n}") < manifest for n in ("a.txt", "b.txt", "c.txt"))
    assert {n: (out / n).read_text() for n in ("a.txt", "b.txt", "c.txt")} == {n: n for n in ("a.txt", "b.txt",
                                                                                               "c.txt")}

    def failing(path):
        time.sleep(0.3)
        if path.name == "a.txt":
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(engine.io, "_fsync_file", failing)
    with pytest.raises(DataError) as err:
        write_output_set(out, {n: lambda p: p.write_text("new") for n in ("a.txt", "b.txt", "c.txt")})
    assert str(err.value) == (f"{out / 'a.txt'}: cannot write the outputs: Input/output error; the previous outputs "
                              "are unchanged")
    assert {n: (out / n).read_text() for n in ("a.txt", "b.txt", "c.txt")} == {n: n for n in ("a.txt", "b.txt",
                                                                                               "c.txt")}
    assert not [t for t in threading.enumerate() if t.name.startswith("tierbook-fsync")]
    assert sorted(os.listdir(out / ".tierbook")) == ["current", os.readlink(out / ".tierbook" / "current")]
