"""``tierbook classify`` / ``describe`` / ``demo``: outputs, the report, and one clear line for every user error."""

from __future__ import annotations

import json

import polars as pl
import pytest

from engine.cli.progress import step

CSV = """Cust,Invoice,When,Qty,Price
c1,i1,2011-01-03 09:30,2,1.25
c1,i1,2011-01-03 09:30,1,7.5
c2,i2,2011-01-05 17:00,10,0.3
c1,C3,2011-01-07 08:00,-1,7.5
,i4,2011-01-08 08:00,4,2
c3,i5,2011-01-08 10:00,100,0.75
"""
MAP = ["--map", "customer_id=Cust", "--map", "order_id=Invoice", "--map", "order_date=When",
       "--map", "quantity=Qty", "--map", "unit_price=Price"]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text(CSV)
    return path


def one_error_line(code, out, err):
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tierbook: error: ")
    return lines[0].removeprefix("tierbook: error: ")


def test_classify_writes_one_row_per_customer(run_cli, data, tmp_path):
    out = tmp_path / "customers.parquet"
    code, stdout, err = run_cli("classify", data, *MAP, "-o", out)
    assert code == 0, err
    df = pl.read_parquet(out)
    assert df["customer_id"].to_list() == ["c1", "c2", "c3"]
    # c1: 2.50 + 7.50 - 7.50; c2: 3.00; c3: 75.00 -> c3 75/80.5 = .93 above a, but the top customer is A; c2 78/80.5 = .97 C; c1 C
    assert df["monetary"].to_list() == [2.5, 3.0, 75.0]
    assert df["abc"].cast(pl.String).to_list() == ["C", "C", "A"]
    for col in ("recency_days", "frequency", "tenure_days", "avg_order_value", "returns", "adc", "rfm_r", "rfm_f",
                "rfm_m", "rfm_code", "rfm_segment", "value_tier"):
        assert col in df.columns
    assert f"{data}: 6 rows, 5 used" in err
    assert "  not used: 1 rows where customer_id is empty" in err
    assert "customers: 3 (3 with transactions); net revenue 80.50" in err
    assert "as_of: 2011-01-09" in err
    assert f"wrote 3 customers to {out}" in err


@pytest.mark.parametrize("suffix", [".csv", ".json", ".ndjson"])
def test_output_format_by_suffix(run_cli, data, tmp_path, suffix):
    out = tmp_path / f"customers{suffix}"
    code, _, err = run_cli("classify", data, *MAP, "-c", "abc", "-o", out)
    assert code == 0, err
    text = out.read_text()
    if suffix == ".csv":
        assert pl.read_csv(out)["abc"].to_list() == ["C", "C", "A"]
    elif suffix == ".json":
        assert [r["abc"] for r in json.loads(text)] == ["C", "C", "A"]
    else:
        assert [json.loads(line)["abc"] for line in text.splitlines()] == ["C", "C", "A"]


def test_set_classifier_as_of_and_customers(run_cli, data, tmp_path):
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,region\nc1,north\nc9,east\n")
    out = tmp_path / "out.parquet"
    code, _, err = run_cli("classify", data, *MAP, "--customers", customers, "--as-of", "2011-01-06",
                           "-c", "abc", "-c", "adc", "--set", "abc.a=0.5", "--set", "abc.b=0.99", "-o", out)
    assert code == 0, err
    df = pl.read_parquet(out)
    assert "rfm_code" not in df.columns
    # before 2011-01-06: c1 net 10.00 (i1), c2 3.00; c3 has no usable row; c9 is a prospect
    rows = df.select("customer_id", "region", "monetary", pl.col("abc").cast(pl.String),
                     pl.col("adc").cast(pl.String)).rows()
    # total 13: c1 10/13 = .77 > a = .5, but the top customer is A; c2 13/13 = 1 > .99 -> C
    assert rows == [("c1", "north", 10.0, "A", "new"), ("c2", None, 3.0, "C", "new"),
                    ("c9", "east", 0.0, "C", "prospect")]
    assert "  not used: 2 rows where order_date is on or after as_of" in err  # the null-id row counts there
    assert "1 prospects from the customer table" in err


def test_rejects_file(run_cli, data, tmp_path):
    rejects = tmp_path / "rejects.csv"
    code, _, err = run_cli("classify", data, *MAP, "--as-of", "2011-01-08", "--rejects", rejects,
                           "-o", tmp_path / "out.csv")
    assert code == 0, err
    df = pl.read_csv(rejects, infer_schema=False)
    assert df.columns == ["row", "Cust", "Invoice", "When", "Qty", "Price", "reason"]
    assert df.select("row", "Invoice", "reason").rows() == [
        ("5", "i4", "customer_id is empty"), ("6", "i5", "order_date is on or after as_of")]


def test_describe_prints_class_sizes_and_revenue_shares(run_cli, data):
    code, out, err = run_cli("describe", data, *MAP, "-c", "abc", "-c", "adc")
    assert code == 0, err
    lines = out.splitlines()
    block = lines[lines.index("abc"):]
    assert block[1].split() == ["class", "customers", "share", "revenue", "rev", "share"]
    assert block[2].split() == ["A", "1", "33.3%", "75.00", "93.2%"]
    assert block[3].split() == ["B", "0", "0.0%", "0.00", "0.0%"]
    assert block[4].split() == ["C", "2", "66.7%", "5.50", "6.8%"]
    assert "adc" in lines
    assert "customers: 3 (3 with transactions); net revenue 80.50" in out


