"""Faults injected at fixed points of writing a run's outputs (engine.io.write_output_set).

Every file-system call the writer makes is intercepted. *Kills*: the output
directory is copied as it stands just before each call, which is what a SIGKILL
at that moment leaves on disk; every copy must show the whole old set or the
whole new set, and the next write into it must leave no leftovers. *Failures*:
the k-th call raises ``ENOSPC`` (disk full), for every k; the write must then
fail with one error and leave the directory exactly as it was, or (when the
failing call comes after the switch) leave the whole new set. The order of the
``fsync`` calls is checked against what engine/io.py and SECURITY.md say.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

import engine.io
from engine.errors import DataError
from engine.io import MANIFEST, STATE_DIR, leftovers
from engine.playbook import load_playbook
from engine.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
FILES = ("customers.parquet", "actions.csv", "cut.csv", "summary.json")
CALLS = {"os": ("replace", "rename", "symlink", "link", "fsync", "chmod", "open", "unlink", "rmdir", "mkdir"),
         "shutil": ("rmtree", "copy2"), "tempfile": ("mkdtemp",)}


class _Spy:
    """A stand-in for a module whose chosen functions call ``on(name, args)`` first.

    The writer flushes files on a thread of its own while it writes the next ones: ``on`` is called by one
    thread at a time (a kill's copy of the directory is what it holds at that moment, whatever the other thread
    is doing)."""

    _lock = threading.Lock()

    def __init__(self, real, names, on):
        self._real, self._names, self._on = real, names, on

    def __getattr__(self, attr):
        value = getattr(self._real, attr)
        if attr not in self._names:
            return value

        def call(*args, **kwargs):
            with self._lock:
                self._on(attr, args)
            return value(*args, **kwargs)

        return call


def _spy(monkeypatch, on) -> None:
    for module in (os, shutil, tempfile):
        monkeypatch.setattr(engine.io, module.__name__, _Spy(module, CALLS[module.__name__], on))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A playbook on the bundled sample and two results of it (abc.a 0.8 and 0.6), and their files."""
    base = tmp_path_factory.mktemp("faults")
    path = base / "p.yaml"
    path.write_text((ROOT / "playbooks" / "abc-resource-allocation.yaml").read_text()
                    .replace("../engine/sample", f"{ROOT}/engine/sample"))
    pb = load_playbook(path, registry=get_registry(allow=["abc", "adc", "rfm"], strict=True))
    prepared = pb.prepare()
    old, new = pb.evaluate(prepared), pb.with_params({"abc.a": 0.6}).evaluate(prepared)
    files, raw = {}, {}
    for label, result in (("old", old), ("new", new)):
        _at(pb, base / label).write(result)
        # every file of the set (control.csv too, which its summary's manifest lists)
        raw[label] = {p.name: p.read_bytes() for p in (base / label).iterdir() if p.is_file()}
        files[label] = {name: _content(name, (base / label / name).read_bytes()) for name in FILES}
    assert all(files["old"][n] != files["new"][n] for n in ("actions.csv", "summary.json"))
    return pb, old, new, files, raw["old"]


def _at(pb, directory: Path):
    return dataclasses.replace(pb, outputs={**pb.outputs, "dir": directory})


def _content(name: str, data: bytes) -> bytes:
    """A file's bytes; for summary.json without what its manifest says about this particular write (how long it
    took, into which directory), which differs between two writes of the same result."""
    if name != "summary.json":
        return data
    summary = json.loads(data)
    summary["manifest"].pop("durations_s")
    summary["manifest"]["parameters"]["outputs"].pop("dir")
    return json.dumps(summary, sort_keys=True).encode()


def _visible(directory: Path) -> dict[str, bytes | None]:
    return {name: _content(name, (directory / name).read_bytes()) if (directory / name).exists() else None
            for name in FILES}


