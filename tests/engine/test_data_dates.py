"""engine.data: text dates whose day and month the value cannot tell apart (issue 10, item 1).

``12/01/2010`` is 1 December in the US and 12 January in Europe. tierbook never
guesses: the order is proven from the whole column (a first field above 12 can
only be a day, a second field above 12 only a day too), or the run stops and
asks for ``--date-format``.
"""

from __future__ import annotations

import csv
import datetime as dt

import polars as pl
import pytest

import engine
from engine import DataError
from tests.conftest import UCI_MAPPING


def features(data, **kw):
    return engine.prepare(data, **kw)


def error(data, **kw) -> str:
    with pytest.raises(DataError) as info:
        engine.prepare(data, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_csv(path, rows, header=("customer_id", "order_date", "amount")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_uci_written_month_first_is_refused_not_read_day_first(tmp_path, uci_frame, registry):
    # The first 20,000 UCI rows (2010-12-01 .. 2010-12-09): no day above 12, so no value tells the order.
    path = tmp_path / "us.csv"
    head = uci_frame.head(20_000)
    head.with_columns(pl.col("InvoiceDate").dt.strftime("%m/%d/%Y %H:%M")).write_csv(path)
    msg = error(path, mapping=UCI_MAPPING, registry=registry)
    assert msg == (f"{path}: column 'InvoiceDate' (order_date): '12/01/2010 08:26' at row 1 (line 2) can be "
                   f"day-first or month-first and no date in the column tells which (none has a day above 12); give "
                   f"the format with date_format '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'")
    # The format it suggests reads the real dates: every customer bought in those 9 days.
    got = features(path, mapping=UCI_MAPPING, date_format="%m/%d/%Y %H:%M", registry=registry)
    assert got.customers["last_order"].max() == dt.date(2010, 12, 9)
    assert got.customers["first_order"].min() == dt.date(2010, 12, 1)
    assert got.as_of == dt.date(2010, 12, 10)
    expected = head.filter(pl.col("CustomerID").is_not_null())["CustomerID"].n_unique()
    assert got.customers.height == expected == 559
    assert (got.customers["recency_days"] <= 9).all()


@pytest.mark.parametrize("fmt, order", [("%m/%d/%Y %H:%M", "month-first"), ("%d/%m/%Y %H:%M", "day-first"),
                                        ("%d.%m.%Y", "day-first"), ("%m-%d-%Y", "month-first")])
def test_the_whole_column_proves_the_order_and_the_run_says_which(tmp_path, uci_frame, registry, fmt, order):
    # 60,000 rows reach 2010-12-13 at row 26,733: the first date with a day above 12.
    head = uci_frame.head(60_000)
    path = tmp_path / "tx.csv"
    head.with_columns(pl.col("InvoiceDate").dt.strftime(fmt)).write_csv(path)
    got = features(path, mapping=UCI_MAPPING, registry=registry)
    want = features(head, mapping=UCI_MAPPING, registry=registry)
    cols = [pl.col("customer_id").cast(pl.String), "first_order", "last_order", "recency_days", "monetary"]
    assert got.customers.select(cols).equals(want.customers.select(cols))
    note = got.report.notes[0]
    assert f"column 'InvoiceDate' (order_date) read {order}" in note
    assert "row 26733 (line 26734)" in note
    assert any(line.strip().startswith("note:") and order in line for line in got.report.lines())


def small(tmp_path, dates, name="tx.csv"):
    rows = [(f"c{i % 3}", d, "10") for i, d in enumerate(dates)]
    return write_csv(tmp_path / name, rows)


@pytest.mark.parametrize("dates, first, last", [
    # a day above 12 anywhere in the column, even on the last row, proves the order for the first rows
    (["01/02/2011", "03/04/2011", "05/06/2011", "13/06/2011"], dt.date(2011, 2, 1), dt.date(2011, 6, 13)),
    (["01/02/2011", "03/04/2011", "05/06/2011", "06/13/2011"], dt.date(2011, 1, 2), dt.date(2011, 6, 13)),
    (["1.2.2011", "3.4.2011 10:00", "25.6.2011"], dt.date(2011, 2, 1), dt.date(2011, 6, 25)),
    (["1-2-2011", "3-4-2011", "6-25-2011 8:05:03"], dt.date(2011, 1, 2), dt.date(2011, 6, 25)),
    # every day equals its month: both orders read the same dates
    (["01/01/2011", "02/02/2011", "12/12/2011"], dt.date(2011, 1, 1), dt.date(2011, 12, 12)),
])
def test_small_files_in_either_order(tmp_path, registry, dates, first, last):
    got = features(small(tmp_path, dates), registry=registry).customers
    assert (got["first_order"].min(), got["last_order"].max()) == (first, last)


def test_an_ambiguous_column_is_refused_in_every_form(tmp_path, registry):
    for dates in (["01/02/2011", "03/04/2011"], ["01.02.2011 10:00"], ["1-2-2011"]):
        msg = error(small(tmp_path, dates), registry=registry)
        assert "can be day-first or month-first and no date in the column tells which" in msg, msg
        assert f"'{dates[0]}' at row 1 (line 2)" in msg


def test_both_orders_proven_is_an_error(tmp_path, registry):
    msg = error(small(tmp_path, ["13/01/2011", "01/02/2011", "01/13/2011"]), registry=registry)
    assert "'13/01/2011' at row 1 (line 2)" in msg and "'01/13/2011' at row 3 (line 4)" in msg
    assert "no one order reads them all" in msg


def test_two_digit_years_are_never_guessed(tmp_path, registry):
    msg = error(small(tmp_path, ["01/02/11", "13/02/11"]), registry=registry)
    assert "'01/02/11' at row 1 (line 2) has a two-digit year" in msg
    assert "date_format '%d/%m/%y'" in msg
    assert "'%d/%m/%y' or '%m/%d/%y'" in error(small(tmp_path, ["01/02/11"]), registry=registry)


def test_an_explicit_format_is_used_as_given(tmp_path, registry):
    path = small(tmp_path, ["01/02/2011", "03/04/2011"])
    got = features(path, date_format="%m/%d/%Y", registry=registry)
    assert got.customers["first_order"].min() == dt.date(2011, 1, 2) and got.report.notes == []


def test_iso_dates_and_other_classes_are_untouched(tmp_path, registry):
    got = features(small(tmp_path, ["2011-01-02", "2011-02-01 10:00", "2011/03/04"]), registry=registry)
    assert got.customers["last_order"].max() == dt.date(2011, 3, 4) and got.report.notes == []


def test_a_value_of_another_form_after_slash_dates_is_a_bad_date(tmp_path, registry):
    msg = error(small(tmp_path, ["13/01/2011", "2011-01-02"]), registry=registry)
    assert "row 2 (line 3): '2011-01-02' is not a date" in msg


def test_the_bad_date_hint_names_the_format_that_reads_it(tmp_path, registry):
    # Day-first given, US data: the first value with a second field above 12 fails, and the hint says what reads it.
    path = small(tmp_path, ["01/02/2011 08:26", "12/13/2011 08:26"])
    msg = error(path, date_format="%d/%m/%Y %H:%M", registry=registry)
    assert msg.endswith("'12/13/2011 08:26' is not a date (it does not fit date_format '%d/%m/%Y %H:%M'; "
                        "'%m/%d/%Y %H:%M' would read it)"), msg
    # A time the format leaves out
    msg = error(small(tmp_path, ["01/02/2011 08:26"]), date_format="%d/%m/%Y", registry=registry)
    assert "'%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M' would read it" in msg, msg


def xlsx(path, rows):
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Sales")
    stamp = book.add_format({"num_format": "mm/dd/yyyy hh:mm"})
    ws.write_row(0, 0, ["customer_id", "order_date", "amount"])
    for r, (cid, when, amount) in enumerate(rows, start=1):
        ws.write_string(r, 0, cid)
        if isinstance(when, dt.datetime):
            ws.write_datetime(r, 1, when, stamp)
        else:
            ws.write_string(r, 1, when)
        ws.write_number(r, 2, amount)
    book.close()
    return path


def test_xlsx_text_dates_are_decided_like_csv(tmp_path, registry):
    msg = error(xlsx(tmp_path / "us.xlsx", [("c1", "12/01/2010 08:26", 1.0), ("c2", "12/09/2010 10:00", 2.0)]),
                registry=registry)
    assert "'12/01/2010 08:26' at row 1 (sheet 'Sales', spreadsheet row 2) can be day-first or month-first" in msg
    got = features(xlsx(tmp_path / "us2.xlsx", [("c1", "12/01/2010 08:26", 1.0), ("c2", "12/13/2010 10:00", 2.0)]),
                   registry=registry)
    assert got.customers["first_order"].to_list() == [dt.date(2010, 12, 1), dt.date(2010, 12, 13)]
    assert "read month-first (%m/%d/%Y %H:%M): '12/13/2010 10:00' at row 2 (sheet 'Sales'" in got.report.notes[0]


def test_xlsx_real_dates_need_no_decision(tmp_path, registry):
    rows = [("c1", dt.datetime(2010, 12, 1, 8, 26), 1.0), ("c2", dt.datetime(2010, 1, 12), 2.0)]
    got = features(xlsx(tmp_path / "real.xlsx", rows), registry=registry)
    assert got.customers["first_order"].to_list() == [dt.date(2010, 12, 1), dt.date(2010, 1, 12)]
    assert got.report.notes == []


def test_rejects_use_the_decided_order(tmp_path, run_cli):
    path = write_csv(tmp_path / "tx.csv", [("c1", "01/02/2011", "1"), ("", "13/02/2011", "2"), ("c2", "", "3")])
    code, _, err = run_cli("classify", path, "-o", tmp_path / "out.csv", "--rejects", tmp_path / "rejects.csv")
    assert code == 0, err
    assert "note: " in err and "read day-first (%d/%m/%Y)" in err
    assert pl.read_csv(tmp_path / "rejects.csv")["row"].to_list() == [2, 3]
    assert pl.read_csv(tmp_path / "out.csv")["first_order"].to_list() == ["2011-02-01"]


def test_run_keeps_the_note_in_the_summary(tmp_path, run_cli):
    import json

    write_csv(tmp_path / "tx.csv", [("c1", "12/01/2010 08:26", "10"), ("c2", "12/13/2010 10:05", "5")])
    (tmp_path / "p.yaml").write_text("name: t\ndata:\n  transactions: tx.csv\nclassifiers:\n  abc: {}\n"
                                     "fallback: {action: none, channel: none, owner: x}\n")
    code, _, err = run_cli("run", tmp_path / "p.yaml")
    assert code == 0, err
    notes = json.loads((tmp_path / "out" / "t" / "summary.json").read_text())["input"]["notes"]
    assert len(notes) == 1 and "read month-first (%m/%d/%Y %H:%M): '12/13/2010 10:05' at row 2" in notes[0]
    assert notes[0] in err
