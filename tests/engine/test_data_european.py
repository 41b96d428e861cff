"""engine.data and engine.io with the files European spreadsheets and pandas write (issue 10, item 17).

Semicolons as the delimiter, a decimal comma with dots between thousands, day-first dotted dates,
a byte-order mark and CRLF line ends; Excel output; an as_of long after the data.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import polars as pl
import pytest

import engine
from engine import DataError

ROWS = {
    "Kunde": ["c1", "c2", "c1", "c3"],
    "Beleg": ["o1", "o2", "o3", "o4"],
    "Datum": ["01.02.2024", "25.02.2024", "03.03.2024", "04.03.2024"],
    "Betrag": [12.5, 1234.5, -2.25, 0.1],
}
MAP = {"customer_id": "Kunde", "order_id": "Beleg", "order_date": "Datum", "amount": "Betrag"}


def pandas_export(path, **kw):
    """What pandas writes for a German spreadsheet: sep=';', decimal=','."""
    pd.DataFrame(ROWS).to_csv(path, sep=";", decimal=",", index=False, **kw)
    return path


def expected_monetary():
    return {"c1": 10.25, "c2": 1234.5, "c3": 0.1}


def monetary(prepared):
    return dict(prepared.customers.select("customer_id", "monetary").iter_rows())


def test_pandas_semicolon_decimal_comma_export(tmp_path):
    path = pandas_export(tmp_path / "export.csv")
    assert "12,5" in path.read_text()
    got = engine.prepare(path, mapping=MAP, decimal_comma=True)
    assert monetary(got) == expected_monetary()
    assert got.report.notes[0].endswith("read with ';' as the delimiter (the header has no comma); give delimiter to "
                                        "choose another")
    assert "read day-first (%d.%m.%Y)" in got.report.notes[1]
    assert got.customers["first_order"].min() == dt.date(2024, 2, 1)


def test_excel_like_export_with_bom_crlf_and_thousands(tmp_path):
    path = tmp_path / "excel.csv"
    text = "Kunde;Beleg;Datum;Betrag\r\nc1;o1;01.02.2024;12,50\r\nc2;o2;25.02.2024;1.234,50\r\n" \
           "c1;o3;03.03.2024;-2,25\r\nc3;o4;04.03.2024;0,10\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    got = engine.prepare(path, mapping=MAP, decimal_comma=True, delimiter=";")
    assert monetary(got) == expected_monetary()
    assert got.report.notes == [n for n in got.report.notes if "delimiter" not in n]  # given, so nothing to note


def test_decimal_comma_is_strict(tmp_path):
    path = tmp_path / "tx.csv"
    for bad in ("1.5", "1,234.5", "12,5,0", "1.23,5", "1e3"):
        path.write_text(f"customer_id;order_date;amount\nc1;2024-01-02;{bad}\n")
        with pytest.raises(DataError, match=rf"'{bad}' is not a finite number"):
            engine.prepare(path, decimal_comma=True)
    path.write_text("customer_id;order_date;amount\nc1;2024-01-02;12,50\n")
    with pytest.raises(DataError, match=r"'12,50' is not a finite number \(a decimal comma\? read the file with "
                                        r"decimal_comma\)"):
        engine.prepare(path)


def test_decimal_comma_in_quantity_and_price(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id;order_date;quantity;unit_price\nc1;2024-01-02;3;1,10\nc1;2024-01-03;-1;1,10\n")
    assert monetary(engine.prepare(path, decimal_comma=True)) == {"c1": 2.2}
    with pytest.raises(DataError, match=r"'3 x 1,10' is not a finite number \(a decimal comma\?"):
        engine.prepare(path)


@pytest.mark.parametrize("given, sep", [("tab", "\t"), ("\\t", "\t"), ("|", "|"), (",", ",")])
def test_delimiter_option(tmp_path, given, sep):
    path = tmp_path / "tx.csv"
    path.write_text(sep.join(["customer_id", "order_date", "amount"]) + "\n" + sep.join(["c1", "2024-01-02", "3"])
                    + "\n")
    assert monetary(engine.prepare(path, delimiter=given)) == {"c1": 3.0}


def test_a_tab_separated_csv_is_found_from_its_header(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id\torder_date\tamount\nc1\t2024-01-02\t3\n")
    got = engine.prepare(path)
    assert monetary(got) == {"c1": 3.0} and "read with a tab as the delimiter" in got.report.notes[0]


def test_rejects_and_bad_rows_use_the_delimiter(tmp_path, run_cli):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id|order_date|amount\nc1|2024-01-02|3,5\n|2024-01-03|1\nc2|2024-01-04|1|9\n")
    code, _, err = run_cli("classify", path, "--delimiter", "|", "--decimal-comma", "-o", tmp_path / "o.csv")
    assert code == 2 and "line 4: 4 fields, but the header has 3: 'c2|2024-01-04|1|9'" in err, err
    path.write_text("customer_id|order_date|amount\nc1|2024-01-02|3,5\n|2024-01-03|1\n")
    code, _, err = run_cli("classify", path, "--delimiter", "|", "--decimal-comma", "-o", tmp_path / "o.csv",
                           "--rejects", tmp_path / "r.csv")
    assert code == 0, err
    assert pl.read_csv(tmp_path / "r.csv")["row"].to_list() == [2]
    assert pl.read_csv(tmp_path / "o.csv")["monetary"].to_list() == [3.5]


def test_playbook_data_delimiter_and_decimal_comma(tmp_path):
    pandas_export(tmp_path / "export.csv")
    (tmp_path / "p.yaml").write_text(
        "name: eu\ndata:\n  transactions: export.csv\n  delimiter: ';'\n  decimal_comma: true\n  map:\n"
        "    customer_id: Kunde\n    order_id: Beleg\n    order_date: Datum\n    amount: Betrag\n"
        "classifiers:\n  abc: {}\n")
    pb = engine.load_playbook(tmp_path / "p.yaml")
    assert monetary(pb.prepare()) == expected_monetary()
    from engine.playbook import playbook_schema

    data = playbook_schema()["properties"]["data"]["properties"]
    assert data["decimal_comma"]["type"] == "boolean" and data["delimiter"]["type"] == "string"


# ---------------------------------------------------------------- .xlsx output
def test_classify_writes_xlsx(tmp_path, run_cli):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,order_id,order_date,amount\n=1+1,o1,2024-01-02,10.5\nc2,o2,2024-01-03,5\n"
                    "c2,o3,2024-01-04,-1\n")
    out = tmp_path / "customers.xlsx"
    code, _, err = run_cli("classify", path, "-o", out)
    assert code == 0, err
    book = pl.read_excel(out, engine="calamine")
    csv_out = tmp_path / "customers.csv"
    assert run_cli("classify", path, "-o", csv_out)[0] == 0
    assert book.columns == pl.read_csv(csv_out).columns
    assert book["customer_id"].to_list() == ["=1+1", "c2"]  # text, not a formula (and no quote added)
    assert book["monetary"].to_list() == [10.5, 4.0]
    assert book["last_order"].to_list() == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]   # a return is no purchase
    assert book["last_activity"].to_list() == [dt.date(2024, 1, 2), dt.date(2024, 1, 4)]
    assert book["abc"].to_list() == ["A", "C"]
    import zipfile

    sheet = zipfile.ZipFile(out).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet  # no formula cell anywhere


def test_xlsx_keeps_large_whole_numbers_exact(tmp_path):
    from engine.io import atomic_write_frame

    out = tmp_path / "t.xlsx"
    atomic_write_frame(pl.DataFrame({"customer_id": [2**60 + 1, 7], "n": [1, 2]}), out)
    book = pl.read_excel(out, engine="calamine", infer_schema_length=0)
    assert book["customer_id"].to_list() == [str(2**60 + 1), "7"]


def test_playbook_outputs_may_be_xlsx(tmp_path):
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10\n")
    (tmp_path / "p.yaml").write_text(
        "name: x\ndata:\n  transactions: tx.csv\nclassifiers:\n  abc: {}\n"
        "fallback: {action: none, channel: none, owner: x}\noutputs:\n  customers: customers.xlsx\n"
        "  actions: actions.xlsx\n")
    pb = engine.load_playbook(tmp_path / "p.yaml")
    pb.run()
    paths = pb.output_paths()
    assert pl.read_excel(paths["customers"])["customer_id"].to_list() == ["c1"]
    assert pl.read_excel(paths["actions"])["action"].to_list() == ["none"]


# ------------------------------------------------------ an implausible as_of
def test_as_of_long_after_the_data_warns(tmp_path, run_cli):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,order_date,amount\nc1,2024-01-02,3\nc2,2024-01-03,4\n")
    got = engine.prepare(path, as_of="2025-01-02")
    assert got.report.warnings == []  # 365 days: the last customer bought a year ago, nothing implausible yet
    got = engine.prepare(path, as_of="2025-01-03")
    assert got.report.warnings == ["as_of 2025-01-03 is 366 days after the last usable transaction (2024-01-03): "
                                   "every customer's recency is at least 366 days, so every customer looks lost; "
                                   "is as_of right?"]
    code, out, err = run_cli("describe", path, "--as-of", "2030-01-01")
    assert code == 0 and "  warning: as_of 2030-01-01 is 2,190 days after" in out
    code, _, err = run_cli("classify", path, "--as-of", "2030-01-01", "-o", tmp_path / "o.csv")
    assert code == 0 and "  warning: as_of 2030-01-01" in err
    assert engine.prepare(path).report.warnings == []  # the default as_of never warns
    (tmp_path / "p.yaml").write_text("name: t\ndata:\n  transactions: tx.csv\n  as_of: 2030-01-01\nclassifiers:\n"
                                     "  adc: {}\nfallback: {action: none, channel: none, owner: x}\n")
    code, _, err = run_cli("run", tmp_path / "p.yaml")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "t" / "summary.json").read_text())
    assert summary["input"]["warnings"][0].startswith("as_of 2030-01-01 is 2,190 days after")
