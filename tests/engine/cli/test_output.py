"""engine.cli.output and engine.terminal: nothing from data or plugins reaches the terminal raw.

A class of bug, tested as one: control characters (ESC sequences, carriage returns, line breaks)
in column names, values, labels, rule names and plugin errors, through every command that shows
them; and CSV header cells that a spreadsheet would run as formulas.
"""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[3]
ESC = "\x1b[2J\x1b[31m"


def _clean(text: str) -> None:
    bad = [ch for ch in text if ch not in "\n" and (ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 or ch in "\u2028\u2029\u202e")]
    assert not bad, f"control characters reached the terminal: {bad!r}"


def test_nothing_in_the_command_prints_but_through_the_safe_path():
    """Every print of engine/ is in engine/cli/output.py (which makes each line safe)."""
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if path == ROOT / "engine" / "cli" / "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "write" and isinstance(node.value, ast.Attribute) \
                    and node.value.attr in ("stdout", "stderr"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (sys.{node.value.attr}.write)")
    assert not offenders, offenders


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """Transactions and a customer table whose header and values carry ESC sequences and line breaks."""
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    monkeypatch.chdir(tmp_path)
    pl.DataFrame({"customer_id": [f"c1{ESC}", "c2\nforged: line"], "order_id": ["o1", "o2"],
                  "order_date": ["2024-01-02", "2024-01-03"], "amount": [10.0, 5.0],
                  f"note{ESC}": ["x", "y"], "=HYPERLINK(\"http://x\")": ["a", "b"]}).write_csv(tmp_path / "tx.csv")
    pl.DataFrame({"customer_id": [f"c1{ESC}", "c3"], f"region\r{ESC}": [f"north{ESC}", "south\nforged"],
                  "@cmd": ["p", "q"]}).write_parquet(tmp_path / "customers.parquet")
    return tmp_path


def test_data_headers_and_values_never_reach_the_terminal_raw(hostile, run_cli):
    code, out, err = run_cli("describe", "tx.csv", "--customers", "customers.parquet")
    assert code == 0, err
    _clean(out + err)
    code, out, err = run_cli("classify", "tx.csv", "--map", f"customer_id=missing{ESC}\nforged", "-o", "c.csv")
    assert code == 2
    _clean(out + err)
    assert len(err.strip().splitlines()) == 1 and "\\x1b[2J" in err  # shown escaped, one line
    (hostile / "pb.yaml").write_text(textwrap.dedent("""\
        name: case
        data:
          transactions: tx.csv
          customers: customers.parquet
        classifiers:
          abc: {}
        rules:
          - name: "r\\nforged: line \\e[2J"
            when: abc = 'A'
            action: call
            channel: phone
            owner: sales
        outputs:
          customers: customers.csv
        """))
    code, out, err = run_cli("run", "pb.yaml")
    assert code == 0, err
    _clean(out + err)
    assert not any(line.startswith("forged") for line in (out + err).splitlines())
    code, out, err = run_cli("explain", "pb.yaml", f"c1{ESC}")
    assert code == 0, err
    _clean(out + err)
    assert "north\\x1b[2J" in out and not any(line.startswith("forged") for line in out.splitlines())


def test_csv_header_cells_are_neutralised_everywhere(hostile, run_cli):
    """classify -o, --rejects and run's CSV outputs: a header cell starting with = + - @ is prefixed with '."""
    with (hostile / "tx.csv").open("a") as fh:
        fh.write("c4,o4,,3.0,z,w\n")  # an empty date: a rejected row
    code, _, err = run_cli("classify", "tx.csv", "--customers", "customers.parquet", "-o", "c.csv",
                           "--rejects", "r.csv")
    assert code == 0, err
    header = pl.read_csv(hostile / "c.csv", infer_schema=False).columns
    assert "'@cmd" in header and "@cmd" not in header
    rejects = pl.read_csv(hostile / "r.csv", infer_schema=False).columns
    assert any(c.startswith("'=HYPERLINK(") for c in rejects) and not [c for c in rejects if c.startswith(("=", "+", "-", "@"))]
    from engine.io import neutralise_formulas

    both = neutralise_formulas(pl.DataFrame({"=a": [1], "'=a": [2], "+b": ["-c"]}))
    assert both.columns == ["''=a", "'=a", "'+b"] and both["'+b"].to_list() == ["'-c"]


def test_a_plugin_error_with_line_breaks_and_esc_stays_one_safe_line(tmp_path, run_cli, monkeypatch):
    (tmp_path / "evil_plugin.py").write_text(textwrap.dedent('''\
        from engine import Classifier, Output, hookimpl

        def _expressions(params, ctx):
            raise RuntimeError("model missing\\ntierbook: wrote customers: all fine\\x1b[2J")

        @hookimpl
        def register_classifiers(register):
            register(Classifier(name="evil", description="evil\\x1b[31m", requires=("monetary",),
                                outputs=(Output("evil", "evil", labels=("a\\x1b[31m", "b\\nforged")),),
                                params=(), expressions=_expressions))
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    data = tmp_path / "tx.csv"
    data.write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10\n")
    for args in (["classify", data, "--plugin", "evil_plugin", "-o", tmp_path / "c.parquet"],
                 ["classify", data, "--plugin", "evil_plugin", "-o", tmp_path / "c.parquet",
                  "--skip-failing-plugins"],
                 ["describe", data, "--plugin", "evil_plugin", "--skip-failing-plugins"],
                 ["plugins", "--plugin", "evil_plugin"]):
        code, out, err = run_cli(*args)
        _clean(out + err)
        assert not any(line.startswith(("tierbook: wrote", "forged")) for line in (out + err).splitlines()), args
    code, out, err = run_cli("classify", data, "--plugin", "evil_plugin", "-o", tmp_path / "c.parquet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model missing\\ntierbook: wrote" in err
    json.loads(run_cli("plugins", "--json", "--plugin", "evil_plugin")[1])  # JSON stays JSON
    assert sys.modules.pop("evil_plugin", None) is not None