def test_demo(run_cli):
    code, out, err = run_cli("demo")
    assert code == 0, err
    assert "UCI Online Retail" in out
    for heading in ("abc", "adc", "rfm: rfm_segment", "rfm: value_tier"):
        assert heading in out.splitlines()


# ------------------------------------------------------------------ user errors
@pytest.mark.parametrize(
    "content, mapping, expected",
    [
        (CSV, {"customer_id": "Cst"}, "no column 'Cst' for customer_id (did you mean 'Cust'?)"),
        (CSV, {"order_date": "Whne"}, "no column 'Whne' for order_date (did you mean 'When'?)"),
        (CSV.replace("2011-01-05 17:00", "5th of January"), {},
         "column 'When' (order_date), row 3 (line 4): '5th of January' is not a date"),
        (CSV.replace(",10,0.3", ",ten,0.3"), {},
         "column 'Qty x Price' (amount), row 3 (line 4): 'ten x 0.3' is not a finite number"),
        ("", {}, "the file is empty"),
        ("Cust,Invoice,When,Qty,Price\n", {}, "no transactions (the file has a header but no rows)"),
    ],
)
def test_bad_data_is_one_line_naming_file_column_row_value(run_cli, tmp_path, content, mapping, expected):
    path = tmp_path / "sales.csv"
    path.write_text(content)
    full = {"customer_id": "Cust", "order_id": "Invoice", "order_date": "When", "quantity": "Qty",
            "unit_price": "Price", **mapping}
    args = [x for k, v in full.items() for x in ("--map", f"{k}={v}")]
    line = one_error_line(*run_cli("classify", path, *args, "-o", tmp_path / "out.csv"))
    assert line.startswith(f"{path}: ")
    assert expected in line
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--as-of", "9/1/2011"], "--as-of: '9/1/2011' is not a date in the form YYYY-MM-DD"),
        (["--set", "abc.a=2"], "abc.a: '2' is above the maximum 0.99 of 'a'"),
        (["--set", "abc.a=lots"], "'lots' is not a number for 'a'"),
        (["--set", "abc.aa=0.5"], "abc: unknown parameter 'aa' (did you mean 'a'?)"),
        (["--set", "adc.active_days=400"], "active_days (400) must be below churn_days (365)"),
        (["--set", "abc.a"], "--set abc.a: expected classifier.param=value"),
        (["--set", "abcc.a=0.5"], "parameters given for unknown classifier 'abcc' (did you mean 'abc'?)"),
        (["-c", "rfn"], "unknown classifier 'rfn' (did you mean 'rfm'?)"),
        (["--set", "abc.metric=monetry"], "no customer column 'monetry' (did you mean 'monetary'?)"),
        (["--map", "custmer_id=Cust"], "'custmer_id' is not a canonical column (did you mean 'customer_id'?)"),
        (["--customers", "nowhere.csv"], "nowhere.csv: no such file"),
    ],
)
def test_bad_options_are_one_line(run_cli, data, tmp_path, args, expected):
    line = one_error_line(*run_cli("classify", data, *MAP, *args, "-o", tmp_path / "out.csv"))
    assert expected in line


def test_bad_output_suffix_fails_before_reading(run_cli, tmp_path):
    line = one_error_line(*run_cli("classify", tmp_path / "missing.csv", "-o", tmp_path / "out.xls"))
    assert "unknown output format '.xls'" in line


def test_missing_file(run_cli, tmp_path):
    line = one_error_line(*run_cli("describe", tmp_path / "missing.csv"))
    assert line == f"{tmp_path / 'missing.csv'}: no such file"


def test_traceback_flag_shows_the_exception(run_cli, tmp_path):
    from engine import DataError

    with pytest.raises(DataError, match="no such file"):
        run_cli("--traceback", "describe", tmp_path / "missing.csv")


def test_no_command_prints_help(run_cli):
    code, out, _ = run_cli()
    assert code == 2 and "classify" in out


def test_progress_only_on_a_terminal(capsys):
    with step("reading x", enabled=True):
        pass
    err = capsys.readouterr().err
    assert err.startswith("reading x ...") and err.rstrip().endswith(" s")
    with step("reading x"):  # stderr is not a terminal under pytest
        pass
    assert capsys.readouterr().err == ""


def test_outputs_may_not_replace_an_input(run_cli, data, tmp_path):
    before = data.read_text()
    line = one_error_line(*run_cli("classify", data, *MAP, "-o", data))
    assert line == f"-o {data}: is the transactions file; writing there would replace the input"
    line = one_error_line(*run_cli("describe", data, *MAP, "--rejects", data))
    assert "--rejects" in line and "is the transactions file" in line
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id\nc1\n")
    line = one_error_line(*run_cli("classify", data, *MAP, "--customers", customers, "-o", customers))
    assert "is the customer table file" in line
    line = one_error_line(*run_cli("classify", data, *MAP, "--rejects", tmp_path / "x.csv", "-o", tmp_path / "x.csv"))
    assert "give two different files" in line
    assert data.read_text() == before and customers.read_text() == "customer_id\nc1\n"