def _tree(directory: Path) -> dict[str, object]:
    """Every entry under ``directory``: link targets and file contents."""
    if not directory.exists():
        return {}
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = str(p.relative_to(directory))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("dir",) if p.is_dir() else p.read_bytes()
    return out


def _start(scenario: str, directory: Path, runs) -> dict[str, bytes | None]:
    """Set up the old state of ``directory``; return the files a reader sees in it."""
    pb, old, _, files, _ = runs
    if scenario == "replace":      # the previous run's set, written by this writer
        _at(pb, directory).write(old)
    elif scenario == "migrate":    # plain files, as an earlier tierbook wrote them
        directory.mkdir(parents=True)
        for name, data in runs[4].items():
            (directory / name).write_bytes(data)
    else:                          # first run: nothing there yet
        directory.mkdir(parents=True)
    return _visible(directory)


SCENARIOS = ("replace", "migrate", "first")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_at_any_point_leaves_the_old_or_the_new_set(runs, tmp_path, monkeypatch, scenario):
    pb, _, new, files, _ = runs
    out = tmp_path / "out"
    before = _start(scenario, out, runs)
    snapshots: list[tuple[str, Path]] = []

    def kill_here(name, args):  # what a SIGKILL just before this call leaves on disk
        copy = tmp_path / f"s{len(snapshots):03d}"
        shutil.copytree(out, copy, symlinks=True)
        snapshots.append((name, copy))

    _spy(monkeypatch, kill_here)
    _at(pb, out).write(new)
    monkeypatch.undo()
    snapshots.append(("end", out))
    calls = {name for name, _ in snapshots}
    assert {"mkdtemp", "fsync", "symlink", "replace"} <= calls, calls
    seen = []
    for i, (name, copy) in enumerate(snapshots):
        state = _visible(copy)
        assert state in (before, files["new"]), f"killed before call {i} ({name}): neither the old nor the new set"
        seen.append("old" if state == before else "new")
    # old until the switch, new from then on: one switch
    assert seen == ["old"] * seen.index("new") + ["new"] * (len(seen) - seen.index("new")), seen
    for _, copy in snapshots:  # the next run into the same directory cleans what the killed one left
        _at(pb, copy).write(new)
        assert _visible(copy) == files["new"]
        assert leftovers(copy) == []
        assert sorted(os.listdir(copy / STATE_DIR)) == ["current", os.readlink(copy / STATE_DIR / "current")]
    print(f"{scenario}: {len(snapshots)} kill points, {seen.count('old')} old, {seen.count('new')} new")


def _count_calls(monkeypatch, pb, result, directory: Path) -> int:
    calls = []
    _spy(monkeypatch, lambda name, args: calls.append(name))
    _at(pb, directory).write(result)
    monkeypatch.undo()
    return len(calls)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failure_at_any_point_leaves_the_old_set_exactly(runs, tmp_path, monkeypatch, scenario):
    pb, _, new, files, _ = runs
    _start(scenario, tmp_path / "probe", runs)
    n = _count_calls(monkeypatch, pb, new, tmp_path / "probe")
    failed = committed = 0
    for k in range(1, n + 1):
        out = tmp_path / f"k{k}"
        before_visible = _start(scenario, out, runs)
        before = _tree(out)
        count = [0]

        def disk_full(name, args, k=k, count=count):
            count[0] += 1
            if count[0] == k:
                raise OSError(errno.ENOSPC, "No space left on device")

        _spy(monkeypatch, disk_full)
        try:
            _at(pb, out).write(new)
        except DataError as exc:
            monkeypatch.undo()
            failed += 1
            assert "cannot write the outputs: No space left on device; the previous outputs are unchanged" \
                in str(exc)
            assert "\n" not in str(exc)
            assert _visible(out) == before_visible, f"call {k}"
            if scenario == "migrate":  # plain files may have been turned into links to the same content
                assert leftovers(out) == [], f"call {k}"
            else:
                assert _tree(out) == before, f"call {k}: the directory changed"
        else:
            monkeypatch.undo()
            committed += 1  # the failing call came after the switch (best-effort syncs and clean-up)
            assert _visible(out) == files["new"], f"call {k}"
    assert failed and committed, (failed, committed)


