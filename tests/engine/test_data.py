"""engine.data: formats, the column mapping, amount from quantity x unit_price, customer tables, clear errors."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
import pytest

import engine
from engine import DataError
from engine.data import as_date, parse_mapping, read_customers, read_transactions

# Five lines, two customers, a return, a line without a customer id.
TX = pl.DataFrame({
    "Cust": ["c1", "c1", "c2", "c1", None],
    "Invoice": ["i1", "i1", "i2", "C3", "i4"],
    "When": [dt.datetime(2011, 1, 3, 9, 30), dt.datetime(2011, 1, 3, 9, 30), dt.datetime(2011, 1, 5, 17, 0),
             dt.datetime(2011, 1, 7, 8, 0), dt.datetime(2011, 1, 8, 8, 0)],
    "Qty": [2, 1, 10, -1, 4],
    "Price": [1.25, 7.5, 0.3, 7.5, 2.0],
})
MAP = {"customer_id": "Cust", "order_id": "Invoice", "order_date": "When", "quantity": "Qty", "unit_price": "Price"}


def features(data, **kw):
    return engine.prepare(data, **kw).customers


def expected_tx_features():
    # c1: lines 2.50 + 7.50 - 7.50 = 2.50 net, orders i1 (C3 has only a negative line), returns 1 of 7.50
    # c2: 10 x 0.30 = 3.00; the row without a customer is not used but its date counts:
    # as_of = 2011-01-09, the day after the last dated row, so recency c1 = 6 (its last purchase; the
    # return of 2011-01-07 is its last activity), c2 = 4; tenure c1 = 6
    return [
        ("c1", 6, 1, 2.5, dt.date(2011, 1, 3), dt.date(2011, 1, 3), dt.date(2011, 1, 7), 6, 2.5, 1, 7.5),
        ("c2", 4, 1, 3.0, dt.date(2011, 1, 5), dt.date(2011, 1, 5), dt.date(2011, 1, 5), 4, 3.0, 0, 0.0),
    ]


def write(df: pl.DataFrame, path):
    suffix = path.suffix
    if suffix == ".csv":
        df.write_csv(path)
    elif suffix == ".parquet":
        df.write_parquet(path)
    elif suffix == ".ndjson":
        df.write_ndjson(path)
    elif suffix == ".xlsx":
        df.write_excel(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".ndjson", ".xlsx"])
def test_every_format_gives_the_same_features(tmp_path, suffix, registry):
    path = write(TX, tmp_path / f"tx{suffix}")
    got = features(path, mapping=MAP, registry=registry)
    assert got.select(got.columns[:11]).rows() == expected_tx_features()


def test_frames_and_pandas_frames(registry):
    assert features(TX, mapping=MAP, registry=registry).select(pl.nth(range(11))).rows() == expected_tx_features()
    assert features(TX.lazy(), mapping=MAP, registry=registry)["monetary"].to_list() == [2.5, 3.0]
    got = features(TX.to_pandas(), mapping=MAP, registry=registry)
    assert got["monetary"].to_list() == [2.5, 3.0]


def test_canonical_names_need_no_mapping(registry):
    df = pl.DataFrame({"customer_id": [1, 1], "order_date": [dt.date(2011, 1, 1), dt.date(2011, 1, 2)],
                       "amount": [1.5, 2.5]})
    got = features(df, registry=registry)
    assert got.select("customer_id", "frequency", "monetary").rows() == [(1, 2, 4.0)]


def test_amount_is_quantity_times_unit_price(registry):
    df = pl.DataFrame({"customer_id": ["a", "a", "b"], "order_date": ["2011-01-01"] * 3,
                       "quantity": [3, -2, 7], "unit_price": [0.1, 0.1, 1.11]})
    got = features(df, registry=registry)
    # a: 0.3 - 0.2 = 0.1 exactly (amounts are summed as integers); b: 7.77
    assert got.select("customer_id", "monetary", "returns", "returned_value").rows() == [
        ("a", 0.1, 1, 0.2), ("b", 7.77, 0, 0.0)]


def test_an_amount_column_wins_over_columns_named_quantity_and_price(registry):
    df = pl.DataFrame({"customer_id": ["a"], "order_date": ["2011-01-01"], "amount": [5.0],
                       "quantity": [3], "unit_price": [0.1]})
    got = engine.prepare(df, registry=registry)
    assert got.customers["monetary"].to_list() == [5.0]
    assert got.report.notes == ["(in-memory frame): amount from column 'amount'; the columns 'quantity' and "
                                "'unit_price' are not used for it"]
    # an amount mapped explicitly wins in the same way
    df2 = df.rename({"amount": "Total"})
    got = engine.prepare(df2, mapping={"amount": "Total"}, registry=registry)
    assert got.customers["monetary"].to_list() == [5.0]


@pytest.mark.parametrize("mapping, named", [
    # both mapped
    ({"amount": "Total", "quantity": "Qty", "unit_price": "Price"},
     "amount from column 'Total' (mapped), and quantity from column 'Qty' (mapped), unit_price from column "
     "'Price' (mapped)"),
    ({"amount": "Total", "quantity": "Qty"}, "amount from column 'Total' (mapped), and quantity from column 'Qty'"),
    # a column already named amount, quantity and unit_price mapped
    ({"quantity": "Qty", "unit_price": "Price"}, "amount from column 'amount' (named so), and quantity from column "
                                                 "'Qty' (mapped), unit_price from column 'Price' (mapped)"),
])
def test_amount_with_quantity_or_unit_price_is_two_sources(registry, mapping, named):
    # Issue 10, item 3: on UCI, amount mapped with quantity and unit_price silently gave 1,407,819.96 of revenue.
    df = pl.DataFrame({"customer_id": ["a"], "order_date": ["2011-01-01"], "Total": [5.0], "amount": [4.0],
                       "Qty": [3], "Price": [0.1]})
    msg = error(df, mapping=mapping, registry=registry)
    assert msg.startswith(f"(in-memory frame): two sources for the amount: {named}"), msg
    assert msg.endswith("(amount = quantity x unit_price); map amount, or quantity and unit_price, not both"), msg


def test_a_canonical_column_mapped_twice_names_both_columns(tmp_path, run_cli):
    path = tmp_path / "tx.csv"
    path.write_text("A,B,order_date,amount\nc1,x1,2011-01-01,3\n")
    code, _, err = run_cli("classify", path, "--map", "customer_id=A", "--map", "customer_id=B", "-o",
                           tmp_path / "out.csv")
    assert code == 2
    assert err.strip() == ("tierbook: error: --map customer_id=A and --map customer_id=B: customer_id is mapped "
                           "twice, to two columns; give it once")
    # the same column twice is no conflict
    code, _, err = run_cli("classify", path, "--map", "customer_id=A", "--map", "customer_id=A", "-o",
                           tmp_path / "out.csv")
    assert code == 0, err


def test_a_playbook_key_given_twice_is_refused_with_its_line(tmp_path):
    (tmp_path / "tx.csv").write_text("A,B,order_date,amount\nc1,x1,2011-01-01,3\n")
    path = tmp_path / "p.yaml"
    path.write_text("name: t\ndata:\n  transactions: tx.csv\n  map:\n    customer_id: A\n    customer_id: B\n"
                    "classifiers:\n  abc: {}\n")
    with pytest.raises(engine.PlaybookError) as info:
        engine.load_playbook(path)
    assert str(info.value) == f"{path}:6: YAML syntax: duplicate key 'customer_id' (first on line 5)"


def test_a_playbook_mapping_amount_and_quantity_is_refused_at_validation(tmp_path):
    (tmp_path / "tx.csv").write_text("A,order_date,Total,Qty,Price\nc1,2011-01-01,3,1,3\n")
    path = tmp_path / "p.yaml"
    path.write_text("name: t\ndata:\n  transactions: tx.csv\n  map:\n    customer_id: A\n    amount: Total\n"
                    "    quantity: Qty\n    unit_price: Price\nclassifiers:\n  abc: {}\n")
    with pytest.raises(engine.PlaybookError) as info:
        engine.load_playbook(path)
    assert "two sources for the amount: amount from column 'Total' (mapped), and quantity from column 'Qty'" \
        in str(info.value)


def test_without_order_id_one_order_per_customer_and_day(registry):
    df = pl.DataFrame({
        "customer_id": ["a", "a", "a", "a", "b"],
        "order_date": ["2011-01-01 09:00", "2011-01-01 17:00", "2011-01-02 10:00", "2011-01-03 10:00",
                       "2011-01-01 09:00"],
        "amount": [1.0, 2.0, 3.0, -1.0, 4.0],
    })
    got = features(df, registry=registry)
    # a: days 1 and 2 are orders, day 3 has only a return; b: one order
    assert got.select("customer_id", "frequency", "monetary", "avg_order_value").rows() == [
        ("a", 2, 5.0, 2.5), ("b", 1, 4.0, 4.0)]
    # with an order id, the two lines of day 1 are two orders
    with_ids = df.with_columns(order_id=pl.Series(["o1", "o2", "o3", "o4", "o5"]))
    assert features(with_ids, registry=registry)["frequency"].to_list() == [3, 1]


def test_text_dates_and_an_explicit_date_format(registry):
    df = pl.DataFrame({"customer_id": ["a", "a"], "order_date": ["03/02/2011", "28/02/2011"], "amount": [1.0, 1.0]})
    got = features(df, date_format="%d/%m/%Y", registry=registry)
    assert got.select("first_order", "last_order").row(0) == (dt.date(2011, 2, 3), dt.date(2011, 2, 28))


def test_csv_ids_keep_their_text(tmp_path, registry):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,order_date,amount\n007,2011-01-01,1\n7,2011-01-01,2\n")
    assert features(path, registry=registry)["customer_id"].to_list() == ["007", "7"]


# ---------------------------------------------------------------- bad input
def error(data, **kw) -> str:
    with pytest.raises(DataError) as info:
        engine.prepare(data, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_misspelt_mapped_column_names_the_closest(registry):
    msg = error(TX, mapping={**MAP, "customer_id": "Cst"}, registry=registry)
    assert "(in-memory frame): no column 'Cst' for customer_id (did you mean 'Cust'?)" in msg
    msg = error(TX, mapping={**MAP, "unit_price": "price"}, registry=registry)
    assert "no column 'price' for unit_price (did you mean 'Price'?)" in msg


def test_missing_canonical_column_names_the_closest(registry):
    df = pl.DataFrame({"customer_nr": [1], "order_date": ["2011-01-01"], "amount": [1.0]})
    msg = error(df, registry=registry)
    assert "no column for customer_id (did you mean 'customer_nr'?); map it with mapping={'customer_id': COLUMN}" in msg


def test_headers_written_another_way_are_taken_with_a_note(tmp_path, registry):
    # what spreadsheets and BI tools export: spaces, capitals, hyphens, no separator at all
    text = "Customer ID,ORDER-ID,OrderDate,Quantity,Unit Price\nc1,o1,2011-01-03,2,1.25\nc1,o2,2011-01-05,1,7.5\n"
    (tmp_path / "tx.csv").write_text(text)
    got = engine.prepare(tmp_path / "tx.csv", registry=registry)
    assert got.customers.select("customer_id", "frequency", "monetary").rows() == [("c1", 2, 10.0)]
    assert got.report.notes == [f"{tmp_path / 'tx.csv'}: columns taken by their headers: customer_id from "
                                "'Customer ID', order_id from 'ORDER-ID', order_date from 'OrderDate', quantity from "
                                "'Quantity', unit_price from 'Unit Price'"]
    # a name written exactly as the canonical one wins, silently, over one written another way
    both = pl.DataFrame({"Customer ID": ["x"], "customer_id": ["c1"], "order_date": ["2011-01-01"], "amount": [1.0]})
    got = engine.prepare(both, registry=registry)
    assert got.customers["customer_id"].to_list() == ["c1"] and got.report.notes == []
    # a mapping wins, and the mapped column is not taken for anything else
    got = engine.prepare(both, mapping={"customer_id": "Customer ID"}, registry=registry)
    assert got.customers["customer_id"].to_list() == ["x"] and got.report.notes == []


def test_two_headers_that_could_be_one_column_are_a_question(tmp_path, registry, run_cli):
    df = pl.DataFrame({"Customer ID": ["a"], "customer id": ["b"], "order_date": ["2011-01-01"], "amount": [1.0]})
    assert error(df, registry=registry) == (
        "(in-memory frame): columns 'Customer ID', 'customer id' could each be customer_id; map one with "
        "mapping={'customer_id': COLUMN}")
    df.write_csv(tmp_path / "tx.csv")
    code, out, err = run_cli("classify", str(tmp_path / "tx.csv"), "-o", str(tmp_path / "c.csv"))
    assert code == 2 and "could each be customer_id; map one with --map customer_id=COLUMN" in err
    assert not (tmp_path / "c.csv").exists()


def test_quantity_without_unit_price(registry):
    df = pl.DataFrame({"customer_id": [1], "order_date": ["2011-01-01"], "quantity": [1]})
    assert "no column for unit_price" in error(df, registry=registry)


def test_every_missing_canonical_column_is_named_at_once(registry):
    # Issue 10, item 17: one error per run, each naming one more missing column, made a new user guess three times.
    df = pl.DataFrame({"client": [1], "when": ["2011-01-01"], "total": [1.0]})
    assert error(df, registry=registry) == (
        "(in-memory frame): no column for customer_id, order_date, amount (or quantity and unit_price); map them "
        "with mapping={'customer_id': COLUMN, 'order_date': COLUMN, 'amount': COLUMN} (or mapping={'quantity': "
        "COLUMN, 'unit_price': COLUMN} instead of amount: amount = quantity x unit_price) (columns: client, when, "
        "total)")
    one = pl.DataFrame({"customer_id": [1], "order_date": ["2011-01-01"], "total": [1.0]})
    assert "no column for amount (or quantity and unit_price); map it with mapping={'amount': COLUMN} (or" in error(
        one, registry=registry)


def test_a_file_of_one_column_gets_a_delimiter_hint(tmp_path, registry):
    # a comma in the header (inside a name) keeps the comma, so the semicolons are not split
    path = tmp_path / "tx.csv"
    path.write_text('"customer_id";"order_date";"amount, EUR"\n1;2011-01-01;3\n')
    assert "is the delimiter not a comma? give it with delimiter)" in error(path, registry=registry)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".ndjson"])
def test_unparseable_date_names_the_first_bad_value_and_row(tmp_path, suffix, registry):
    df = pl.DataFrame({"customer_id": ["a", "b", "c", "d"],
                       "order_date": ["2011-01-01", "2011-01-02", "2011-02-30", "yesterday"],
                       "amount": ["1", "2", "3", "4"]})
    msg = error(write(df, tmp_path / f"tx{suffix}"), registry=registry)
    assert re.search(rf"tx{suffix}: column 'order_date' \(order_date\), row 3( \(line \d\))?: '2011-02-30' is not a date",
                     msg), msg
    if suffix == ".csv":
        assert "row 3 (line 4)" in msg  # the header is line 1


def test_thousands_commas_before_a_decimal_point(tmp_path, registry):
    # a US or UK spreadsheet's CSV: "1,234.50" (quoted); the commas can only be thousands separators there
    rows = [("a", "1,234.50", 1234.5), ("b", "-12,345.6", -12345.6), ("c", "1,234,567", 1234567.0),
            ("d", " 1,000. ", 1000.0), ("e", "999.5", 999.5)]
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,order_date,amount\n" + "".join(f'{c},2011-01-01,"{a}"\n' for c, a, _ in rows))
    got = engine.prepare(path, registry=registry).customers.sort("customer_id")
    assert got["monetary"].to_list() == [v for *_, v in rows]
    # where a comma could be either, or groups are not of three digits, nothing is guessed
    for bad, hint in (("1,234", "1.234 with a decimal comma, or 1234 with a comma between thousands?"),
                      ("1,23.5", ""), ("12,34,567.5", ""), ("1,234.5,6", ""), (",123.5", "")):
        path.write_text(f'customer_id,order_date,amount\na,2011-01-01,"{bad}"\n')
        msg = error(path, registry=registry)
        assert f"row 1 (line 2): '{bad}' is not a finite number" in msg and hint in msg, msg


@pytest.mark.parametrize("bad, shown", [("12,5", "'12,5'"), ("abc", "'abc'"), ("NaN", "'NaN'"), ("inf", "'inf'")])
def test_non_numeric_or_non_finite_amount(tmp_path, registry, bad, shown):
    path = tmp_path / "tx.csv"
    path.write_text(f'customer_id,order_date,amount\na,2011-01-01,1\nb,2011-01-01,"{bad}"\n')
    msg = error(path, registry=registry)
    assert f"column 'amount' (amount), row 2 (line 3): {shown} is not a finite number" in msg


def test_non_numeric_quantity_names_both_source_columns(registry):
    df = pl.DataFrame({"c": ["a"], "d": ["2011-01-01"], "q": ["2x"], "p": ["1.5"]})
    msg = error(df, mapping={"customer_id": "c", "order_date": "d", "quantity": "q", "unit_price": "p"},
                registry=registry)
    assert "column 'q x p' (amount), row 1: '2x x 1.5' is not a finite number" in msg


def test_wrong_column_types(registry):
    df = pl.DataFrame({"customer_id": [1], "order_date": [20110101], "amount": [1.0]})
    assert "column 'order_date' (order_date) has type Int64, expected dates" in error(df, registry=registry)
    df = pl.DataFrame({"customer_id": [1], "order_date": [dt.date(2011, 1, 1)], "amount": [True]})
    assert "column 'amount' (amount) has type Boolean, expected numbers" in error(df, registry=registry)


def test_empty_inputs(tmp_path, registry):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert error(empty, registry=registry) == f"{empty}: the file is empty"
    header = tmp_path / "header.csv"
    header.write_text("customer_id,order_date,amount\n")
    assert error(header, registry=registry) == f"{header}: no transactions (the file has a header but no rows)"
    frame = pl.DataFrame(schema={"customer_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64})
    assert "no transactions" in error(frame, registry=registry)


def test_nothing_usable(registry):
    df = pl.DataFrame({"customer_id": [None, None], "order_date": ["2011-01-01"] * 2, "amount": [1.0, 2.0]},
                      schema_overrides={"customer_id": pl.String})
    msg = error(df, registry=registry)
    assert msg == "(in-memory frame): no usable transactions (not used: 2 rows where customer_id is empty)"


def test_files_that_cannot_be_read(tmp_path, registry):
    assert error(tmp_path / "nope.csv", registry=registry) == f"{tmp_path / 'nope.csv'}: no such file"
    assert error(tmp_path, registry=registry) == f"{tmp_path}: is a directory, expected a data file"
    odd = tmp_path / "tx.json"
    odd.write_text("{}")
    assert "cannot tell the format from the suffix '.json'" in error(odd, registry=registry)
    assert "cannot read transactions from a list" in error([1, 2], registry=registry)


def test_excel_sheets(tmp_path, registry):
    import xlsxwriter

    path = tmp_path / "two.xlsx"
    with xlsxwriter.Workbook(path) as wb:
        for name, amount in (("Jan", 5), ("Feb", 7)):
            ws = wb.add_worksheet(name)
            ws.write_row(0, 0, ["customer_id", "order_date", "amount"])
            ws.write_row(1, 0, ["c1", "2011-01-05", amount])
    assert "the workbook has 2 sheets (Jan, Feb); choose one with sheet" in error(path, registry=registry)
    assert "no sheet 'Fbe' (did you mean 'Feb'?)" in error(path, sheet="Fbe", registry=registry)
    assert features(path, sheet="Feb", registry=registry)["monetary"].to_list() == [7.0]


# ------------------------------------------------------------ the mapping
def test_parse_mapping():
    assert parse_mapping(["customer_id=CustomerID", "amount = Total"]) == {"customer_id": "CustomerID",
                                                                           "amount": "Total"}
    assert parse_mapping({"order_date": "Day"}) == {"order_date": "Day"}
    with pytest.raises(DataError, match="expected canonical=source"):
        parse_mapping(["customer_id"])
    with pytest.raises(DataError, match="the source column name is empty"):
        parse_mapping(["customer_id="])
    with pytest.raises(DataError, match=r"'ammount' is not a canonical column \(did you mean 'amount'\?\)"):
        parse_mapping(["ammount=x"])


def test_read_transactions_is_lazy():
    tx = read_transactions(TX, MAP)
    assert isinstance(tx.frame, pl.LazyFrame)
    assert tx.has_order_id and tx.mapping["customer_id"] == "Cust"


# ---------------------------------------------------------- customer tables
def test_customer_table_from_a_file_and_an_id_column(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,region,signup\n007,north,2010-05-01\nb,south,2010-06-01\n")
    df = read_customers(path, "id")
    assert df.columns == ["customer_id", "region", "signup"]
    assert df["customer_id"].to_list() == ["007", "b"]
    assert df.schema["signup"] == pl.Date


@pytest.mark.parametrize(
    "text, message",
    [
        ("cust,region\na,x\n", r"no column 'customer_id' for customer_id.*choose it with customers_id=COLUMN"),
        ("customer_id,region\na,x\n,y\n", r"column 'customer_id', row 2: the customer id is empty"),
        ("customer_id,region\na,x\nb,y\na,z\n", r"row 3: customer id 'a' appears 2 times"),
        ("customer_id,monetary\na,1\n", r"column 'monetary' has the name of a feature"),
        ("customer_id,region\n", r"the customer table has no rows"),
    ],
)
def test_bad_customer_tables(tmp_path, text, message):
    path = tmp_path / "customers.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_customers(path, reserved=frozenset({"monetary"}))


def test_as_date():
    assert as_date(None) is None
    assert as_date("2011-12-10") == dt.date(2011, 12, 10)
    assert as_date(dt.datetime(2011, 12, 10, 5)) == dt.date(2011, 12, 10)
    with pytest.raises(DataError, match="'12/10/2011' is not a date in the form YYYY-MM-DD"):
        as_date("12/10/2011")
