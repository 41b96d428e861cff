"""The bad-input corpus: one YAML file a case under ``tests/engine/bad_input/cases/``.

A case says which files to create, which command to run and what must happen::

    about: one line for docs/bad-input.md
    files:                       # created in an empty working directory
      tx.csv: |                  # text (UTF-8) ...
        customer_id,order_date,amount
      latin1.csv: {text: "...", encoding: latin-1, bom: false}
      book.xlsx: {xlsx: {Sheet1: [[header ...], [row ...]]}}
      tx.parquet: {parquet: {column: [values ...]}}
    install:                     # fake installed distributions (entry points)
      - {name: tierbook-bad, version: 0.3.1, entry_points: {boom: bad_raises}}
    env: {TIERBOOK_LOAD_PLUGINS: "abc,adc,rfm,boom"}   # default: abc,adc,rfm
    args: [classify, tx.csv, -o, out/customers.csv]
    exit: 2
    message: "tx.csv: column 'amount'"     # a substring of the one error line
    writes: [out/customers.csv]            # exit 0 only: the files it must write
    stderr: "not used: 1 rows"             # exit 0 only: a substring of stderr
    values:                                # exit 0 only: columns of written files, row by row
      out/customers.csv: {customer_id: [c1, c2], frequency: [2, 1], monetary: [17.5, 5.0]}

Every failing case must print exactly one line, ``tierbook: error: ...``, with no
traceback, and leave the working directory exactly as it was (no output, no
temporary file). The plugin modules of the corpus live in ``bad_input/plugins``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from engine.io import leftovers

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_input"
CASES = sorted((CORPUS / "cases").glob("*.yaml"))
PLUGINS = CORPUS / "plugins"
DEFAULT_ENV = {"TIERBOOK_LOAD_PLUGINS": "abc,adc,rfm"}
CATEGORIES = ("data", "cli", "playbook", "plugin")


def load_case(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict), path
    unknown = set(case) - {"about", "files", "install", "env", "args", "exit", "message", "writes", "stderr",
                           "stdout", "values"}
    assert not unknown, f"{path.name}: unknown keys {unknown}"
    assert path.stem.split("-")[0] in CATEGORIES, f"{path.name}: name must start with one of {CATEGORIES}"
    assert case.get("about") and case.get("args") and "exit" in case, path.name
    if case["exit"] != 0:
        assert case.get("message"), f"{path.name}: a failing case needs its message"
    return case


def _write_file(path: Path, spec: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, str):
        path.write_bytes(spec.encode("utf-8"))
    elif "xlsx" in spec:
        import xlsxwriter

        book = xlsxwriter.Workbook(str(path))
        for sheet, rows in spec["xlsx"].items():
            ws = book.add_worksheet(sheet)
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    if value is not None:
                        ws.write(r, c, value)
        book.close()
    elif "parquet" in spec:
        pl.DataFrame(spec["parquet"], strict=False).write_parquet(path)
    elif "bytes" in spec:
        path.write_bytes(bytes.fromhex(spec["bytes"]))
    else:
        data = spec["text"].encode(spec.get("encoding", "utf-8"))
        if spec.get("bom"):
            data = b"\xef\xbb\xbf" + data
        path.write_bytes(data)


def _install(site: Path, dist: dict[str, Any]) -> None:
    """A minimal installed distribution: METADATA and entry_points.txt on sys.path."""
    info = site / f"{dist['name'].replace('-', '_')}-{dist['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist['name']}\nVersion: {dist['version']}\n")
    eps = "".join(f"{name} = {module}\n" for name, module in dist["entry_points"].items())
    (info / "entry_points.txt").write_text(f"[tierbook]\n{eps}")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def run_case(path: Path, work: Path, monkeypatch, capsys) -> tuple[dict, int, str, str, set[str]]:
    """Set the case up in ``work``, run it in-process.

    Returns (case, exit code, stdout, stderr, the files in ``work`` before the run).
    """
    from engine.cli import main

    case = load_case(path)
    work.mkdir(parents=True, exist_ok=True)
    for name, spec in (case.get("files") or {}).items():
        _write_file(work / name, spec)
    (work / "out").mkdir(exist_ok=True)
    site = work.parent / f"{work.name}-site"
    for dist in case.get("install") or []:
        _install(site, dist)
    monkeypatch.syspath_prepend(str(PLUGINS))
    if case.get("install"):
        monkeypatch.syspath_prepend(str(site))
    for key, value in {**DEFAULT_ENV, **(case.get("env") or {})}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("TIERBOOK_TRACEBACK", raising=False)
    monkeypatch.chdir(work)
    before = _tree(work)
    capsys.readouterr()
    try:
        code = main([str(a) for a in case["args"]])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return case, code, out, err, before


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_input(path: Path, tmp_path, monkeypatch, capsys):
    case, code, out, err, before = run_case(path, tmp_path / "work", monkeypatch, capsys)
    work = tmp_path / "work"
    assert "Traceback" not in err + out
    assert code == case["exit"], f"exit {code}, expected {case['exit']}\nstdout: {out}\nstderr: {err}"
    if case["exit"] != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"expected one line, got:\n{err}"
        assert lines[0].startswith("tierbook: error: "), lines[0]
        assert case["message"] in lines[0], f"\nexpected: {case['message']}\ngot:      {lines[0]}"
        assert _tree(work) == before, f"files written: {sorted(_tree(work) - before)}"
    else:
        for name in case.get("writes") or []:
            assert (work / name).is_file(), f"{name} was not written"
        assert not [p for p in _tree(work) - before if Path(p).name.endswith(".tmp")], "temporary files left"
        for directory in {(work / p).parent.parent for p in _tree(work) - before if Path(p).name == "current"}:
            assert leftovers(directory) == [], "temporary files left"
        if case.get("stderr"):
            assert case["stderr"] in err, err
        if case.get("stdout"):
            assert case["stdout"] in out, out
        for name, columns in (case.get("values") or {}).items():
            check_values(work / name, columns)


def check_values(path: Path, columns: dict[str, list]) -> None:
    """Each listed column of the written file holds exactly these values, in order (numbers compared as
    numbers, everything else as the text the file holds; null as an empty value)."""
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    for column, expected in columns.items():
        assert column in frame.columns, f"{path.name}: no column {column!r} (columns: {frame.columns})"
        got = frame[column].to_list()
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in expected):
            got = [None if v in (None, "") else float(v) for v in got]
            expected = [float(v) for v in expected]
        else:
            got = [None if v in (None, "") else str(v) for v in got]
            expected = [None if v is None else str(v) for v in expected]
        assert got == expected, f"{path.name}: column {column}: {got} != {expected}"


def test_docs_table_is_current():
    """docs/bad-input.md is generated from the corpus (tools/bad_input_table.py)."""
    root = HERE.parents[1]
    sys.path.insert(0, str(root / "tools"))
    try:
        import bad_input_table
    finally:
        sys.path.remove(str(root / "tools"))
    current = (root / "docs" / "bad-input.md").read_text(encoding="utf-8")
    assert current == bad_input_table.render(), "run: python tools/bad_input_table.py > docs/bad-input.md"



def test_skipped_plugin_is_named_in_the_summary(tmp_path, monkeypatch, capsys):
    """--skip-failing-plugins: the run goes on, the customers are all there, summary.json names the plugin."""
    import json

    case, code, out, err, _ = run_case(CORPUS / "cases" / "playbook-plugin-raises-skipped.yaml", tmp_path / "work",
                                       monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "work" / "out" / "summary.json").read_text())
    assert summary["reconciliation"]["ok"]
    [skipped] = summary["skipped_plugins"]
    assert skipped.startswith("classifier 'boom' of bad_raises (module bad_raises) failed: RuntimeError")
    customers = pl.read_parquet(tmp_path / "work" / "out" / "customers.parquet")
    assert customers["boom"].null_count() == customers.height  # left empty: no rule on it can match
    assert customers["abc"].null_count() == 0


def test_a_rule_on_a_skipped_classifier_matches_no_one(tmp_path, monkeypatch, capsys):
    """boom IS NULL would match every customer once boom's column is left empty: the rule is not evaluated."""
    import json

    case, code, out, err, _ = run_case(CORPUS / "cases" / "playbook-rule-on-skipped-classifier.yaml",
                                       tmp_path / "work", monkeypatch, capsys)
    assert code == 0, err
    work = tmp_path / "work" / "out"
    summary = json.loads((work / "summary.json").read_text())
    assert summary["skipped_rules"] == [{"rule": "no-boom",
                                         "reason": "it reads 'boom' of classifier 'boom', which was skipped"}]
    hits = {r["rule"]: r["hits"] for r in summary["rules"]}
    assert hits == {"no-boom": 0, "top": 1, "fallback": 1}
    actions = pl.read_csv(work / "actions.csv")
    assert sorted(actions["rule"].to_list()) == ["fallback", "top"]
    assert summary["reconciliation"]["ok"]