def test_fsync_comes_where_the_docs_say(runs, tmp_path, monkeypatch):
    """Each file and the generation directory are flushed before the switch; the state directory after it."""
    pb, old, new, _, _ = runs
    out = tmp_path / "out"
    _at(pb, out).write(old)
    log: list[tuple[str, str]] = []

    def record(name, args):
        if name == "fsync":
            log.append(("fsync", os.readlink(f"/proc/self/fd/{args[0]}")))
        elif name == "replace":
            log.append(("replace", str(args[1])))

    _spy(monkeypatch, record)
    _at(pb, out).write(new)
    monkeypatch.undo()
    state = (out / STATE_DIR).resolve()
    switch = log.index(("replace", str(out / STATE_DIR / "current")))
    gen = (out / STATE_DIR / "current").resolve()
    synced_before = {path for call, path in log[:switch] if call == "fsync"}
    assert {str(gen / name) for name in (*FILES, MANIFEST)} | {str(gen)} <= synced_before, synced_before
    assert ("fsync", str(state)) in log[switch + 1:]
    files_synced = [i for i, (call, path) in enumerate(log) if call == "fsync" and path == str(gen / MANIFEST)]
    assert files_synced and max(i for i, (c, p) in enumerate(log) if c == "fsync" and Path(p).name in FILES) \
        < files_synced[0], "the manifest is written last"


def test_every_output_goes_through_the_atomic_path(runs, tmp_path, monkeypatch, run_cli):
    """Every file tierbook writes (run, classify -o, --rejects, a saved playbook) is a temporary path handed
    out by engine.io; a writer that wrote its target directly would show up here."""
    import builtins

    import polars as pl

    copy = tmp_path / "p.yaml"
    copy.write_text(runs[0].path.read_text())
    issued: set[Path] = set()
    monkeypatch.setattr(engine.io, "_on_temporary", lambda p: issued.add(Path(p).resolve()))
    written: list[Path] = []
    for method in ("write_parquet", "write_csv", "write_json", "write_ndjson", "write_excel", "write_ipc"):
        real = getattr(pl.DataFrame, method)

        def spy(self, file=None, *args, _real=real, **kwargs):
            written.append(Path(file).resolve())
            return _real(self, file, *args, **kwargs)

        monkeypatch.setattr(pl.DataFrame, method, spy)
    real_open = builtins.open

    def spy_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(m in mode for m in "wax+"):
            written.append(Path(file).resolve())
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    import io as _io
    monkeypatch.setattr(_io, "open", spy_open)
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    pb = runs[0]
    sample = ROOT / "engine" / "sample" / "online_retail_sample.csv"
    maps = [a for k, v in (("customer_id", "CustomerID"), ("order_id", "InvoiceNo"), ("order_date", "InvoiceDate"),
                           ("quantity", "Quantity"), ("unit_price", "UnitPrice")) for a in ("--map", f"{k}={v}")]
    assert run_cli("run", pb.path, "--output-dir", tmp_path / "out")[0] == 0
    for suffix in (".csv", ".parquet", ".json", ".ndjson"):
        code, _, err = run_cli("classify", sample, *maps, "-o", tmp_path / f"c{suffix}",
                               "--rejects", tmp_path / f"r{suffix}")
        assert code == 0, err
    load_playbook(copy, registry=pb.registry).with_params({"abc.a": 0.7}).save()
    assert run_cli("run", pb.path, "--output-dir", tmp_path / "out", "--set", "abc.a=0.6")[0] == 0
    mine = [p for p in written if p.is_relative_to(tmp_path.resolve())]
    assert mine and all(p in issued for p in mine), [p for p in mine if p not in issued]
