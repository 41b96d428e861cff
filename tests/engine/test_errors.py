"""engine.errors: structured attributes, and messages in the caller's words (Python, command line, playbook)."""

from __future__ import annotations

import ast
import pickle
import re
import textwrap
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import CLI_WORDS, DataError, ParamError, PlaybookError, Problem, TierbookError, speaking

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _api_errors(tmp_path, registry) -> list[TierbookError]:
    """One error of each kind that used to name a command-line option when raised from Python."""
    tx = tmp_path / "tx.csv"
    tx.write_text("customer_id,order_date,amount\nc1,2011-01-02,5\n")
    customers = pl.DataFrame({"customer_id": ["c1"], "recency_days": [3], "frequency": [1], "monetary": [5.0]})
    calls = [
        lambda: engine.classify_frame(customers, "rfm", params={"bins": 4}, registry=registry),
        lambda: engine.classify_frame(customers, "rfm", params=["bins=4"], registry=registry),
        lambda: engine.classify(tx, mapping=["customer_id"], registry=registry),
        lambda: engine.classify(tx, mapping={"custmer_id": "x"}, registry=registry),
        lambda: engine.classify(tx, as_of="10/12/2011", registry=registry),
        lambda: engine.classify(tx, sheet="Sales", registry=registry),
        lambda: engine.classify(pl.DataFrame({"customer_id": ["c1"], "amount": [1.0]}), registry=registry),
        lambda: engine.classify(tx, customers=pl.DataFrame({"cust": ["c1"]}), registry=registry),
        lambda: engine.get_registry(plugins_dir=tmp_path / "no-such-dir"),
    ]
    errors = []
    for call in calls:
        with pytest.raises(TierbookError) as info:
            call()
        errors.append(info.value)
    return errors


def test_errors_from_the_python_api_name_no_command_line_option(tmp_path, registry):
    errors = _api_errors(tmp_path, registry)
    assert [m for m in map(str, errors) if FLAG.search(m)] == []
    text = [str(e) for e in errors]
    assert text[0] == ("params: key 'bins' does not name a classifier: give {'<classifier>.bins': 4} or "
                       "{'<classifier>': {'bins': 4}}")
    assert text[1] == "params bins=4: expected classifier.param=value"
    assert text[4] == "as_of: '10/12/2011' is not a date in the form YYYY-MM-DD"
    assert text[5].endswith("tx.csv: sheet 'Sales' applies to Excel workbooks (.xlsx) only")
    assert "map it with mapping={'order_date': COLUMN}" in text[6]
    assert "choose it with customers_id=COLUMN" in text[7]


def test_the_command_line_names_its_options(run_cli, tmp_path):
    tx = tmp_path / "tx.csv"
    tx.write_text("customer_id,order_date,amount\nc1,2011-01-02,5\n")
    code, _, err = run_cli("describe", tx, "--as-of", "10/12/2011")
    assert code == 2 and "--as-of: '10/12/2011' is not a date" in err
    code, _, err = run_cli("describe", tx, "--set", "bins=4")
    assert code == 2 and "tierbook: error: --set bins=4: expected classifier.param=value\n" in err
    # and the words do not leak into the next Python call
    with pytest.raises(DataError, match="^as_of: "):
        engine.classify(tx, as_of="10/12/2011")


def test_a_playbook_names_its_own_keys(tmp_path, registry):
    (tmp_path / "tx.csv").write_text("customer,order_date,amount\nc1,2011-01-02,5\n")
    book = tmp_path / "book.yaml"
    book.write_text(textwrap.dedent("""\
        name: book
        data:
          transactions: tx.csv
        classifiers:
          abc: {}
    """))
    with pytest.raises(PlaybookError) as info:
        engine.load_playbook(book, registry=registry)
    assert "map it with data.map: {customer_id: COLUMN}" in str(info.value)
    with speaking(CLI_WORDS):  # run from the command line, the playbook's keys still name the data
        with pytest.raises(PlaybookError, match=r"data\.map: \{customer_id: COLUMN\}"):
            engine.load_playbook(book, registry=registry)


def test_engine_messages_take_option_names_from_the_callers_words():
    # A message naming a command-line flag would be wrong when raised from Python: every option a
    # message names goes through engine.errors.option() (docstrings and engine/cli/ excepted).
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts or path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and FLAG.search(node.value)]
    assert offenders == []


def test_errors_carry_their_facts_as_attributes(tmp_path, registry):
    with pytest.raises(ParamError) as info:
        engine.classify_frame(pl.DataFrame({"customer_id": [1], "monetary": [1.0]}), "abc", params={"abc.a": 2},
                              registry=registry)
    err = info.value
    assert (err.param, err.value, err.source) == ("a", 2, "abc.a")
    assert str(err) == f"abc.a: {err.reason}"

    book = tmp_path / "book.yaml"
    book.write_text("name: book\ndata:\n  transactions: tx.csv\nclassifiers:\n  abc: {a: 2}\n")
    (tmp_path / "tx.csv").write_text("customer_id,order_date,amount\nc1,2011-01-02,5\n")
    with pytest.raises(PlaybookError) as info:
        engine.load_playbook(book, registry=registry)
    problem = info.value.problems[0]
    assert isinstance(problem, Problem)
    assert (problem.file, problem.line) == (str(book), 5)
    assert problem.message == "classifiers.abc.a: 2 is above the maximum 0.99 of 'a'"
    assert (info.value.file, info.value.line) == (str(book), 5)


def test_errors_survive_pickling():
    err = ParamError("too big", source="--set x.a", param="a", value=3)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.param, again.value, again.source) == (str(err), "a", 3, "--set x.a")
    data = pickle.loads(pickle.dumps(DataError("f.csv: row 2: bad", file="f.csv", row=2)))
    assert (str(data), data.file, data.row) == ("f.csv: row 2: bad", "f.csv", 2)
    book = pickle.loads(pickle.dumps(PlaybookError([Problem("b.yaml", 3, "oops")])))
    assert book.problems[0].line == 3 and book.line == 3


def test_yaml_syntax_errors_are_problems_with_their_line(tmp_path):
    from engine.yamlio import load_marked

    path = tmp_path / "book.yaml"
    path.write_text("name: x\ndata:\n  transactions: !include other.yaml\n")
    with pytest.raises(PlaybookError) as info:
        load_marked(path)
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == (str(path), 3)
    assert problem.message == "YAML syntax: the tag '!include' is not allowed (playbooks are plain data)"


def test_a_bad_value_error_names_file_row_line_column_and_value(tmp_path, registry):
    path = tmp_path / "tx.csv"
    path.write_text("Cust,When,Amount\nc1,2011-01-02,5\nc2,yesterday,3\n")
    with pytest.raises(DataError) as info:
        engine.classify(path, mapping={"customer_id": "Cust", "order_date": "When", "amount": "Amount"},
                        registry=registry)
    err = info.value
    assert (err.file, err.row, err.line, err.column, err.value) == (str(path), 2, 3, "When", "yesterday")
    assert str(err).startswith(f"{path}: column 'When' (order_date), row 2 (line 3): 'yesterday' is not a date")
